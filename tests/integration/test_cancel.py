"""A call its job no longer waits for is stopped (real processes on a real server).

A person's cancel or the job's deadline tells the executors (`ToolCancel`); the running
tool is cancelled, its ledger record says what may have happened (`unknown` for a tool
with side effects, a failure that may run again for one without), and a call still
queued is never started.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from actors import Supervisor
from actors.testing import Deployment, eventually
from protocols import Names, ToolResult, decode_as
from tests.support.holding import Holder, HoldTools, holds

pytestmark = pytest.mark.integration


def ledger_state(home: Path, key: str) -> str | None:
    """The state of `key`'s record in the executor's ledger (None: no record)."""
    with contextlib.closing(sqlite3.connect(home / "ledger.sqlite3")) as db:
        row = db.execute("SELECT state, retryable FROM ledger WHERE key = ?", (key,)).fetchone()
    return None if row is None else f"{row[0]}{' (retryable)' if row[1] else ''}"


async def reports(rig: Deployment, tool: str, job_id: str):  # type: ignore[no-untyped-def]
    """The harness's view of the executor's reports on `job_id`."""
    return await rig.nc.subscribe(Names(rig.prefix).report("tool", tool, job_id))


async def started(rig: Deployment, job_id: str) -> None:
    async def check() -> bool:
        return "started" in holds(rig.home, job_id)

    await eventually(check, timeout=rig.within(), message=f"the tool started {job_id}")


@pytest.mark.parametrize(
    ("pure", "tool", "recorded"),
    [(False, "hold", "unknown"), (True, "look", "failed (retryable)")],
)
async def test_cancelling_a_job_stops_its_running_call(
    rig: Deployment, pure: bool, tool: str, recorded: str
) -> None:
    await rig.spawn(Supervisor, Holder, HoldTools)
    job = (await rig.client.submit("holder", {"pure": pure, "seconds": 3600})).job_id
    sub = await reports(rig, tool, job)
    await started(rig, job)

    info = await rig.client.cancel(job, reason="the customer withdrew")
    assert info.status == "cancelled"
    result = decode_as(ToolResult, (await sub.next_msg(timeout=rig.within())).data)[0]
    assert not result.ok and result.error is not None
    assert result.error["code"] == "cancelled" and result.error["started"] is True
    assert "the customer withdrew" in result.error["message"]
    # The tool saw the cancellation, not the end of its hold; the ledger says what may be.
    assert holds(rig.home, job) == {"started", "cancelled"}
    assert ledger_state(rig.home, result.key) == recorded
    assert (await rig.client.status(job)).status == "cancelled"

    # The executor goes on serving.
    quick = (await rig.client.submit("holder", {"pure": pure, "seconds": 0})).job_id
    assert (await rig.client.wait(quick, timeout=rig.within())).status == "succeeded"


async def test_a_deadline_that_passes_mid_call_stops_it_and_ends_the_job(
    rig: Deployment,
) -> None:
    await rig.spawn(Supervisor, Holder, HoldTools)
    reply = await rig.client.submit("holder", {"seconds": 3600}, deadline_s=3)
    sub = await reports(rig, "hold", reply.job_id)

    info = await rig.client.wait(reply.job_id, timeout=rig.within(3))
    assert info.status == "deadline_exceeded"
    result = decode_as(ToolResult, (await sub.next_msg(timeout=rig.within())).data)[0]
    assert result.error is not None and result.error["code"] == "cancelled"
    assert "deadline" in result.error["message"]
    assert holds(rig.home, reply.job_id) == {"started", "cancelled"}
    assert ledger_state(rig.home, result.key) == "unknown"
    [budget] = [e for e in await rig.client.journal(reply.job_id) if e.type == "budget"]
    assert budget.data["exhausted"] == "deadline"


async def test_a_call_still_queued_when_its_deadline_passes_never_starts(
    rig: Deployment,
) -> None:
    """No executor runs while the job's call waits and its deadline passes; the
    executor that comes up later does not start it."""
    await rig.spawn(Supervisor, Holder)
    reply = await rig.client.submit("holder", {"seconds": 0}, deadline_s=1)
    sub = await reports(rig, "hold", reply.job_id)
    info = await rig.client.wait(reply.job_id, timeout=rig.within(1))
    assert info.status == "deadline_exceeded"
    assert any(e.type == "decision" for e in await rig.client.journal(reply.job_id))

    await rig.spawn(HoldTools)
    result = decode_as(ToolResult, (await sub.next_msg(timeout=rig.within())).data)[0]
    assert result.error is not None and result.error["code"] == "cancelled"
    assert result.error["started"] is False and "before the call started" in result.error["message"]
    assert holds(rig.home, reply.job_id) == set()  # the tool never ran for it
    assert ledger_state(rig.home, result.key) is None  # nor was it claimed


async def test_a_call_queued_when_its_job_is_cancelled_never_starts(rig: Deployment) -> None:
    """No executor runs while the job is cancelled with its call queued (so none hears
    the notice); the executor that comes up later claims the call, finds the durable
    notice, releases the claim as never started and does not run the tool; a late
    result saying it never started leaves the journal as the cancel ended it."""
    await rig.spawn(Supervisor, Holder)
    reply = await rig.client.submit("holder", {"seconds": 0})
    sub = await reports(rig, "hold", reply.job_id)

    async def queued() -> bool:
        events = await rig.client.journal(reply.job_id)
        return any(e.type == "decision" for e in events)

    await eventually(queued, timeout=rig.within(), message="the call is queued")
    await rig.client.cancel(reply.job_id, reason="changed my mind")
    await rig.spawn(HoldTools)
    result = decode_as(ToolResult, (await sub.next_msg(timeout=rig.within())).data)[0]
    assert result.error is not None and result.error["code"] == "cancelled"
    assert result.error["started"] is False and "changed my mind" in result.error["message"]
    assert holds(rig.home, reply.job_id) == set()  # the tool never ran for it
    assert ledger_state(rig.home, result.key) == "failed (retryable)"  # released
    assert (await rig.client.status(reply.job_id)).status == "cancelled"
