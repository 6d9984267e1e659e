"""Supervisor replicas as processes: the 16 partitions of the supervisor's work shared
among them, each job's reports coming back to the replica that has its snapshot, and
the share handed over when a replica stops or dies (docs/architecture.md, Supervision)."""

from __future__ import annotations

import asyncio
import signal

import pytest

from actors._discovery import discover
from actors.examples.refund import RefundAgent
from protocols import PARTITIONS
from tests.conftest import REFUND, Deployment, eventually

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


async def test_replicas_share_the_partitions_and_hand_them_over(rig: Deployment) -> None:
    """Three supervisor replicas split the 16 partitions among them, so a job's reports
    come back to the replica that wrote its snapshot: nearly every report finds the
    snapshot in that replica's cache. A replica that stops (SIGTERM) hands its share to
    the other two at once; one that dies (SIGKILL) leaves its share to the last one
    within seconds. Jobs run to their end throughout."""
    supervisors = await rig.spawn(*["actors:Supervisor"] * 3)
    await rig.spawn(*REFUND[1:])
    shares = await eventually(
        lambda: _shares(rig, 3), timeout=30, message="three replicas share 16 partitions"
    )
    assert all(n > 0 for n in shares.values()), shares

    await _run_jobs(rig, 30, "a")
    counts = {a.pid: a.counts for a in await discover(rig.nc, rig.names)}
    hits = sum(counts[p.pid]["cache_hits"] for p in supervisors)
    misses = sum(counts[p.pid]["cache_misses"] for p in supervisors)
    # A job's first message finds nothing cached (its StartJob); each report after it
    # should hit: a refund job has four. Without partitions a report went to any of
    # the three, and found the snapshot about a third of the time.
    assert hits >= 3 * 30 and misses <= 30 + 10, (hits, misses)

    stopped, killed, last = supervisors
    stopped.send_signal(signal.SIGTERM)  # deletes its beat as it stops: hands over at once
    assert await asyncio.wait_for(stopped.wait(), rig.within()) == 0
    await eventually(lambda: _shares(rig, 2, exclude=stopped.pid), timeout=10)
    await _run_jobs(rig, 10, "b")

    killed.kill()  # its beat goes stale: the last replica takes everything
    await killed.wait()
    await eventually(lambda: _shares(rig, 1, exclude=killed.pid), timeout=15)
    assert (await _shares(rig, 1, exclude=killed.pid)) == {last.pid: PARTITIONS}
    await _run_jobs(rig, 10, "c")


async def _shares(rig: Deployment, replicas: int, exclude: int = 0) -> dict[int, int] | None:
    """Each live supervisor's partition count, once `replicas` of them (not `exclude`)
    hold all 16 between them, each its own."""
    found = {
        a.pid: a.counts.get("partitions", 0)
        for a in await discover(rig.nc, rig.names)
        if a.kind == "supervisor" and a.pid != exclude
    }
    held = {pid: n for pid, n in found.items() if n}
    if len(held) == replicas and sum(held.values()) == PARTITIONS:
        return held
    return None


async def _run_jobs(rig: Deployment, count: int, tag: str) -> None:
    jobs = [
        (await rig.client.submit("refund", RefundAgent.example_input, job_id=f"{tag}-{n}")).job_id
        for n in range(count)
    ]
    for job_id in jobs:
        info = await rig.client.wait(job_id, timeout=rig.within(30))
        assert info.status == "succeeded", info
