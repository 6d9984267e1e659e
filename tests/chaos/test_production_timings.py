"""The crash tests once more at production timings: the default ack wait (30 s) and the
refund tool's default lease (its timeout + 30 s), not the seconds the other tests use.

A supervisor killed right after writing a transition, and a tool executor killed right
after its effect, each replaced at once: every job ends `succeeded`, one refund per job,
no refund asked twice, within bounds derived from the configured timeouts.
"""

from __future__ import annotations

import asyncio

import pytest

from actors import RigConfig
from actors.examples.refund import RefundTools
from actors.testing import Deployment
from tests.conftest import bank_attempts, refund_rows, submit_surely

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

EXAMPLE = {"order_id": "A-1001", "amount": 25, "reason": "damaged"}


async def spawn_doomed(rig: Deployment, target: str, point: str) -> asyncio.subprocess.Process:
    """A process that exits 137 the first time it reaches `point`."""
    marker = rig.home / f"crashed-{point}"
    rig.extra_env.update(RIG_CRASH_AT=point, RIG_CRASH_MARKER=str(marker))
    try:
        [doomed] = await rig.spawn(target)
    finally:
        del rig.extra_env["RIG_CRASH_AT"], rig.extra_env["RIG_CRASH_MARKER"]
    return doomed


async def test_kill_9_at_default_ack_wait_and_lease(rig: Deployment) -> None:
    ack_wait = RigConfig().ack_wait
    lease = RefundTools.tools["issue_refund"].spec.lease
    rig.extra_env["RIG_ACK_WAIT"] = f"{ack_wait:g}"
    assert rig.ack_wait == 30.0 and lease == 60.0  # the defaults, not test timings

    await rig.spawn("actors.examples.refund:RefundAgent", "actors.examples.refund:RefundChecks")
    supervisor = await spawn_doomed(rig, "actors:Supervisor", "after_write_decision")
    executor = await spawn_doomed(
        rig, "actors.examples.refund:RefundTools", "after_effect:issue_refund"
    )
    # Job A's first decision kills the supervisor after its write, before its outbox
    # goes out: only the decision's redelivery, an ack wait later, moves job A on. (The
    # crash may beat the submit's reply out of the process: the client asks again, with
    # the same job id, as any client of a crashing server must.)
    submitted = asyncio.create_task(submit_surely(rig, "refund", EXAMPLE, "job-a"))
    assert await asyncio.wait_for(supervisor.wait(), rig.within()) == 137
    await rig.spawn("actors:Supervisor")
    job_a = await asyncio.wait_for(submitted, rig.within())
    # Job B's refund kills the executor after the bank paid, before the ledger knew:
    # the call comes back an ack wait later, waits out the lease, and is reconciled.
    job_b = (await rig.client.submit("refund", EXAMPLE)).job_id
    assert await asyncio.wait_for(executor.wait(), rig.within()) == 137
    await rig.spawn("actors.examples.refund:RefundTools")

    bound = rig.within(ack_wait, lease)
    for job in (job_a, job_b):
        info = await rig.client.wait(job, timeout=bound)
        assert info.status == "succeeded", info.error
        assert info.path == ["triage", "review", "refunding", "done"]
    assert sorted(job for job, *_ in refund_rows(rig.home)) == sorted([job_a, job_b])
    assert sorted(bank_attempts(rig.home).values()) == [1, 1]
    journal = [e async for e in rig.client.events(job_b, timeout=10)]
    [refund] = [e for e in journal if e.type == "tool_result" and e.data["tool"] == "issue_refund"]
    assert refund.data["ok"] and refund.data["ledger"] == "hit"  # settled by reconcile
