"""What a transition must publish is published, whoever dies when, and no clock decides it.

A supervisor that writes a job's new snapshot and then fails to publish its outbox (it
dies, or the publish fails) leaves the message that caused the change unacked; whoever
handles that message next publishes the stored outbox. The in-process tests hand the
same message to two supervisor replicas (one whose publish fails, with a clock 200 s
behind, as another host's may be); the last test kills a real supervisor process.
"""

from __future__ import annotations

import asyncio
import time
import types

import pytest
from nats.js.api import ConsumerConfig

from actors import Supervisor
from actors.testing import Deployment
from protocols import (
    Budget,
    CancelJob,
    CancelRequest,
    DeadlineCheck,
    Decision,
    Event,
    ResolveJob,
    ResolveRequest,
    RetryableError,
    StartJob,
    StatusRequest,
    SubmitRequest,
    UnavailableError,
    decode_as,
)
from tests.conftest import DELIVERY, delivered
from tests.integration.test_replicas import parked_by_the_other
from tests.integration.test_supervision import journal_until, park
from tests.support.looper import LOOPER

pytestmark = pytest.mark.integration

INPUT = {"order_id": "A-1001", "amount": 25.0}


async def broken(supervisor: Supervisor, handle: object, *, behind: float = 200.0) -> None:
    """Run `handle` on a supervisor whose clock is `behind` seconds slow and whose outbox
    publish fails after the snapshot is written: the message stays unacked."""
    skewed = types.SimpleNamespace(time=lambda: time.time() - behind, monotonic=time.monotonic)

    async def no_send(job: object) -> None:
        raise RetryableError("publishing the outbox failed (simulated)")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("actors.jobs.supervisor.time", skewed)
        patch.setattr(supervisor, "_send", no_send)
        with pytest.raises(RetryableError):
            await handle  # type: ignore[misc]


async def commands(rig: Deployment, subject: str) -> int:
    """How many messages wait on a work subject (read by a consumer of the test's own)."""
    js = rig.nc.jetstream()
    durable = "probe-" + subject.replace(".", "-")
    await js.add_consumer(
        rig.names.work_stream, ConsumerConfig(durable_name=durable, filter_subject=subject)
    )
    return (await js.consumer_info(rig.names.work_stream, durable)).num_pending


async def test_a_report_whose_outbox_was_not_published_is_published_by_another(
    rig: Deployment, pair: tuple[Supervisor, Supervisor]
) -> None:
    a, b = pair
    await a.submit(SubmitRequest(agent="refund", input=INPUT, job_id="job-1"))
    await b.on_message(
        StartJob(job_id="job-1", agent="refund", input=INPUT, budget=Budget()),
        delivered(b.names.supervisor_for("job-1")),
    )
    decision = Decision(job_id="job-1", step=1, edge="lookup", args={"order_id": "A-1001"})
    by_agent = delivered(a.names.report("agent", "refund", "job-1"))
    await broken(a, a.on_message(decision, by_agent))
    assert await commands(rig, rig.names.tool("lookup_order")) == 0  # nothing went out
    await b.on_message(decision, by_agent)  # the redelivery, to the other replica
    assert await commands(rig, rig.names.tool("lookup_order")) == 1
    await b.on_message(decision, by_agent)  # and again: published once (deduplicated)
    assert await commands(rig, rig.names.tool("lookup_order")) == 1


async def test_a_deadline_whose_ending_was_not_published_is_published_by_another(
    rig: Deployment, pair: tuple[Supervisor, Supervisor]
) -> None:
    a, b = pair
    await a.submit(SubmitRequest(agent="refund", input=INPUT, job_id="job-2", deadline_s=0.2))
    await b.on_message(
        StartJob(job_id="job-2", agent="refund", input=INPUT, budget=Budget()),
        delivered(b.names.supervisor_for("job-2")),
    )
    job = await b.status(StatusRequest(job_id="job-2"))
    assert job.deadline is not None
    await asyncio.sleep(max(0.0, job.deadline - time.time()) + 0.05)  # the timer's own wait
    check = DeadlineCheck(job_id="job-2", at=job.deadline)
    await broken(a, a.on_timer(check, DELIVERY), behind=0.0)  # a slow clock: not due yet
    await b.on_timer(check, DELIVERY)
    events = await journal_until(rig, "job-2", "deadline_exceeded", timeout=10)
    assert events[-1].data["status"] == "deadline_exceeded"


async def test_a_resolve_whose_supervisor_dies_after_writing_is_finished_by_another(
    rig: Deployment,
) -> None:
    """The supervisor carrying out a person's resolve dies right after writing the job
    (`RIG_CRASH_AT=after_write_resolve`); another supervisor publishes what the resolve
    must, and the job finishes, with the resolve in its journal once."""
    rig.extra_env.update(RIG_CRASH_AT="after_write_resolve", RIG_CRASH_MARKER=str(rig.home / "x"))
    [doomed] = await rig.spawn(*LOOPER[:1])
    del rig.extra_env["RIG_CRASH_AT"], rig.extra_env["RIG_CRASH_MARKER"]
    await rig.spawn(*LOOPER[1:])
    job_id = await park(rig)
    resolving = asyncio.create_task(rig.client.resolve(job_id, "finish", note="ok"))
    assert await asyncio.wait_for(doomed.wait(), 30) == 137
    await rig.spawn(LOOPER[0])
    events = await journal_until(rig, job_id, "succeeded", timeout=30)
    assert [e.type for e in events].count("resolved") == 1
    assert await rig.client.inbox() == []
    resolving.cancel()
    await asyncio.gather(resolving, return_exceptions=True)


