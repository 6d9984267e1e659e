"""Nothing stuck, nothing silent: every job ends, or a person is told why it waits.

Real processes on a real nats-server, at short timings (ack wait 1 s, three deliveries
before a message is dead-lettered) so that what takes minutes in production takes
seconds here.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from actors.deploy.up import STOP_GRACE_S
from actors.testing import Deployment, eventually
from actors.testing.harness import SPAWN_S
from protocols import Event
from tests.integration.test_cli import rig_cli
from tests.integration.test_supervision import journal_until
from tests.support.crash_tools import payments
from tests.support.stuck import SlowPay

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

CRASHY = (
    "tests.support.stuck:Crashy",
    "tests.support.stuck:CrashyTools",
    "tests.support.stuck:CrashyChecks",
)
LEASE_S = SlowPay.tools["slow_pay"].spec.lease


MAX_DELIVER = 3


def short_timings(rig: Deployment) -> None:
    rig.extra_env.update(RIG_MAX_DELIVER=str(MAX_DELIVER), RIG_ACK_WAIT="1")


async def announced(rig: Deployment, count: int) -> None:
    """Wait until `count` actors (any pids) announced themselves."""
    sub = await rig.nc.subscribe(rig.names.actor_ready)
    try:
        async with asyncio.timeout(60):
            for _ in range(count):
                await sub.next_msg(timeout=60)
    finally:
        await sub.unsubscribe()


def parked(events: list[Event]) -> Event:
    [status] = [e for e in events if e.type == "status"][-1:]
    assert status.data["status"] == "waiting_human"
    return status


async def test_a_call_waits_out_a_frozen_executors_lease_and_reconciles(
    rig: Deployment,
) -> None:
    """A payment whose executor froze (SIGSTOP) after paying, with a lease (8 s) longer than
    its three deliveries at a 1 s ack wait could span, ends `succeeded` by reconcile: the
    repeat holds its message until the lease ends instead of spending deliveries, and
    the frozen executor, woken, changes nothing."""
    short_timings(rig)
    await rig.spawn("actors:Supervisor", "tests.support.stuck:Payer")
    rig.extra_env.update(RIG_PAUSE_AT="after_effect", RIG_CRASH_MARKER=str(rig.home / "froze"))
    [frozen] = await rig.spawn("tests.support.stuck:SlowPay")
    del rig.extra_env["RIG_PAUSE_AT"], rig.extra_env["RIG_CRASH_MARKER"]
    job = await rig.client.submit("payer", {"account": "acct-7", "amount": 5.0})
    await eventually(lambda: _exists(rig.home / "froze"), message="the executor froze")
    await rig.spawn("tests.support.stuck:SlowPay")
    info = await rig.client.wait(job.job_id, timeout=rig.within(rig.ack_wait, LEASE_S))
    assert info.status == "succeeded", info
    frozen.send_signal(signal.SIGCONT)
    assert [(row[0], row[3]) for row in payments(rig.home)] == [(job.job_id, 5.0)]
    code, out, _ = await rig_cli(rig, "dlq", "ls", "--json")
    assert code == 0 and json.loads(out) == []
    [result] = [e async for e in rig.client.events(job.job_id) if e.type == "tool_result"]
    assert result.data["ok"] and result.data["ledger"] == "hit"  # settled by reconcile


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_an_unknown_effect_without_reconcile_tells_a_person_everywhere(
    rig: Deployment,
) -> None:
    """A SIGKILL after paying, on a tool without reconcile: the repeat sees the holder's
    process is gone (same host) and does not wait out the lease; the job parks, and
    `rig status`, `rig watch` and `rig inbox` each say why, with no replay by hand."""
    short_timings(rig)
    await rig.spawn("actors:Supervisor", "tests.support.stuck:Payer")
    rig.extra_env.update(RIG_CRASH_AT="after_effect", RIG_CRASH_MARKER=str(rig.home / "died"))
    [doomed] = await rig.spawn("tests.support.stuck:SlowPay")
    del rig.extra_env["RIG_CRASH_AT"], rig.extra_env["RIG_CRASH_MARKER"]
    job = await rig.client.submit("payer", {"account": "acct-8", "amount": 6.0, "blind": True})
    assert await asyncio.wait_for(doomed.wait(), rig.within()) == 137
    await rig.spawn("tests.support.stuck:SlowPay")
    info = await rig.client.wait(job.job_id, timeout=rig.within(rig.ack_wait, LEASE_S))
    assert info.status == "waiting_human" and info.waiting is not None
    assert info.waiting.kind == "effect_unknown"
    assert len(payments(rig.home)) == 1  # it did pay once, and was not run again

    code, out, _ = await rig_cli(rig, "status", job.job_id)
    assert (
        code == 0 and "waiting effect_unknown: tool slow_pay_blind may or may not have run" in out
    )
    code, out, err = await rig_cli(rig, "watch", job.job_id)
    assert code == 3, err
    assert "waiting_human in start: tool slow_pay_blind may or may not have run" in out
    assert f"rig resolve {job.job_id} --edge pay|pay_blind|give_up" in err
    code, out, _ = await rig_cli(rig, "inbox")
    assert code == 0 and job.job_id in out and "may or may not have run" in out
    assert '"account": "acct-8"' in out  # the job's input, for the person deciding


@pytest.mark.parametrize("kind", ["agent", "tool", "verifier"])
async def test_a_message_dead_lettered_by_any_actor_kind_parks_its_job(
    rig: Deployment, kind: str
) -> None:
    """An actor that dies on every delivery of a job's message (restarted by `rig up`)
    gets it dead-lettered after three deliveries; the supervisor reads the letter and
    hands the job to a person with the reason, in the journal and the inbox."""
    short_timings(rig)
    up = await rig.rig_up({"actors:Supervisor": 1, **dict.fromkeys(CRASHY, 1)})
    try:
        await announced(rig, 4)
        job = await rig.client.submit("crashy", {"crash": kind})
        # Three deliveries, each an ack wait and a restart of the process that died.
        bound = rig.within(MAX_DELIVER * (rig.ack_wait + SPAWN_S))
        events = await journal_until(rig, job.job_id, "waiting_human", timeout=bound)
        status = parked(events)
        durable = {
            "agent": "agent-crashy",
            "tool": "tool-crash_work",
            "verifier": "verify-crash_check",
        }
        assert status.data["kind"] == "dead_letter"
        assert f"was dead-lettered by {durable[kind]}" in status.data["reason"]
        [waiting] = await rig.client.inbox()
        assert waiting.job_id == job.job_id and waiting.kind == "dead_letter"
        assert waiting.input == {"crash": kind}
        # The job is not wedged: a person can still end it.
        assert (await rig.client.cancel(job.job_id)).status == "cancelled"
    finally:
        up.send_signal(signal.SIGTERM)
        await asyncio.wait_for(up.wait(), rig.within(STOP_GRACE_S))


async def test_the_stall_watchdog_tells_a_person_and_a_late_step_resumes(rig: Deployment) -> None:
    """With no agent process live, a job is accepted with a warning; after its stall_s the
    watchdog parks it saying what it waits for; when an agent starts, the waiting step
    runs and resumes the job, which succeeds."""
    await rig.spawn("actors:Supervisor")
    [agent] = await rig.spawn("tests.support.stuck:Crashy")  # registers the agent, then goes away
    agent.send_signal(signal.SIGTERM)
    await agent.wait()
    code, out, _ = await rig_cli(rig, "agents", "--json")
    assert code == 0 and [(a["name"], a["live"]) for a in json.loads(out)] == [("crashy", 0)]
    code, out, _ = await rig_cli(rig, "agents")
    assert "crashy  (OFFLINE: no live process; jobs wait for one)" in out

    reply = await rig.client.submit("crashy", {"crash": ""}, stall_s=1.5)
    assert reply.warning is not None and "no live instance of agent 'crashy'" in reply.warning
    events = await journal_until(rig, reply.job_id, "waiting_human", timeout=rig.within(1.5))
    status = parked(events)
    assert status.data["kind"] == "stalled"
    assert "it waits for agent 'crashy' to decide step 1 in state 'start'" in status.data["reason"]
    code, out, _ = await rig_cli(rig, "inbox")
    assert "no progress for" in out and "agent 'crashy'" in out

    # The tool and the verifier first, so that the agent's step finds them live; a loaded
    # machine may still take longer than the 1.5 s watchdog between two steps, so the
    # journal is followed to the job's end, not to its next settling (a park).
    await rig.spawn(*CRASHY[1:])
    await rig.spawn(CRASHY[0])
    await journal_until(rig, reply.job_id, "succeeded", timeout=rig.within())
    info = await rig.client.status(reply.job_id)
    assert info.status == "succeeded" and info.waiting is None
    journal = [e async for e in rig.client.events(reply.job_id, timeout=10)]
    # Each parking is resumed once.
    parks = [e for e in journal if e.type == "status" and e.data["status"] == "waiting_human"]
    assert parks and {p.data["kind"] for p in parks} == {"stalled"}
    assert [e.type for e in journal].count("resumed") == len(parks)
    assert await rig.client.inbox() == []
    code, out, _ = await rig_cli(rig, "agents", "--json")
    assert [(a["name"], a["live"]) for a in json.loads(out)] == [("crashy", 1)]


async def test_a_report_the_supervisor_cannot_read_parks_its_job(rig: Deployment) -> None:
    """A malformed report for a job's current step is dead-lettered by the supervisor
    itself, and the supervisor's dead-letter reader still moves the job."""
    await rig.spawn("actors:Supervisor")
    [agent] = await rig.spawn("tests.support.stuck:Crashy")
    agent.send_signal(signal.SIGTERM)
    await agent.wait()
    job = await rig.client.submit("crashy", {"crash": ""})
    await eventually(lambda: _at_step(rig, job.job_id, 1), message="the job waits at step 1")
    bad = {"kind": "decision", "job_id": job.job_id, "step": 1, "edge": 5}
    await rig.nc.jetstream().publish(
        rig.names.report("agent", "crashy", job.job_id), json.dumps(bad).encode()
    )
    events = await journal_until(rig, job.job_id, "waiting_human", timeout=rig.within())
    status = parked(events)
    assert status.data["kind"] == "dead_letter"
    assert "a decision message of step 1 was dead-lettered by supervisor" in status.data["reason"]
    assert "edge: Input should be a valid string" in status.data["reason"]


