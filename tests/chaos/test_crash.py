"""At most once under crashes: a tool executor dies at each point of a call, and is replaced.

The payment tool writes its own sink (tests/support/crash_tools.py), independent of the ledger, so
these tests count real effects. The tool's lease is 2 s and the ack wait 2 s, so a call
whose executor died comes back within seconds.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from nats.js.api import ConsumerConfig

from actors import Ledger, RigConfig
from actors.testing import Deployment, eventually
from protocols import ToolCall, ToolResult, decode_as, encode
from tests.support.crash_tools import CrashTools, payments

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

TOOLS = "tests.support.crash_tools:CrashTools"
DRAIN_S = RigConfig().drain_timeout  # how long a stopping process drains (the crash tools fit)
LONGEST_LEASE_S = max(t.spec.lease for t in CrashTools.tools.values())
ARGS = {"account": "acct-1", "amount": 12.5}


async def reports(rig: Deployment, count: int, *, timeout: float | None = None) -> list[ToolResult]:
    """The executor's reports to the supervisor (no supervisor runs: the test reads them),
    within a redelivery and the longest lease of the crash tools, unless `timeout`."""
    timeout = timeout or rig.within(rig.ack_wait, LONGEST_LEASE_S)
    js = rig.nc.jetstream()
    sub = await js.pull_subscribe_bind("probe", stream=rig.names.work_stream)
    found: list[ToolResult] = []
    async with asyncio.timeout(timeout):
        while len(found) < count:
            try:
                msgs = await sub.fetch(count - len(found), timeout=5)
            except TimeoutError:
                continue
            for msg in msgs:
                found.append(decode_as(ToolResult, msg.data)[0])
                await msg.ack()
    return found


async def probe(rig: Deployment) -> None:
    await rig.nc.jetstream().add_consumer(
        rig.names.work_stream,
        ConsumerConfig(durable_name="probe", filter_subject=rig.names.supervisor_all),
    )


async def call(
    rig: Deployment, step: int = 1, *, msg_id: str | None = None, tool: str = "pay"
) -> None:
    message = ToolCall(job_id="job-1", step=step, tool=tool, args=ARGS)
    await rig.nc.jetstream().publish(
        rig.names.tool(tool),
        encode(message),
        headers={"Nats-Msg-Id": msg_id or f"call-{step}"},
    )


async def ledger_state(rig: Deployment, key: str) -> Any:
    ledger = await Ledger.open(rig.home / "ledger.sqlite3", owner="test")
    try:
        record = await ledger.get(key)
    finally:
        await ledger.close()
    return record.state if record else None


@pytest.mark.parametrize(
    ("point", "ok", "ledger", "effects"),
    [
        # Died before claiming: nothing happened; the redelivery runs the call once.
        ("before_claim", True, "succeeded", 1),
        # Died holding the claim, before the effect: the outcome cannot be known from
        # here, so the call ends `effect_unknown` and is never run blindly.
        ("after_claim", False, "unknown", 0),
        # Died after the effect, before recording it: `unknown`, with exactly one effect.
        ("after_effect", False, "unknown", 1),
        # Died after recording, before reporting: the redelivery answers from the ledger.
        ("after_record", True, "succeeded", 1),
        # Died after the ack: the report was out already; nothing comes back.
        ("after_ack", True, "succeeded", 1),
    ],
)
async def test_crash_matrix(
    rig: Deployment, point: str, ok: bool, ledger: str, effects: int
) -> None:
    """An executor killed (os._exit) at each point of a call: the documented outcome."""
    rig.extra_env.update({"RIG_CRASH_AT": point, "RIG_CRASH_MARKER": str(rig.home / "crashed")})
    [doomed] = await rig.spawn(TOOLS)
    await probe(rig)
    await call(rig)
    assert await asyncio.wait_for(doomed.wait(), rig.within()) == 137
    assert (rig.home / "crashed").read_text() == point

    rig.extra_env.pop("RIG_CRASH_AT")
    await rig.spawn(TOOLS)
    [result] = await reports(rig, 1)
    assert result.ok is ok, result.error
    if not ok:
        assert result.error is not None and result.error["code"] == "effect_unknown"
    assert await ledger_state(rig, result.key) == ledger
    assert len(payments(rig.home)) == effects


@pytest.mark.parametrize(
    ("point", "effects"),
    [
        # Died before the effect: the sink has no payment under the key, so it runs again.
        ("after_claim", 1),
        # Died after the effect: the sink has it; the call is recorded as succeeded.
        ("after_effect", 1),
    ],
)
async def test_reconcile_settles_an_unknown_call(rig: Deployment, point: str, effects: int) -> None:
    """A tool that can ask the outside world turns `unknown` into the truth, paying once."""
    rig.extra_env.update({"RIG_CRASH_AT": point, "RIG_CRASH_MARKER": str(rig.home / "crashed")})
    [doomed] = await rig.spawn(TOOLS)
    await probe(rig)
    await call(rig, tool="pay_reconciled")
    assert await asyncio.wait_for(doomed.wait(), rig.within()) == 137
    rig.extra_env.pop("RIG_CRASH_AT")
    await rig.spawn(TOOLS)
    [result] = await reports(rig, 1)
    assert result.ok, result.error
    assert result.result == {"account": "acct-1", "amount": 12.5, "paid": True}
    assert await ledger_state(rig, result.key) == "succeeded"
    assert len(payments(rig.home)) == effects


async def test_concurrent_duplicates_pay_once(rig: Deployment) -> None:
    """Eight executor processes get the same call at once: one payment, eight equal answers."""
    await rig.spawn(*[TOOLS] * 8)
    await probe(rig)
    await asyncio.gather(*(call(rig, step) for step in range(1, 9)))
    results = await reports(rig, 8)
    assert sorted(r.step for r in results) == list(range(1, 9))
    assert all(r.ok for r in results)
    assert len({str(r.result) for r in results}) == 1
    assert sorted(r.ledger for r in results) == ["hit"] * 7 + ["miss"]
    assert len(payments(rig.home)) == 1


async def test_a_stale_executor_changes_nothing(rig: Deployment) -> None:
    """Frozen after the effect past its lease, an executor's late record is fenced off.

    A second executor finds the lease run out, reconciles (the payment is there) and
    finishes the call without paying again; when the first wakes up, its completion is
    refused (the record moved on), its report is a duplicate, and the ledger and the
    payments stay as they were.
    """
    rig.extra_env.update(
        {"RIG_PAUSE_AT": "after_effect", "RIG_CRASH_MARKER": str(rig.home / "paused")}
    )
    [stale] = await rig.spawn(TOOLS)
    await probe(rig)
    await call(rig, tool="pay_reconciled")
    await eventually(lambda: asyncio.to_thread(_stopped, stale.pid), message="executor frozen")
    assert len(payments(rig.home)) == 1

    rig.extra_env.pop("RIG_PAUSE_AT")
    await rig.spawn(TOOLS)
    [result] = await reports(rig, 1)
    assert result.ok and result.result == {"account": "acct-1", "amount": 12.5, "paid": True}
    assert await ledger_state(rig, result.key) == "succeeded"

    js = rig.nc.jetstream()
    before = (await js.stream_info(rig.names.work_stream)).state.last_seq
    stale.send_signal(signal.SIGCONT)
    log = rig.home / f"{TOOLS.replace(':', '.')}.log"
    await eventually(
        lambda: asyncio.to_thread(lambda: "ledger.fenced" in log.read_text()),
        message="the stale executor tried to record and was fenced off",
    )
    # A graceful stop lets its handler finish: the late report is sent before it exits.
    stale.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(stale.wait(), rig.within(DRAIN_S)) == 0
    assert await ledger_state(rig, result.key) == "succeeded"
    assert len(payments(rig.home)) == 1
    after = (await js.stream_info(rig.names.work_stream)).state
    assert (after.last_seq, after.messages) == (before, 0)  # the late report was a duplicate


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


async def test_an_executor_frozen_before_the_effect_does_not_act_on_its_old_claim(
    rig: Deployment,
) -> None:
    """Frozen after claiming, before paying, past its lease: another executor finds the
    outcome unknown, reconciles (nothing paid), pays under a new epoch. The first, woken,
    sees its claim is no longer its own and does not pay: one payment, not two."""
    rig.extra_env.update(
        {"RIG_PAUSE_AT": "after_claim", "RIG_CRASH_MARKER": str(rig.home / "paused")}
    )
    [stale] = await rig.spawn(TOOLS)
    await probe(rig)
    await call(rig, tool="pay_reconciled")
    await eventually(lambda: asyncio.to_thread(_stopped, stale.pid), message="executor frozen")
    assert payments(rig.home) == []

    rig.extra_env.pop("RIG_PAUSE_AT")
    await rig.spawn(TOOLS)
    [result] = await reports(rig, 1)
    assert result.ok and len(payments(rig.home)) == 1

    stale.send_signal(signal.SIGCONT)
    log = rig.home / f"{TOOLS.replace(':', '.')}.log"
    await eventually(
        lambda: asyncio.to_thread(lambda: "ledger.fenced_before_effect" in log.read_text()),
        message="the woken executor saw its claim was taken over",
    )
    stale.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(stale.wait(), rig.within(DRAIN_S)) == 0
    assert len(payments(rig.home)) == 1
    assert await ledger_state(rig, result.key) == "succeeded"


async def test_a_claim_answered_after_its_lease_is_asked_again_not_dropped(
    rig: Deployment,
) -> None:
    """A claim that comes back after its lease (a slow election; the process alive, its
    in-progress acks holding the message, so no redelivery will come): the executor does
    not act on it, nor drop the call with it. It releases the claim and asks again; the
    call is paid once and reported."""
    tools = "tests.support.crash_tools:SlowClaimTools"
    await rig.spawn(tools)
    await probe(rig)
    await call(rig, tool="pay_reconciled")
    [result] = await reports(rig, 1)
    assert result.ok and len(payments(rig.home)) == 1
    assert await ledger_state(rig, result.key) == "succeeded"
    log = rig.home / f"{tools.replace(':', '.')}.log"
    assert "ledger.fenced_before_effect" in await asyncio.to_thread(log.read_text)


async def test_a_stopping_executor_starts_no_new_call(rig: Deployment) -> None:
    """SIGTERM while two 1-s calls run and four more wait: the two finish, no other starts
    in this process (it stops pulling before it drains), and the four are left for
    another executor, which runs each once."""
    rig.extra_env["RIG_CONCURRENCY"] = "2"
    [first] = await rig.spawn("tests.support.crash_tools:SlowTools")
    del rig.extra_env["RIG_CONCURRENCY"]
    await probe(rig)
    js = rig.nc.jetstream()
    for step in range(1, 7):
        message = ToolCall(job_id="job-1", step=step, tool="slow", args={"n": step})
        await js.publish(
            rig.names.tool("slow"), encode(message), headers={"Nats-Msg-Id": f"slow-{step}"}
        )
    await eventually(lambda: asyncio.to_thread(lambda: len(payments(rig.home)) >= 2))
    first.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(first.wait(), rig.within(DRAIN_S)) == 0
    assert len(payments(rig.home)) == 2  # only what was running when told to stop
    await rig.spawn("tests.support.crash_tools:SlowTools")
    found = await reports(rig, 6)
    assert sorted(r.step for r in found) == [1, 2, 3, 4, 5, 6]
    assert len(payments(rig.home)) == 6