async def test_an_outbox_not_published_goes_out_before_another_cause_moves_the_job(
    rig: Deployment, pair: tuple[Supervisor, Supervisor]
) -> None:
    """A supervisor writes a decision's transition and fails to publish it; before that
    report comes back, a person's cancel moves the job on another replica. The decision's
    events are published first, so the journal has no hole (sequences 1, 2, 3, ... with
    the decision among them) and ends `cancelled`."""
    a, b = pair
    await a.submit(SubmitRequest(agent="refund", input=INPUT, job_id="job-3"))
    await a.on_message(
        StartJob(job_id="job-3", agent="refund", input=INPUT, budget=Budget()),
        delivered(a.names.supervisor_for("job-3")),
    )
    decision = Decision(job_id="job-3", step=1, edge="lookup", args={"order_id": "A-1001"})
    await broken(a, a.on_message(decision, delivered(a.names.report("agent", "refund", "job-3"))))
    cancel = CancelJob(job_id="job-3", command_id="c-1", request=CancelRequest(job_id="job-3"))
    await b.on_message(cancel, delivered(b.names.supervisor_for("job-3")))
    events = await journal_until(rig, "job-3", "cancelled", timeout=10)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert any(e.type == "decision" and e.data.get("edge") == "lookup" for e in events)


async def test_a_retried_resolve_is_answered_once_its_first_try_is_in_the_journal(
    rig: Deployment, pair: tuple[Supervisor, Supervisor]
) -> None:
    """A supervisor writes a person's resolve and fails to publish it (cut off from the
    cluster, as in the Jepsen harness's seed 11); the person's client, given no answer,
    asks again under the same resolve id. The other replica says the resolve was carried
    out only once its events are out: whoever is told so and reads the journal finds it."""
    a, b = pair
    await parked_by_the_other(a, b, "job-4")
    request = ResolveRequest(job_id="job-4", edge="close", by="ada", resolve_id="click-1")
    command = ResolveJob(job_id="job-4", command_id="c-1", request=request)
    await broken(a, a.on_message(command, delivered(a.names.supervisor_for("job-4"))), behind=0)
    info = await b.resolve(request)  # the retry, answered from the stored snapshot
    assert (info.status, info.state) == ("succeeded", "denied")
    last = await rig.nc.jetstream().get_last_msg(rig.names.events_stream, rig.names.events("job-4"))
    event = decode_as(Event, last.data or b"")[0]
    assert (event.type, event.data["status"]) == ("status", "succeeded")


async def test_a_cancel_before_the_start_sends_the_submits_accepted_event_first(
    rig: Deployment, pair: tuple[Supervisor, Supervisor]
) -> None:
    """A person cancels a job while its submit is on the way (the Jepsen harness, seed 7,
    30 minutes): the cancel moves the job before its StartJob does. The `accepted` event,
    in the outbox the StartJob's transition would have sent, goes out first: the journal
    is 1 `accepted`, 2 `cancelled`, and the StartJob that comes after changes nothing."""
    a, b = pair
    await a.submit(SubmitRequest(agent="refund", input=INPUT, job_id="job-5"))
    cancel = CancelJob(job_id="job-5", command_id="c-5", request=CancelRequest(job_id="job-5"))
    await b.on_message(cancel, delivered(b.names.supervisor_for("job-5")))
    start = StartJob(job_id="job-5", agent="refund", input=INPUT, budget=Budget())
    await a.on_message(start, delivered(a.names.supervisor_for("job-5")))
    events = await journal_until(rig, "job-5", "cancelled", timeout=10)
    assert [(e.seq, e.type) for e in events] == [(1, "accepted"), (2, "status")]
    assert (await b.status(StatusRequest(job_id="job-5"))).status == "cancelled"


async def test_a_retried_resolve_whose_events_cannot_go_out_is_unavailable_not_refused(
    rig: Deployment, pair: tuple[Supervisor, Supervisor]
) -> None:
    """The same retry, while the other replica cannot publish either: the answer is
    `unavailable` (ask again; it was carried out), never a refusal, which would tell the
    person it did not happen."""
    a, b = pair
    await parked_by_the_other(a, b, "job-6")
    request = ResolveRequest(job_id="job-6", edge="close", by="ada", resolve_id="click-6")
    command = ResolveJob(job_id="job-6", command_id="c-6", request=request)
    await broken(a, a.on_message(command, delivered(a.names.supervisor_for("job-6"))), behind=0)

    async def no_send(job: object) -> None:
        raise RetryableError("publishing the outbox failed (simulated)")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(b, "_send", no_send)
        with pytest.raises(UnavailableError, match="ask again under the same id"):
            await b.resolve(request)
    info = await b.resolve(request)  # asked again, once it can go out
    assert (info.status, info.state) == ("succeeded", "denied")