async def _at_step(rig: Deployment, job_id: str, step: int) -> bool:
    info = await rig.client.status(job_id)
    return info.status == "running" and info.steps == step


async def test_a_bug_in_user_code_is_reported_as_a_bug(rig: Deployment) -> None:
    """A KeyError in the routing function parks the job as `code_error` (not a model's bad
    answer, not the safe edge) with the traceback in the agent's log at error level; a
    KeyError in a tool is a tool_error with its type, and the executor logs the traceback."""
    await rig.spawn("actors:Supervisor", *CRASHY)
    job = await rig.client.submit("crashy", {"crash": "code"})
    events = await journal_until(rig, job.job_id, "waiting_human")
    [decision] = [e for e in events if e.type == "decision"]
    assert decision.data["edge"] is None
    assert decision.data["code_error"]["type"] == "KeyError"
    assert "stuck.py" in decision.data["code_error"]["where"]
    status = parked(events)
    assert status.data["kind"] == "code_error"
    assert "the agent's own code raised KeyError: 'no_such_field'" in status.data["reason"]
    lines = _log_lines(rig, "tests.support.stuck.Crashy")
    [bug] = [line for line in lines if line.get("event") == "agent.code_error"]
    assert bug["level"] == "error" and "Traceback" in bug["exception"]
    assert bug["job_id"] == job.job_id
    code, out, _ = await rig_cli(rig, "watch", job.job_id)
    assert code == 3 and "the agent's code raised KeyError: 'no_such_field'" in out

    job = await rig.client.submit("crashy", {"crash": "tool-bug"})
    info = await rig.client.wait(job.job_id, timeout=rig.within())
    assert info.status == "failed"
    [result] = [e async for e in rig.client.events(job.job_id) if e.type == "tool_result"]
    assert result.data["error"]["type"] == "KeyError"
    lines = _log_lines(rig, "tests.support.stuck.CrashyTools")
    [bug] = [line for line in lines if line.get("event") == "tool.raised"]
    assert bug["level"] == "error" and "Traceback" in bug["exception"]


def _log_lines(rig: Deployment, target: str) -> list[dict[str, Any]]:
    text = (rig.home / f"{target}.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
