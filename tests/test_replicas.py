"""Supervisor replicas decide about a job from the stored snapshot, not from their own copy.

Two supervisors run in this process against a real nats-server (no consumers: the test
hands each one the reports itself), so which replica sees what is exact, not left to a
queue group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from actors import RigConfig, Supervisor
from actors._actor import Delivery
from actors._nats import Publisher, ensure_topology
from actors.examples.refund import RefundAgent
from protocols import (
    Budget,
    CancelJob,
    CancelRequest,
    Decision,
    Encoding,
    InboxReply,
    InboxRequest,
    JobInfo,
    Names,
    ResolveJob,
    ResolveRequest,
    StartJob,
    StatusRequest,
    SubmitRequest,
    decode,
    encode,
)
from tests.conftest import Deployment

pytestmark = pytest.mark.integration

DELIVERY = Delivery(subject="test", headers={}, encoding=Encoding.MSGPACK, attempt=1)


async def replica(rig: Deployment, home: Path) -> Supervisor:
    """A supervisor connected to the test's namespace, not consuming anything."""
    supervisor = Supervisor(
        config=RigConfig(nats_url=rig.server.url, names=Names(rig.prefix), home=home)
    )
    supervisor._nc = await nats.connect(rig.server.url)
    supervisor._js = supervisor._nc.jetstream()
    supervisor._publisher = Publisher(supervisor._nc)
    await supervisor._publisher.start()
    await ensure_topology(supervisor._js, supervisor.names)
    await supervisor.on_start()
    return supervisor


@pytest.fixture
async def pair(rig: Deployment, tmp_path: Path) -> AsyncIterator[tuple[Supervisor, Supervisor]]:
    a, b = await replica(rig, tmp_path), await replica(rig, tmp_path)
    agents = await a.js.key_value(a.names.agents_bucket)
    await agents.put("refund", encode(RefundAgent.info(RefundAgent.__new__(RefundAgent))))
    yield a, b
    for supervisor in (a, b):
        await supervisor.nc.close()


async def parked_by_the_other(a: Supervisor, b: Supervisor, job_id: str) -> None:
    """`a` accepts the job (and caches it); `b` starts it and parks it for a person."""
    job_input = {"order_id": "A-1001", "amount": 650.0}
    await a.submit(SubmitRequest(agent="refund", input=job_input, job_id=job_id))
    start = StartJob(job_id=job_id, agent="refund", input=job_input, budget=Budget())
    await b.on_message(start, DELIVERY)
    await b.on_message(Decision(job_id=job_id, step=1, edge="escalate"), DELIVERY)
    assert (await b.status(StatusRequest(job_id=job_id))).status == "waiting_human"


async def carry_out(supervisor: Supervisor, command: ResolveJob | CancelJob) -> JobInfo:
    """What the API waits for: `supervisor` takes the durable command and answers it."""
    command.reply_to = supervisor.nc.new_inbox()
    sub = await supervisor.nc.subscribe(command.reply_to, max_msgs=1)
    await supervisor.on_message(command, DELIVERY)
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
