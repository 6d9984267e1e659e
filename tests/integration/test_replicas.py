"""Supervisor replicas decide about a job from the stored snapshot, not from their own copy.

Two supervisors run in this process against a real nats-server (no consumers: the test
hands each one the reports itself), so which replica sees what is exact, not left to a
queue group.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.js.errors import BadRequestError

import actors.jobs.supervisor as supervisor_module
from actors import Supervisor
from actors.runtime.nats import live_agents
from protocols import (
    Budget,
    CancelJob,
    CancelRequest,
    Decision,
    InboxReply,
    InboxRequest,
    JobInfo,
    ResolveJob,
    ResolveRequest,
    StartJob,
    StatusRequest,
    SubmitRequest,
    decode,
)
from tests.conftest import delivered

pytestmark = pytest.mark.integration


async def parked_by_the_other(a: Supervisor, b: Supervisor, job_id: str) -> None:
    """`a` accepts the job (and caches it); `b` starts it and parks it for a person."""
    job_input = {"order_id": "A-1001", "amount": 650.0}
    await a.submit(SubmitRequest(agent="refund", input=job_input, job_id=job_id))
    start = StartJob(job_id=job_id, agent="refund", input=job_input, budget=Budget())
    await b.on_message(start, delivered(b.names.supervisor_for(job_id)))
    escalate = Decision(job_id=job_id, step=1, edge="escalate")
    await b.on_message(escalate, delivered(b.names.report("agent", "refund", job_id)))
    assert (await b.status(StatusRequest(job_id=job_id))).status == "waiting_human"


async def carry_out(supervisor: Supervisor, command: ResolveJob | CancelJob) -> JobInfo:
    """What the API waits for: `supervisor` takes the durable command and answers it."""
    command.reply_to = supervisor.nc.new_inbox()
    sub = await supervisor.nc.subscribe(command.reply_to, max_msgs=1)
    await supervisor.on_message(command, delivered(supervisor.names.supervisor_for(command.job_id)))
    reply = decode((await sub.next_msg(timeout=10)).data)[0]
    assert reply["error"] is None, reply
    return JobInfo.model_validate(reply["job"])


async def test_a_replica_with_an_old_copy_resolves_from_the_stored_snapshot(
    pair: tuple[Supervisor, Supervisor],
) -> None:
    a, b = pair
    await parked_by_the_other(a, b, "job-r")
    request = ResolveRequest(job_id="job-r", edge="close", by="alice")
    info = await carry_out(a, ResolveJob(job_id="job-r", command_id="c1", request=request))
    assert (info.status, info.state) == ("succeeded", "denied")


async def test_a_replica_with_an_old_copy_cancels_from_the_stored_snapshot(
    pair: tuple[Supervisor, Supervisor],
) -> None:
    a, b = pair
    await parked_by_the_other(a, b, "job-c")
    request = CancelRequest(job_id="job-c")
    info = await carry_out(a, CancelJob(job_id="job-c", command_id="c2", request=request))
    assert info.status == "cancelled"
    assert await a.inbox(InboxRequest()) == InboxReply(jobs=[])


async def test_a_burst_of_submits_shares_one_presence_lookup(
    pair: tuple[Supervisor, Supervisor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 submits at once, no refund agent live: one presence watcher, not 300 (a burst
    of watchers made the server refuse some: stored jobs were answered with an error)."""
    a, _ = pair
    lookups = 0

    async def counted(*args: Any, **kwargs: Any) -> dict[str, int]:
        nonlocal lookups
        lookups += 1
        return await live_agents(*args, **kwargs)

    monkeypatch.setattr(supervisor_module, "live_agents", counted)
    replies = await asyncio.gather(
        *(a.submit(SubmitRequest(agent="refund", input={"order_id": f"A-{n}"})) for n in range(300))
    )
    assert lookups == 1
    assert all(r.warning and "no live instance of agent 'refund'" in r.warning for r in replies)


async def test_a_presence_lookup_that_fails_does_not_fail_the_submit(
    pair: tuple[Supervisor, Supervisor], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = pair

    async def broken(*args: Any, **kwargs: Any) -> dict[str, int]:
        raise BadRequestError()

    monkeypatch.setattr(supervisor_module, "live_agents", broken)
    reply = await a.submit(SubmitRequest(agent="refund", input={"order_id": "A-1"}, job_id="j-1"))
    assert reply.job_id == "j-1" and reply.warning is None
    assert (await a.status(StatusRequest(job_id="j-1"))).status == "accepted"
