"""Concurrency keys (`Agent.flow`, `concurrency_key`): at most N jobs per key at once, the
others waiting in order of priority then submission (tests/support/flows.py)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from actors.testing import Deployment
from protocols import Event, JobInfo
from tests.integration.test_cli import rig_cli
from tests.support.flows import DEBOUNCE_S

pytestmark = pytest.mark.integration

SERIAL = ("actors:Supervisor", "tests.support.flows:Serial", "tests.support.flows:SerialTools")


def span(journal: list[Event]) -> tuple[float, float, float]:
    """When a job was accepted, started and ended, from its journal."""
    accepted = next(e.ts for e in journal if e.type == "accepted")
    started = next(e.ts for e in journal if e.type == "started")
    ended = next(e.ts for e in journal if e.type == "status" and e.data["status"] != "running")
    return accepted, started, ended


async def test_one_job_at_a_time_per_customer_in_order(rig: Deployment) -> None:
    """200 jobs over 10 customers, limit 1: never two at once for one customer, every one
    ends, each customer's in the order submitted."""
    await rig.spawn(*SERIAL)
    submitted: dict[str, list[str]] = {f"c{n}": [] for n in range(10)}
    for n in range(200):
        customer = f"c{n % 10}"
        reply = await rig.client.submit("serial", {"customer": customer, "ms": 10})
        submitted[customer].append(reply.job_id)
    infos: list[JobInfo] = await asyncio.gather(
        *(rig.client.wait(j, timeout=rig.within(120)) for ids in submitted.values() for j in ids)
    )
    assert {info.status for info in infos} == {"succeeded"}
    for ids in submitted.values():
        spans = [span(await rig.client.journal(job_id)) for job_id in ids]
        starts = [started for _, started, _ in spans]
        assert starts == sorted(starts)  # in the order submitted
        for (_, _, ended), (_, started, _) in itertools.pairwise(spans):
            assert started >= ended  # the next began only once the one before had ended


async def test_a_burst_of_one_customer_does_not_hold_back_another(rig: Deployment) -> None:
    await rig.spawn(*SERIAL)
    burst = [
        (await rig.client.submit("serial", {"customer": "big", "ms": 3000})).job_id
        for _ in range(4)
    ]
    single = (await rig.client.submit("serial", {"customer": "small", "ms": 10})).job_id
    await rig.client.wait(single, timeout=rig.within())
    accepted, started, _ = span(await rig.client.journal(single))
    assert started - accepted < 3.0  # less than one of the burst's jobs: it did not queue
    first = (await rig.client.status(burst[-1])).status
    assert first in ("accepted", "running")  # the burst is still going on


async def test_a_higher_priority_starts_first_and_status_says_why_a_job_waits(
    rig: Deployment,
) -> None:
    await rig.spawn(*SERIAL)
    key = {"customer": "p"}
    held = (await rig.client.submit("serial", key | {"hold": True})).job_id
    low = [(await rig.client.submit("serial", key | {"ms": 1})).job_id for _ in range(2)]
    high = (await rig.client.submit("serial", key | {"ms": 1}, priority=5)).job_id
    info = await rig.client.status(low[0])
    assert info.status == "accepted" and info.queued == {
        "key": "serial.p",
        "limit": 1,
        "running": 1,
        "ahead": 1,  # the higher one
    }
    code, out, _ = await rig_cli(rig, "status", low[1])
    assert code == 0 and "queued  for key serial.p: 1 of 1 running, 2 waiting ahead" in out
    code, out, _ = await rig_cli(rig, "top", "--frames", "1", "--interval", "0.2")
    [row] = [line.split() for line in out.splitlines() if line.startswith("serial.p")]
    assert code == 0 and row == ["serial.p", "1", "1", "3"]  # running, limit, waiting
    await rig.client.signal(held, "go")
    ended = [await rig.client.wait(j, timeout=rig.within()) for j in (held, high, *low)]
    assert {i.status for i in ended} == {"succeeded"}
    starts = {j: span(await rig.client.journal(j))[1] for j in (high, *low)}
    assert sorted(starts, key=lambda j: starts[j]) == [high, *low]
    # A key given at submission, with its own limit, for an agent with or without a flow.
    two = [
        (
            await rig.client.submit(
                "serial", {"hold": True}, concurrency_key="k", concurrency_limit=2
            )
        )
        for _ in range(3)
    ]
    statuses = [(await rig.client.status(r.job_id)) for r in two]
    assert [s.queued is None for s in statuses] == [True, True, False]


async def test_a_rate_spaces_starts_and_a_debounce_runs_only_the_last_submit(
    rig: Deployment,
) -> None:
    await rig.spawn(*SERIAL, "tests.support.flows:Metered", "tests.support.flows:Debounced")
    # 120 starts a minute per customer: one each half second, however many may run.
    metered = [
        (await rig.client.submit("metered", {"customer": "m", "ms": 1})).job_id for _ in range(4)
    ]
    waiting = await rig.client.status(metered[-1])
    assert waiting.queued is not None and waiting.queued["rate_per_min"] == 120
    for job_id in metered:
        assert (await rig.client.wait(job_id, timeout=rig.within())).status == "succeeded"
    starts = [span(await rig.client.journal(job_id))[1] for job_id in metered]
    # Spaced: three intervals of 0.5 s (less what the first start's event lagged behind
    # its admission); without the rate all four start within milliseconds.
    assert starts == sorted(starts) and starts[-1] - starts[0] >= 1.0, starts
    # Debounce: five submits, one after another. A submit replaces the one before it when
    # it came within that one's window (2 s from its admission, inside the submit call):
    # judged by the client's clock around each call, never by how fast a loaded machine is.
    burst, calls = [], []
    for n in range(5):
        sent = time.time()
        burst.append((await rig.client.submit("debounced", {"customer": "d", "n": n})).job_id)
        calls.append((sent, time.time()))
    ended = [await rig.client.wait(j, timeout=rig.within()) for j in burst]
    assert ended[-1].status == "succeeded"
    for n, job in enumerate(ended[:4]):
        assert job.status in ("cancelled", "succeeded"), job
        if job.status == "cancelled":
            assert "debounced" in str(job.error)
        if calls[n + 1][1] < calls[n][0] + DEBOUNCE_S:  # the next one came within the window
            assert job.status == "cancelled", (n, calls)
    accepted, started, _ = span(await rig.client.journal(burst[-1]))
    assert started - accepted >= DEBOUNCE_S  # it waited out its window


async def test_a_job_waiting_for_its_key_ends_at_its_deadline(rig: Deployment) -> None:
    await rig.spawn(*SERIAL)
    held = (await rig.client.submit("serial", {"customer": "t", "hold": True})).job_id
    late = await rig.client.submit("serial", {"customer": "t", "ms": 1}, deadline_s=1)
    info = await rig.client.wait(late.job_id, timeout=rig.within())
    assert info.status == "deadline_exceeded" and info.error is not None
    assert "while it waited for its place under key serial.t" in info.error["message"]
    after = await rig.client.submit("serial", {"customer": "t", "ms": 1})
    await rig.client.signal(held, "go")  # the key goes on: the one after the late one runs
    assert (await rig.client.wait(after.job_id, timeout=rig.within())).status == "succeeded"
