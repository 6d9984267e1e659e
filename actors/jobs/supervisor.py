"""The supervisor: owns every job's snapshot and journal, and moves jobs through their graph.

It is the only writer of job state. Agents, tools and verifiers report back to it on
`rig.work.supervisor.<kind>.<name>.<partition>`, a subject naming the sender (whose NATS
user may publish under its own name only) and the job's partition (each replica takes
its share of the partitions); for each report it loads the job's snapshot and the
graph the job runs on, asks `Rules` (actors/jobs/rules.py, pure) for the next snapshot,
writes it with compare-and-set, then publishes what the transition produced (events,
next command).
"""

# Long: the shell around the rules: the API, the compare-and-set loop, the outbox, the
# timers and the partitions, each a few methods on one object that holds their state.

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import re
import socket
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from opentelemetry import trace
from pydantic import BaseModel

from actors.jobs import flows
from actors.jobs.flows import admit, next_tick, pump, released
from actors.jobs.rules import Rules, check_input, forged
from actors.jobs.scheduler import Scheduler
from actors.jobs.sweep import TimerSweep
from actors.jobs.threads import take_turn, thread_ended
from actors.runtime import tracing as tracing
from actors.runtime.actor import REQUEST_HEADERS, Actor, Delivery, Endpoint, Inbox
from actors.runtime.clock import SERVER_CLOCK
from actors.runtime.faults import crash_point
from actors.runtime.metrics import (
    BUSY,
    FORGED_REPORTS,
    QUEUED_SECONDS,
    SNAPSHOTS_UNREADABLE,
    child,
    observe_events,
)
from actors.runtime.nats import (
    PRESENCE_TTL_S,
    WRONG_LAST_SEQUENCE,
    PublishError,
    is_outage,
    kv_latest,
    kv_read,
    kv_times,
    live_agents,
)
from actors.runtime.settings import RigConfig
from actors.tools.catalog import owners_to_ask
from protocols import (
    TERMINAL_STATUSES,
    AgentInfo,
    BusyError,
    CancelJob,
    CancelRequest,
    ChildEnded,
    DeadLetter,
    DeadlineCheck,
    Decision,
    DecodeError,
    Escalation,
    FlowEnded,
    FlowNext,
    FlowRecord,
    FlowTick,
    ForgedReportError,
    Graph,
    Header,
    InboxReply,
    InboxRequest,
    JobConflictError,
    JobInfo,
    JobSnapshot,
    JobStateError,
    Names,
    NonRetryableError,
    PayloadTooLargeError,
    ProtocolError,
    ResolveJob,
    ResolveRequest,
    RetryableError,
    SignalJob,
    SignalRequest,
    SignalTimeout,
    StallCheck,
    StartJob,
    StatusRequest,
    SubmitReply,
    SubmitRequest,
    SupervisorMessage,
    ThreadEnded,
    ThreadNext,
    ThreadRecord,
    TimerMessage,
    UnavailableError,
    UnknownAgentError,
    UnknownJobError,
    _permissions as permissions,
    canonical,
    decode,
    decode_as,
    encode,
    error_from_dict,
    kv_subject,
    msg_id,
)
from protocols._permissions import Role, answerable
from protocols._schedules import ScheduleRequest, ScheduleTick

# How long the supervisor trusts its copy of an agent's registry entry, and of its presence.
_AGENT_CACHE_S = 5.0
# How long a submit waits out servers without a leader before it answers `unavailable`
# (a stream's publish, and the whole): well within a client's request timeout (10 s by
# default), so that the client hears why and asks again.
_SUBMIT_OUTAGE_S = 3.0
_SUBMIT_PATIENCE_S = 6.0
_LIVE_CACHE_S = 2.0
# An agent's backlog is read at most this often per supervisor (a flood of submits costs
# one JetStream request per agent per interval); a busy submit is told to come back in:
_BACKLOG_TTL_S = 0.05
_BUSY_RETRY_S = 2.0
# Snapshots of running jobs kept in memory (about 2 KB each).
_SNAPSHOT_CACHE_SIZE = 20_000
# Attempts at a compare-and-set before giving the report back to JetStream.
_CAS_ATTEMPTS = 5
_PUBLISH_TIMEOUT_S = 10.0
# Bytes of a message's max_payload kept for its headers.
_HEADROOM = 1024
# Each replica says it is live this often, and counts as live while its last beat is no
# older than _LIVE_S behind the newest one (by the stream's clock, not the hosts').
_BEAT_S = 1.0
_LIVE_S = 3.0
# How long `rig.api.resolve|cancel` waits for the supervisor that carries the request out.
_COMMAND_WAIT_S = 8.0
# A timer not yet due is held on the server at most this long before it is looked at again.
TIMER_RECHECK_S = 30.0


class Supervisor(Actor):
    """Accepts jobs and steps them through their agent's graph; any number may run.

    Consumes: `rig.work.supervisor.>`, one durable per partition (`supervisor-<p>`, of
    the 16 it pulls those that fall to it among the live replicas): `StartJob`,
    `ResolveJob` and `CancelJob` on `rig.work.supervisor.api.<p>`; the reports, each on
    its sender's subject: `Decision` on `.agent.<agent>.<p>`, `ToolResult` on
    `.tool.<tool>.<p>`, `Verdict` on `.verify.<verifier>.<p>` (which carries the tool's
    result when the executor sent the result straight to the verifier: two transitions
    per step, not three). A report
    from anyone but the sender the job's step waits for is refused (`ForgedReportError`:
    dead-lettered, counted, never applied); and
    `rig.work.timer` (durable `supervisor-timer`): `DeadlineCheck` and `StallCheck`,
    held back by nak-with-delay until due (and sent again if the servers lose one:
    `actors/jobs/sweep.py`); and every dead letter, `rig.dlq.>` of
    stream `RIG_DLQ` (durable `supervisor-dlq`), so that a job whose message could
    not be handled is handed to a person (or failed, by the agent's `on_stuck`).
    Publishes: `rig.work.agent.<agent>` (`StepRequest`), `rig.work.tool.<tool>`
    (`ToolCall`), `rig.work.verify.<verifier>` (`VerifyRequest`), the journal on
    `rig.events.<job_id>`, escalations on `rig.escalations` and in `RIG_INBOX`.
    Answers: `rig.api.submit|status|resolve|cancel|inbox` (queue group, JSON or msgpack).

    Every change of a job is made by a durable message (a report, a timer, a dead
    letter, or a person's resolve or cancel, which the API turns into a `ResolveJob` or
    `CancelJob` on `rig.work.supervisor.api.<p>`), and that message is acked only once the
    change's outbox is published. The snapshot names its `cause`: if the message comes
    back (its supervisor died between the write and the publish), whichever supervisor
    gets it publishes the stored outbox again, under the same `Nats-Msg-Id`s. Any
    other message that is not for the job's current step is dropped. No clock decides
    anything. Replicas coordinate only through the snapshot's revision: a lost
    compare-and-set is retried after re-reading.
    """

    kind = "supervisor"
    name = "supervisor"

    async def on_start(self) -> None:
        self._jobs: KeyValue = await self.bucket(self.names.jobs_bucket)
        self._agents: KeyValue = await self.bucket(self.names.agents_bucket)
        self._graphs: KeyValue = await self.bucket(self.names.graphs_bucket)
        self._versions: dict[str, AgentInfo] = {}
        self._agent_cache: dict[str, tuple[float, AgentInfo]] = {}
        self._live_cache: dict[str, tuple[float, bool]] = {}
        self._live_lookups: dict[str, asyncio.Future[bool]] = {}
        self._snapshots: OrderedDict[str, tuple[JobSnapshot, bytes, int]] = OrderedDict()
        # The revision of each job whose outbox this process has published.
        self._sent: OrderedDict[str, int] = OrderedDict()
        # The transitions under way here, one at a time per job (a parent whose children
        # end together would otherwise lose compare-and-sets to itself): job -> (lock, users).
        self._moving: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._catalog: KeyValue | None = None  # RIG_TOOLS, opened when a decision needs it
        self._threads: KeyValue | None = None  # RIG_THREADS, opened by a thread's first turn
        self.scheduler = Scheduler(self)  # rig.api.schedule, and the schedules' ticks
        self.sweep = TimerSweep(self)  # the timers the servers lost, sent again
        self._flows: KeyValue | None = None  # RIG_FLOWS, opened by a job with a key
        # A snapshot is one KV message: room for the headers the write adds.
        sizes = self.config.sizes
        self._max_snapshot = min(sizes.snapshot or 2**31, self.nc.max_payload - _HEADROOM)
        self._max_input = min(sizes.input, self.nc.max_payload // 4)
        self._max_event = sizes.event
        self.stale_reports = 0
        self._backlogs: dict[str, tuple[float, int]] = {}  # agent: (read at, steps waiting)
        self._journal = (self.names.events_all.removesuffix(">"), self.names.escalations)
        self.cache_hits = self.cache_misses = 0
        # The partitions this replica pulls: its share among the live replicas; none
        # until it has seen who is live. (One partition: every replica pulls it.)
        self._instance = _instance_id(self.config)
        self._owned: frozenset[int] = frozenset()
        self._peers: tuple[str, ...] = ()
        if self.names.partitions == 1:
            self._owned = frozenset({0})
        else:
            self._presence = await self.bucket(self.names.presence_bucket)
            await self.patiently(self._share, doing="taking its share of the partitions")
            self._sharing = asyncio.create_task(self._keep_sharing())
        self._sweeping = asyncio.create_task(self.sweep.run())

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(self.names.api_submit, SubmitRequest, self.submit),
            Endpoint(self.names.api_status, StatusRequest, self.status),
            Endpoint(self.names.api_resolve, ResolveRequest, self.resolve),
            Endpoint(self.names.api_cancel, CancelRequest, self.cancel),
            Endpoint(self.names.api_signal, SignalRequest, self.signal),
            Endpoint(self.names.api_inbox, InboxRequest, self.inbox),
            Endpoint(self.names.api_schedule, ScheduleRequest, self.scheduler.request),
        ]

    @classmethod
    def role_name(cls) -> str:
        return "supervisor"

    @classmethod
    def role(cls, names: Names, graphs: list[Graph]) -> Role:
        return permissions.supervisor(names)

    def inboxes(self) -> list[Inbox]:
        partitions = [
            Inbox(
                durable=self.names.supervisor_durable(p),
                subject=self.names.partition_subjects(p)[0],
                more_subjects=tuple(self.names.partition_subjects(p)[1:]),
                model=SupervisorMessage,
                handler=self.on_message,
                wanted=functools.partial(self._owns, p),
            )
            for p in range(self.names.partitions)
        ]
        return [
            *partitions,
            Inbox(
                durable=self.names.timer_durable,
                subject=self.names.timer,
                model=TimerMessage,
                handler=self.on_timer,
                # A timer waits on the server (nak with delay) as long as its job runs.
                max_deliver=1_000_000,
                max_ack_pending=1_000_000,
            ),
            Inbox(
                durable=self.names.dlq_durable,
                subject=self.names.dlq_all,
                model=DeadLetter,
                handler=self.on_dead_letter,
                stream=self.names.dlq_stream,
            ),
        ]

    def stats(self) -> dict[str, int]:
        return super().stats() | {
            "stale_reports": self.stale_reports,
            "jobs_finished": self.counts.get("jobs_finished", 0),  # ended by this process
            "forged_reports": self.counts.get("forged_reports", 0),  # refused (`_refuse`)
            "cache_hits": self.cache_hits,  # a job's snapshot found in this process
            "cache_misses": self.cache_misses,  # ... read from the bucket
            "partitions": len(self._owned),  # of the deployment's, those this replica pulls
        }

    # --- partitions: which jobs' messages this replica takes ---------------------------

    def _owns(self, partition: int) -> bool:
        return partition in self._owned

    async def _share(self) -> None:
        """Say this replica is live, and take its share of the partitions among the live
        replicas (rendezvous hashing: a replica that joins or leaves moves only its own
        share). Live: beaten within `_LIVE_S` of the newest beat, by the stream's clock."""
        await self._presence.put(
            f"supervisor.{self._instance}", encode({"pid": os.getpid(), "at": time.time()})
        )
        beats = await kv_times(self.js, self.names.presence_bucket, "supervisor.*")
        newest = max(beats.values(), default=0.0)
        live = sorted(key.split(".", 1)[1] for key, at in beats.items() if at >= newest - _LIVE_S)
        if self._instance not in live:
            live.append(self._instance)
        owned = partitions_of(self._instance, live, self.names.partitions)
        if owned != self._owned or tuple(live) != self._peers:
            self.log.info("partitions.taken", partitions=sorted(owned), replicas=live)
        self._owned, self._peers = owned, tuple(live)

    async def _keep_sharing(self) -> None:
        while True:
            await asyncio.sleep(_BEAT_S)
            try:
                await self._share()
            except Exception as exc:  # the server is away: keep what it had
                self.log.warning("partitions.unknown", error=repr(exc))

    async def on_stop(self) -> None:
        """Stop sweeping; leave the partitions to the other replicas at once."""
        sharing = getattr(self, "_sharing", None)
        tasks = [task for task in (getattr(self, "_sweeping", None), sharing) if task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if sharing is not None:
            with contextlib.suppress(Exception):
                await self._presence.delete(f"supervisor.{self._instance}")

    # --- the API -----------------------------------------------------------------

    async def submit(self, request: SubmitRequest) -> SubmitReply:
        """Store the job durably, then answer `accepted` with its id; or, when the
        servers cannot store it now, `unavailable` naming the id to ask again with."""
        job_id = request.job_id or uuid.uuid4().hex
        try:
            async with asyncio.timeout(_SUBMIT_PATIENCE_S):
                return await self._accept(request, job_id)
        except Exception as exc:
            if not (is_outage(exc) or isinstance(exc, TimeoutError)):
                raise
            # The StartJob may be stored: asking again under this id is the same job.
            self.log.info("job.unavailable", job_id=job_id, error=repr(exc))
            raise UnavailableError(
                f"the NATS servers could not store the job just now ({exc!r}); submit "
                f"again with job_id {job_id!r}, which is the same job",
                job_id=job_id,
            ) from exc

    async def _accept(self, request: SubmitRequest, job_id: str) -> SubmitReply:
        info = await self._agent(request.agent)
        self._fits(request.input, "a job's input")
        check_input(info, request.input)
        asked = _request_hash(request)
        if request.job_id is not None:
            existing, _revision = await self._load(job_id)
            if existing is not None:
                return await self._accepted_again(existing, asked, info)
        await self._check_backlog(info.name)
        start = self.rules.accept(job_id, info, request, asked)
        if tracing.enabled():
            made = tracing.new_job_context(REQUEST_HEADERS.get())
            if made is not None:
                start.trace, start.trace_parent = made
        # The StartJob is the durable record: if this process dies before creating the
        # snapshot, the StartJob's handler creates it.
        with tracing.within(start.trace):
            await self.publish(
                self.names.supervisor_for(job_id),
                start,
                msg_id=msg_id(job_id, 0, "start"),
                within=_SUBMIT_OUTAGE_S,
            )
        snapshot = self.rules.new_snapshot(start)
        snapshot.cause = "submit"  # its outbox goes out with the StartJob's transition
        data = encode(snapshot)
        try:
            revision = await self._write(job_id, data, last=0)
        except _Conflict:
            # The job exists: a concurrent submit with the same job_id, or the handler won.
            existing, _revision = await self._load(job_id)
            if existing is not None:
                return await self._accepted_again(existing, asked, info)
        else:
            self._remember(snapshot, data, revision)  # so that the StartJob skips a KV read
        if snapshot.flow_key is not None:
            # Its place under its key is taken now, before the answer: jobs submitted one
            # after another queue in that order (the StartJob's handler asks the same).
            await self._admit(snapshot)
        return SubmitReply(job_id=job_id, warning=await self._offline_warning(info))

    async def _check_backlog(self, agent: str) -> None:
        """Refuse a new job (`BusyError`) while the agent's steps waiting for a process
        (its consumer's undelivered messages) are past `RIG_MAX_BACKLOG`: better a quick
        "try again" than work accepted that cannot start for minutes. Nothing accepted
        is ever dropped; the count is read at most every `_BACKLOG_TTL_S` per agent."""
        now = time.monotonic()
        seen = self._backlogs.get(agent)
        if seen is None or now - seen[0] > _BACKLOG_TTL_S:
            try:
                info = await self.js.consumer_info(
                    self.names.work_stream, self.names.agent_durable(agent)
                )
                waiting = info.num_pending or 0
            except NotFoundError:
                waiting = 0  # no process of it ever started: the reply warns of that
            seen = self._backlogs[agent] = (now, waiting)
        if seen[1] >= self.config.max_backlog:
            child(BUSY, agent).inc()
            raise BusyError(
                f"agent {agent!r} has {seen[1]} steps waiting for a process, past the bound "
                f"of {self.config.max_backlog} (RIG_MAX_BACKLOG): nothing was accepted; "
                f"submit again in {_BUSY_RETRY_S:g} s, or start more processes of it",
                agent=agent,
                retry_after=_BUSY_RETRY_S,
            )

    async def _accepted_again(self, job: JobSnapshot, asked: str, info: AgentInfo) -> SubmitReply:
        """A job id submitted again: the same request is the same job, another is a conflict."""
        if job.request_hash != asked:
            raise JobConflictError(
                f"job id {job.job_id!r} is taken by another request (agent {job.agent!r}, "
                f"{job.status}); submit the same request to get the same job, or pick another id",
                job_id=job.job_id,
                agent=job.agent,
            )
        return SubmitReply(job_id=job.job_id, warning=await self._offline_warning(info))

    async def _offline_warning(self, info: AgentInfo) -> str | None:
        """Why a job of this agent may not run soon: no live instance of the agent.

        The rule: such a job is accepted (it is stored, and runs when an instance
        starts), with this warning in the reply; the stall watchdog tells a person if
        none starts in time.
        """
        try:
            if await self._live(info.name):
                return None
        except Exception as exc:  # the job is stored: a warning we cannot compute is no error
            self.log.warning("presence.unknown", agent=info.name, error=repr(exc))
            return None
        watchdog = (
            f"; after {info.budget.stall_s:g} s without progress a person is told"
            if info.budget.stall_s
            else ""
        )
        return (
            f"no live instance of agent {info.name!r} (none refreshed its presence in the last "
            f"{PRESENCE_TTL_S:g} s): the job waits until one starts{watchdog}"
        )

    async def _live(self, agent: str) -> bool:
        """Whether `agent` has a live process: one presence lookup at a time per agent,
        shared by every submit waiting for it (a thousand submits at once would otherwise
        open a thousand watchers, and the server refuses some)."""
        cached = self._live_cache.get(agent)
        if cached is not None and time.monotonic() - cached[0] < _LIVE_CACHE_S:
            return cached[1]
        lookup = self._live_lookups.get(agent)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_live(agent))
            self._live_lookups[agent] = lookup
            lookup.add_done_callback(lambda _: self._live_lookups.pop(agent, None))
        return await asyncio.shield(lookup)

    async def _look_live(self, agent: str) -> bool:
        async with asyncio.timeout(_PUBLISH_TIMEOUT_S):
            live = bool(await live_agents(self.js, self.names, agent))
        self._live_cache[agent] = (time.monotonic(), live)
        return live

    async def status(self, request: StatusRequest) -> JobInfo:
        snapshot, _revision = await self._load(request.job_id)
        if snapshot is None:
            raise UnknownJobError(f"no job {request.job_id!r}", job_id=request.job_id)
        info = snapshot.info()
        if snapshot.flow_key is not None and snapshot.status == "accepted":
            record, _ = await self._flow_record(snapshot.flow_key)
            if record is not None and snapshot.job_id not in record.running:
                info.queued = flows.position(record, snapshot.job_id)  # why it waits
        return info

    async def resolve(self, request: ResolveRequest) -> JobInfo:
        """A person takes an edge for a job waiting for a human; the job runs on from it.

        Checked here against the stored job (a mistake is answered at once), then carried
        out as a durable `ResolveJob`, so that nothing it must publish is lost if a
        supervisor dies half-way.
        """
        self._fits(request.args, "a person's arguments")
        job, revision = await self._stored_at(request.job_id)
        if self.rules.resolved_already(job, request):
            return await self._answer_again(job, revision)
        graph = await self._graph_of(job)
        rules = await self._rules_for(graph, job.state, request.edge, request.args.get("tool"))
        rules.check_resolve(job, graph, request)
        command = ResolveJob(job_id=job.job_id, command_id=uuid.uuid4().hex, request=request)
        return await self._carry_out(command)

    async def cancel(self, request: CancelRequest) -> JobInfo:
        """End a job that is not terminal, whatever it is doing, as `cancelled` (durably,
        like `resolve`)."""
        self.rules.check_cancel(await self._stored(request.job_id))
        command = CancelJob(job_id=request.job_id, command_id=uuid.uuid4().hex, request=request)
        return await self._carry_out(command)

    async def signal(self, request: SignalRequest) -> JobInfo:
        """Deliver a signal to a job waiting for it (checked here, carried out durably,
        like `resolve`); one whose `signal_id` was delivered already is answered again."""
        self._fits(request.data, "a signal's data")
        job, revision = await self._stored_at(request.job_id)
        if self.rules.signalled_already(job, request):
            return await self._answer_again(job, revision)
        self.rules.check_signal(job, await self._graph_of(job), request)
        command = SignalJob(job_id=job.job_id, command_id=uuid.uuid4().hex, request=request)
        return await self._carry_out(command)

    def _fits(self, value: Any, what: str) -> None:
        """Refuse a value from outside larger than `RIG_MAX_INPUT_BYTES` (or than a
        quarter of the server's max_payload: a job carries its input in its snapshot)."""
        size = len(encode(value))
        if size > self._max_input:
            raise PayloadTooLargeError(
                f"{what} is {size} bytes; it may be at most {self._max_input} "
                "(RIG_MAX_INPUT_BYTES, and a quarter of the server's max_payload): pass a "
                "reference to large data instead",
                size=size,
                limit=self._max_input,
            )

    async def _stored(self, job_id: str) -> JobSnapshot:
        return (await self._stored_at(job_id))[0]

    async def _stored_at(self, job_id: str) -> tuple[JobSnapshot, int]:
        snapshot, revision = await self._load(job_id)
        if snapshot is None:
            raise UnknownJobError(f"no job {job_id!r}", job_id=job_id)
        return snapshot, revision

    async def _answer_again(self, job: JobSnapshot, revision: int) -> JobInfo:
        """The answer to a retried resolve or signal whose first try was carried out, once
        what that try published is out: its supervisor may have been cut off between
        writing the snapshot and publishing its outbox (the Jepsen harness, seed 11), and
        whoever is told `ok` may read the journal next."""
        if job.outbox and self._sent.get(job.job_id) != revision:
            try:
                await self._carry_over(job, revision)
            except Exception as exc:  # carried out, not yet told: not a refusal
                raise UnavailableError(
                    f"this was carried out for job {job.job_id}, but its events could not be "
                    f"published just now ({exc!r}); ask again under the same id",
                    job_id=job.job_id,
                ) from exc
        return job.info()

    async def _carry_out(self, command: ResolveJob | CancelJob | SignalJob) -> JobInfo:
        """Publish a person's command to the work stream; answer with its outcome."""
        reply_to = self.nc.new_inbox()
        sub = await self.nc.subscribe(reply_to, max_msgs=1)
        try:
            command.reply_to = reply_to
            await self.publish(
                self.names.supervisor_for(command.job_id),
                command,
                msg_id=msg_id(command.job_id, 0, f"{command.kind}-{command.command_id}"),
            )
            try:
                answer = await sub.next_msg(timeout=_COMMAND_WAIT_S)
            except TimeoutError:
                # Not a refusal: it will happen. `unavailable` says "ask again", which is
                # safe (a resolve or signal under the same id is carried out once).
                raise UnavailableError(
                    f"the {command.kind} of job {command.job_id} is stored and will be carried "
                    f"out, but no supervisor confirmed it within {_COMMAND_WAIT_S:g} s; "
                    f"`rig status {command.job_id}` shows when it is",
                    job_id=command.job_id,
                ) from None
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        body = decode_as(_CommandReply, answer.data)[0]
        if body.error is not None:
            raise error_from_dict(body.error)
        assert body.job is not None
        return body.job

    async def _on_command(self, command: ResolveJob | CancelJob | SignalJob) -> None:
        """Carry out a person's resolve or cancel, or a signal; tell the waiting API call
        how it went."""
        if isinstance(command, ResolveJob):
            apply = self._resolving(command.request)
        elif isinstance(command, SignalJob):
            apply = self._signalling(command.request)
        else:
            apply = self._cancelling(command.request)
        try:
            job = await self._transition(
                command.job_id, apply, cause=f"{command.kind}:{command.command_id}", fresh=True
            )
            reply = _CommandReply(job=job.info())
        except UnknownJobError as exc:
            if (
                isinstance(command, CancelJob) and command.by_parent
            ):  # the child's start is on its way: cancel it once stored
                raise RetryableError(
                    f"child job {command.job_id} is not stored yet", delay=0.2
                ) from exc
            reply = _CommandReply(error=exc.to_dict())
        except JobStateError as exc:  # changed since the API checked
            reply = _CommandReply(error=exc.to_dict())
        if command.reply_to and answerable(command.reply_to):
            with contextlib.suppress(Exception):  # the caller may have given up: fine
                await self.nc.publish(command.reply_to, encode(reply))

    def _resolving(
        self, request: ResolveRequest
    ) -> Callable[[JobSnapshot], Awaitable[JobSnapshot | None]]:
        async def apply(job: JobSnapshot) -> JobSnapshot | None:
            if self.rules.resolved_already(job, request):
                return None  # carried out already (this command came back): nothing to do
            graph = await self._graph_of(job)
            rules = await self._rules_for(graph, job.state, request.edge, request.args.get("tool"))
            return rules.resolve(job, graph, request)

        return apply

    def _signalling(
        self, request: SignalRequest
    ) -> Callable[[JobSnapshot], Awaitable[JobSnapshot | None]]:
        async def apply(job: JobSnapshot) -> JobSnapshot | None:
            if self.rules.signalled_already(job, request):
                return None  # delivered already (this command came back): nothing to do
            return self.rules.signal(job, await self._graph_of(job), request)

        return apply

    def _cancelling(
        self, request: CancelRequest
    ) -> Callable[[JobSnapshot], Awaitable[JobSnapshot | None]]:
        async def apply(job: JobSnapshot) -> JobSnapshot:
            try:  # to name the tool of a call the job waits for
                graph: Graph | None = await self._graph_of(job)
            except NonRetryableError:  # its graph's version is gone: cancel it all the same
                graph = None
            return self.rules.cancel(job, request, graph)

        return apply

    async def inbox(self, request: InboxRequest) -> InboxReply:
        """The jobs waiting for a person, oldest first."""
        # In one pass (`kv_latest`): a KV watcher (`keys()`) opened just after the server
        # restarted could report no key at all.
        found = []
        async for _key, value in kv_latest(self.js, self.names.inbox_bucket):
            escalation = decode_as(Escalation, value)[0]
            if request.agent is None or escalation.agent == request.agent:
                found.append(escalation)
        return InboxReply(jobs=sorted(found, key=lambda e: e.since))

    # --- reports -----------------------------------------------------------------

    async def on_message(self, message: Any, delivery: Delivery) -> None:
        """Apply one report (or a person's command) to its job; drop it if it is stale."""
        sender = self.names.sender_of(delivery.subject)
        why = forged(message, sender)
        if why is not None:
            self._refuse(ForgedReportError(why, job_id=message.job_id, subject=delivery.subject))
        if isinstance(message, ResolveJob | CancelJob | SignalJob):
            await self._on_command(message)
            return
        if isinstance(message, ThreadEnded):
            await self._on_thread_ended(message)
            return
        if isinstance(message, FlowEnded):
            await self._on_flow_ended(message)
            return
        start = message if isinstance(message, StartJob) else None
        if start is not None:
            cause = "start"
        elif isinstance(message, ChildEnded):
            cause = f"child_ended:{message.child}"
        elif isinstance(message, ThreadNext):
            cause = f"thread_next:{message.thread}"
        elif isinstance(message, FlowNext):
            cause = f"flow_next:{message.key}"
        else:
            cause = f"{message.kind}:{message.step}"
        try:
            await self._transition(
                message.job_id,
                lambda job: self._apply(job, message, sender),
                cause=cause,
                start=start,
            )
        except UnknownJobError as exc:  # never retried: dead-lettered with the reason
            raise NonRetryableError(
                f"{message.kind} for {exc.message}", job_id=message.job_id
            ) from exc
        except ForgedReportError as exc:
            self._refuse(exc)

    def _refuse(self, exc: ForgedReportError) -> NoReturn:
        """Count a forged report and raise it: dead-lettered with the reason, never applied
        (and its letter moves no job: `on_dead_letter`)."""
        self.counts["forged_reports"] = self.counts.get("forged_reports", 0) + 1
        child(FORGED_REPORTS, str(exc.details.get("sender", "api"))).inc()
        self.log.warning("report.forged", reason=exc.message, job_id=exc.details.get("job_id"))
        raise exc

    async def on_timer(
        self,
        check: DeadlineCheck | StallCheck | SignalTimeout | ScheduleTick | FlowTick,
        delivery: Delivery,
    ) -> None:
        """A job's deadline, stall check or signal timeout, or a schedule's tick: wait for
        it on the server, then act if due."""
        left = timer_due(check, delivery) - SERVER_CLOCK.now()  # the servers' time
        if left > 0:
            # Asked again at least every TIMER_RECHECK_S: a clock that was set right
            # meanwhile is heeded within that.
            raise RetryableError("not due yet", delay=min(left, TIMER_RECHECK_S), routine=True)
        try:
            if isinstance(check, ScheduleTick):
                await self.scheduler.on_tick(check)
            elif isinstance(check, FlowTick):
                await self._on_flow_tick(check)
            elif isinstance(check, StallCheck):
                await self._on_stall(check)
            elif isinstance(check, SignalTimeout):
                await self._on_signal_timeout(check)
            else:
                await self._on_deadline(check)
        except UnknownJobError:
            self.log.warning("timer.no_job", kind=check.kind)  # nothing left to time

    async def _on_deadline(self, check: DeadlineCheck) -> None:
        async def apply(job: JobSnapshot) -> JobSnapshot | None:
            return self.rules.deadline(job, await self._graph_of(job), check)

        await self._transition(check.job_id, apply, cause=f"deadline:{check.at!r}")

    async def _on_signal_timeout(self, check: SignalTimeout) -> None:
        async def apply(job: JobSnapshot) -> JobSnapshot | None:
            return self.rules.signal_timeout(job, await self._graph_of(job), check)

        await self._transition(check.job_id, apply, cause=f"signal_timeout:{check.step}")

    async def _on_stall(self, check: StallCheck) -> None:
        """The stall watchdog (`Rules.stall`); a job that moved gets its next check."""
        again: list[StallCheck] = []

        async def apply(job: JobSnapshot) -> JobSnapshot | None:
            again.clear()
            on_stuck = (await self._agent(job.agent)).on_stuck
            after, next_check = self.rules.stall(job, await self._graph_of(job), check, on_stuck)
            again.extend([next_check] if next_check is not None else [])
            return after

        await self._transition(check.job_id, apply, cause=f"stall:{check.arm}:{check.seq}")
        for next_check in again:
            await self.publish(
                self.names.timer,
                next_check,
                msg_id=msg_id(check.job_id, next_check.seq, f"stall{next_check.arm}"),
            )

    # --- dead letters --------------------------------------------------------------

    async def on_dead_letter(self, letter: DeadLetter, delivery: Delivery) -> None:
        """A message of a job could not be handled: the job must not wait for it forever.

        A letter for the job's current step (or a job-wide one, like its timer) hands the
        job to a person with the reason (or fails it, by the agent's `on_stuck`); one for
        a job that has moved on, or ended, changes nothing. A letter of this consumer's
        own is never acted on, so a broken letter cannot loop; nor is an undelivered
        webhook's (the job it tells of has ended or waits for a person already).
        """
        if letter.actor in (self.names.dlq_durable, self.names.webhook_durable):
            return  # a webhook that could not be delivered changes nothing of its job
        if letter.error.get("code") == ForgedReportError.code:
            return  # refused, not lost: the job waits for its real report
        job_id, step, kind = _letter_job(letter)
        if job_id is None:
            self.log.info("dlq.no_job", letter_actor=letter.actor, subject=letter.subject)
            return
        what = f"a {kind} message" + (f" of step {step}" if step is not None else "")
        reason = (
            f"{what} was dead-lettered by {letter.actor} after {letter.deliveries} "
            f"deliveries: {letter.reason} (see `rig dlq ls`; letter {delivery.stream_seq})"
        )

        async def apply(job: JobSnapshot) -> JobSnapshot | None:
            if job.terminal:
                return None
            on_stuck = (await self._agent(job.agent)).on_stuck
            return self.rules.dead_letter(job, await self._graph_of(job), step, reason, on_stuck)

        # A job whose start was dead-lettered before it was stored (a child job: its
        # parent's transition sent the start) is stored from the letter, and fails.
        start = _letter_start(letter) if kind == "start" else None
        try:
            await self._transition(job_id, apply, cause=f"dlq:{delivery.stream_seq}", start=start)
        except UnknownJobError:
            self.log.info("dlq.unknown_job", job_id=job_id)

    async def _transition(
        self,
        job_id: str,
        apply: Callable[[JobSnapshot], Awaitable[JobSnapshot | None]],
        *,
        cause: str,
        start: StartJob | None = None,
        fresh: bool = False,
    ) -> JobSnapshot:
        """`_move`, one at a time per job in this process (another replica's are kept
        apart by the compare-and-set)."""
        moving = self._moving.get(job_id)
        if moving is None:
            moving = self._moving[job_id] = (asyncio.Lock(), [0])
        lock, users = moving
        users[0] += 1
        try:
            async with lock:
                return await self._move(job_id, apply, cause=cause, start=start, fresh=fresh)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._moving[job_id]

    async def _move(
        self,
        job_id: str,
        apply: Callable[[JobSnapshot], Awaitable[JobSnapshot | None]],
        *,
        cause: str,
        start: StartJob | None,
        fresh: bool,
    ) -> JobSnapshot:
        """Read the job, let `apply` change it, write it back by compare-and-set, publish.

        `cause` names the message being handled. If the stored snapshot was written by
        this very message (it came back: its handler died after the write), nothing is
        applied again; its outbox is published again, under the same message ids. Else
        `apply` returns the next snapshot, or None when there is nothing to do (a stale
        report). A lost compare-and-set re-reads the job and applies again. `fresh` (a
        person's request, which `apply` may refuse) reads the stored snapshot, never this
        process's copy: a refusal must be about the job as it is.
        """
        for attempt in range(_CAS_ATTEMPTS):
            # This process's copy, taken out of the cache: this transition may change it,
            # and it goes back only once written and sent (`_remember`).
            held = self._snapshots.pop(job_id, None) if not fresh and attempt == 0 else None
            cached = held is not None
            if not fresh and attempt == 0:
                if cached:
                    self.cache_hits += 1
                else:
                    self.cache_misses += 1
            stored: bytes | None
            if held is not None:
                snapshot, stored, revision = held
            else:
                stored, revision = await self._read(job_id)
                snapshot = self._snapshot_of(job_id, stored, start)
            if snapshot.cause == cause:
                if cached:  # only the stored snapshot can say what is published
                    continue
                self.log.info("outbox.resent", cause=cause, messages=len(snapshot.outbox))
                await self._send(snapshot)
                self._mark_sent(job_id, revision)
                return snapshot
            if (
                snapshot.outbox
                # A submit's outbox (the `accepted` event) goes out with its StartJob's
                # transition; a cancel that comes first must send it, or the journal
                # would start at 2 (the Jepsen harness, seed 7).
                and not (snapshot.cause == "submit" and cause == "start")
                and stored is not None
                and self._sent.get(job_id) != revision
            ):
                if cached:
                    # Only the stored snapshot can say what is unpublished: this copy may
                    # be long out of date (a submit answered here, the job run and ended
                    # by another replica), and its outbox, sent again past the stream's
                    # duplicate window, would be stored twice (the Jepsen harness, seed 16).
                    continue
                # Another cause moves the job: what the last transition had to publish
                # goes out first, or its events would be lost with its outbox.
                await self._carry_over(snapshot, revision)
            status_before, waited = snapshot.status, snapshot.escalation  # apply may change both
            snapshot.new_events.clear()
            snapshot.cancels.clear()  # the kept copy still holds the last transition's
            after = await apply(snapshot)
            if after is None and cached:
                # Our copy may be old (another replica moved the job): only the stored
                # snapshot can say that a report is stale.
                continue
            if after is None:
                self.stale_reports += 1
                self.log.info("report.stale", cause=cause, job_step=snapshot.step)
                return snapshot
            rules = self.rules
            # At a step boundary the newest graph may take the job.
            latest = await self._agent(after.agent) if after.phase == "decide" else None
            after = rules.settle(after, cause=cause, status_before=status_before, latest=latest)
            data = encode(after)
            event = max(
                (len(o.data) for o in after.outbox if o.subject.startswith(self._journal[0])),
                default=0,
            )
            if len(data) > self._max_snapshot or event > self._max_event:
                # The change does not fit: the job, as it was, ends saying why.
                before = self._snapshot_of(job_id, stored, start)
                if event > self._max_event:
                    what, size, limit = "a journal event", event, self._max_event
                else:
                    what, size, limit = "the job's state", len(data), self._max_snapshot
                after, largest = rules.too_large(before, after, size, limit, what=what)
                self.log.error("job.too_large", job_id=job_id, bytes=size, largest=largest)
                after.cause, after.updated_at = cause, rules.now
                data = encode(after)
            try:
                revision = await self._write(
                    job_id, data, last=revision, headers=rules.expiry(after)
                )
            except _Conflict:
                # Another supervisor moved the job first (or our copy was old): read the
                # snapshot again and decide again.
                continue
            observe_events(after.agent, after.new_events, created_at=after.created_at)
            if after.terminal and status_before not in TERMINAL_STATUSES:
                self.counts["jobs_finished"] = self.counts.get("jobs_finished", 0) + 1
            if after.trace is not None:
                _trace_transition(after, status_before, waited, rules.now)
            after.new_events.clear()
            crash_point(f"after_write_{cause.split(':', 1)[0]}", after.agent)
            if after.terminal:  # a job's end is written, what it tells (a parent) not sent
                crash_point("after_write_end", after.agent)
            if after.status != status_before:  # a few lines per job, for `rig logs JOB`
                self.log.info(
                    "job.status",
                    job_id=job_id,
                    status=after.status,
                    state=after.state,
                    step=after.step,
                    reason=after.escalation.reason if after.escalation else None,
                )
            await self._send(after)
            self._mark_sent(job_id, revision)
            await self._stop_calls(after)
            self._remember(after, data, revision)
            return after
        raise RetryableError("the job's snapshot kept changing under us", delay=0.05)

    async def _stop_calls(self, job: JobSnapshot) -> None:
        """Tell the executors of each call the transition stopped waiting for (core NATS,
        best effort: an executor that misses it lets the call finish, and its result is
        stale here)."""
        for cancel in job.cancels:
            self.log.info("tool.cancel_sent", job_id=job.job_id, step=cancel.step, tool=cancel.tool)
            try:
                await self.nc.publish(self.names.tool_cancel(cancel.tool), encode(cancel))
            except Exception as exc:  # a closed or reconnecting connection: best effort
                self.log.warning("tool.cancel_unsent", job_id=job.job_id, error=repr(exc))

    async def _apply(
        self, job: JobSnapshot, message: Any, sender: tuple[str, str] | None = None
    ) -> JobSnapshot | None:
        """The next snapshot after `message`, or None if `message` is not for this step."""
        if isinstance(message, StartJob | ThreadNext | FlowNext):
            if job.parent is not None:
                return await self._start_child(job)
            if job.thread is not None:
                return await self._start_in_thread(job)
            if job.flow_key is not None:
                return await self._start_in_flow(job)
            return self.rules.start(job, (await self._agent(job.agent)).graph)
        if job.terminal:
            return None
        if isinstance(message, ChildEnded):
            return self.rules.child_ended(job, await self._graph_of(job), message)
        decided_on = None
        if isinstance(message, Decision) and message.graph_version not in (
            None,
            job.graph_version,
        ):
            decided_on = await self._version(job, message.graph_version)
        graph = await self._graph_of(job)
        rules = self.rules
        if isinstance(message, Decision) and message.tool is not None:
            rules = await self._rules_for(graph, job.state, message.edge, message.tool)
        return rules.report(job, message, graph, decided_on, sender=sender)

    async def _rules_for(self, graph: Graph, state: str | None, edge: str, tool: Any) -> Rules:
        """The rules of a transition whose decision picked `tool` on `edge`: with who
        serves it (one catalog read), when the edge offers it only as one of an
        executor's tools (`<executor>.*`)."""
        found = graph.edge(state, edge)
        if not isinstance(tool, str) or found is None:
            return self.rules
        for key in owners_to_ask(found, tool):
            if self._catalog is None:
                try:
                    self._catalog = await self.js.key_value(self.names.tools_bucket)
                except (BucketNotFoundError, NotFoundError):
                    return self.rules  # a topology from before the catalog: no executor's set
            if (await kv_read(self._catalog, key))[0]:
                return Rules(
                    self.names, time.time(), self.config.retention, {tool: key[: -len(tool) - 1]}
                )
        return self.rules

    # --- concurrency keys -----------------------------------------------------------------

    async def _admit(self, job: JobSnapshot) -> tuple[FlowRecord, bool]:
        """Take a place under the job's key, or a place in its queue (compare-and-set);
        the record, and whether the job runs now. Asked again, the same answer. A
        debounced submit replaces the one before it (cancelled); what waits for the clock
        (a rate, a debounce window) gets a `FlowTick`."""
        assert job.flow_key is not None
        for _attempt in range(_CAS_ATTEMPTS):
            record, revision = await self._flow_record(job.flow_key)
            if record is None:
                record = FlowRecord(key=job.flow_key, limit=job.flow_limit)
            before = record.model_copy(deep=True)
            now = time.time()
            runs, replaced = admit(record, job, now)
            if record == before or await self._put_flow(record, revision):
                break
        else:
            raise RetryableError("the key's record kept changing under us", delay=0.05)
        if replaced is not None:
            later = "a later submit" if replaced == job.job_id else f"job {job.job_id}"
            reason = f"debounced: {later} came for key {job.flow_key}"
            with contextlib.suppress(JobStateError, UnknownJobError):
                await self.cancel(CancelRequest(job_id=replaced, reason=reason))
        await self._flow_tick(record, now)
        return record, runs

    async def _flow_tick(self, record: FlowRecord, now: float) -> None:
        """Wake the key when its clock allows what waits (once per time: the message id)."""
        at = next_tick(record, now)
        if at is not None:
            tick = FlowTick(key=record.key, at=at, armed=now)
            await self.publish(
                self.names.timer, tick, msg_id=msg_id(record.key, int(at * 1000), "flow-tick")
            )

    async def _on_flow_tick(self, tick: FlowTick) -> None:
        """A key's clock allows a start: start what it now allows."""
        for _attempt in range(_CAS_ATTEMPTS):
            record, revision = await self._flow_record(tick.key)
            if record is None:
                return
            before = record.model_copy(deep=True)
            now = time.time()
            starting = pump(record, now)
            if record == before or await self._put_flow(record, revision):
                break
        else:
            raise RetryableError("the key's record kept changing under us", delay=0.05)
        await self._flow_next(tick.key, starting)
        await self._flow_tick(record, now)

    async def _flow_next(self, key: str, starting: list[str]) -> None:
        for job_id in starting:
            await self.publish(
                self.names.supervisor_for(job_id),
                FlowNext(job_id=job_id, key=key),
                msg_id=msg_id(job_id, 0, "flow-next"),
            )

    async def _start_in_flow(self, job: JobSnapshot) -> JobSnapshot | None:
        """A job with a concurrency key starts if its key has room; otherwise it waits
        (`FlowNext` starts it)."""
        if job.status != "accepted":
            return None
        record, runs = await self._admit(job)
        if runs:
            waited = max(time.time() - job.created_at, 0.0)
            child(QUEUED_SECONDS, job.agent).observe(waited)
        return flows.start(self.rules, job, await self._agent(job.agent), record, runs)

    async def _on_flow_ended(self, ended: FlowEnded) -> None:
        """A job with a key ended: its place goes to the next waiting ones."""
        for _attempt in range(_CAS_ATTEMPTS):
            record, revision = await self._flow_record(ended.key)
            if record is None:
                return
            now = time.time()
            changed, starting = released(record, ended.job_id, now)
            if not changed or await self._put_flow(record, revision):
                break
        else:
            raise RetryableError("the key's record kept changing under us", delay=0.05)
        await self._flow_next(ended.key, starting)
        await self._flow_tick(record, now)

    async def _flow_record(self, key: str) -> tuple[FlowRecord | None, int]:
        if self._flows is None:
            self._flows = await self.js.key_value(self.names.flows_bucket)
        data, revision = await kv_read(self._flows, key)
        return (decode_as(FlowRecord, data)[0] if data else None), revision

    async def _put_flow(self, record: FlowRecord, revision: int) -> bool:
        """Compare-and-set a key's record; False if another change came first."""
        record.updated_at = time.time()
        subject = kv_subject(self.names.flows_bucket, record.key)
        return await self._put_record(subject, encode(record), revision)

    async def _put_record(
        self, subject: str, data: bytes, revision: int, headers: dict[str, str] | None = None
    ) -> bool:
        """Compare-and-set a record of a bucket (a thread's, a key's); False if another
        change came first."""
        try:
            await self.publisher.stored(
                subject,
                data,
                {Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(revision), **(headers or {})},
                timeout=_PUBLISH_TIMEOUT_S,
            )
        except PublishError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                return False
            raise
        return True

    # --- threads -----------------------------------------------------------------------

    async def _start_in_thread(self, job: JobSnapshot) -> JobSnapshot | None:
        """A turn of a thread starts if the thread runs no other (its record, compare-and-
        set, names this job the active one), with the thread's earlier turns in its
        context; otherwise it waits its turn (`ThreadNext` starts it), or is refused."""
        if job.status != "accepted":
            return None
        assert job.thread is not None
        info = await self._agent(job.agent)
        for _attempt in range(_CAS_ATTEMPTS):
            record, revision = await self._thread_record(job.thread)
            if record is None:
                record = ThreadRecord(thread=job.thread, agent=job.agent)
            before = record.model_copy(deep=True)
            runs = take_turn(record, job)
            if record == before or await self._put_thread(record, revision):
                break
        else:
            raise RetryableError("the thread's record kept changing under us", delay=0.05)
        if not runs:
            self.log.info("thread.busy", job_id=job.job_id, thread=job.thread, runs=record.active)
        return self.rules.start_turn(job, info, record, runs, self.config.sizes.thread_tokens)

    async def _on_thread_ended(self, ended: ThreadEnded) -> None:
        """A turn ended: the thread keeps it, and its next waiting job starts."""
        for _attempt in range(_CAS_ATTEMPTS):
            record, revision = await self._thread_record(ended.thread)
            if record is None:
                return  # the thread expired: nothing waits on it
            if not thread_ended(record, ended) or await self._put_thread(record, revision):
                break
        else:
            raise RetryableError("the thread's record kept changing under us", delay=0.05)
        crash_point("after_thread_record")  # the record moved on, the next turn not told
        if record.active is not None and record.active != ended.job_id:
            await self.publish(
                self.names.supervisor_for(record.active),
                ThreadNext(job_id=record.active, thread=ended.thread),
                msg_id=msg_id(record.active, 0, "thread-next"),
            )

    async def _thread_record(self, thread: str) -> tuple[ThreadRecord | None, int]:
        if self._threads is None:
            self._threads = await self.js.key_value(self.names.threads_bucket)
        data, revision = await kv_read(self._threads, thread)
        return (decode_as(ThreadRecord, data)[0] if data else None), revision

    async def _put_thread(self, record: ThreadRecord, revision: int) -> bool:
        """Compare-and-set the thread's record; False if another change came first. It
        expires `RIG_RETENTION` after its last change."""
        record.updated_at = time.time()
        subject = kv_subject(self.names.threads_bucket, record.thread)
        expiry = {Header.TTL: str(int(self.config.retention))}
        return await self._put_record(subject, encode(record), revision, expiry)

    async def _start_child(self, job: JobSnapshot) -> JobSnapshot | None:
        """A child job's first transition: it starts if its parent still waits for it
        (read now: a cancel of the parent may have come first) and its agent is known;
        otherwise it ends at once, and its end moves the parent."""
        if job.status != "accepted":
            return None
        assert job.parent is not None
        try:
            info = await self._agent(job.agent)
        except UnknownAgentError as exc:
            return self.rules.finish(job, "failed", error=exc.to_dict())
        parent, _revision = await self._load(job.parent.job_id)
        if job.trace is None and job.trace_parent is not None and tracing.enabled():
            made = tracing.new_job_context({"traceparent": job.trace_parent})  # under the parent's
            if made is not None:
                job.trace, job.trace_parent = made
        return self.rules.start_child(job, info, parent)

    @property
    def rules(self) -> Rules:
        """The rules of a transition made now (`actors/jobs/rules.py`: pure, no I/O)."""
        return Rules(self.names, time.time(), self.config.retention)

    async def _write(
        self, job_id: str, data: bytes, *, last: int, headers: dict[str, str] | None = None
    ) -> int:
        """Compare-and-set the snapshot (`last=0`: create); return the new revision."""
        try:
            return await self.publisher.stored(
                kv_subject(self.names.jobs_bucket, job_id),
                data,
                {Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(last), **(headers or {})},
                timeout=_PUBLISH_TIMEOUT_S,
            )
        except PublishError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise _Conflict from exc
            raise

    async def _carry_over(self, job: JobSnapshot, revision: int) -> None:
        """Publish the stored outbox of a job that another cause is about to move, unless
        it is out already: the writer of that snapshot may have died (or failed to
        publish) before sending it, and only the redelivery of its own cause would send
        it again. Whether it is out: the journal's last message for the job is the
        outbox's last event (by message id); if not, all of it goes (ids deduplicate).
        Only a snapshot this process did not publish itself is checked."""
        events = self.names.events(job.job_id)
        last = next((out for out in reversed(job.outbox) if out.subject == events), None)
        if last is not None:
            try:
                stored = await self.js.get_last_msg(self.names.events_stream, events)
                if (stored.headers or {}).get(Header.MSG_ID) == last.msg_id:
                    self._mark_sent(job.job_id, revision)
                    return
            except NotFoundError:
                pass
        self.log.warning(
            "outbox.carried_over", job_id=job.job_id, cause=job.cause, messages=len(job.outbox)
        )
        await self._send(job)
        self._mark_sent(job.job_id, revision)

    def _mark_sent(self, job_id: str, revision: int) -> None:
        self._sent[job_id] = revision
        self._sent.move_to_end(job_id)
        while len(self._sent) > _SNAPSHOT_CACHE_SIZE:
            self._sent.popitem(last=False)

    async def _send(self, job: JobSnapshot) -> None:
        """Publish the outbox in pipelined rounds, order kept within each. The inbox's
        writes (a KV bucket: another stream, which the server may store after the
        journal's) are stored first, so that whoever reads `waiting_human` in the journal
        finds the job in the inbox, and whoever reads it resumed does not. In a cluster
        (`RIG_REPLICAS` > 1) the journal's events are stored before the work they
        announce is sent: the next transition comes from that work, so no event of it
        can be stored ahead of this one's even when the journal's stream is without a
        leader for a while and the work stream is not. (On one server both streams are
        there or not together, and the round trip is saved.)"""
        kv = [out for out in job.outbox if out.subject.startswith("$KV.")]
        rest = [out for out in job.outbox if not out.subject.startswith("$KV.")]
        rounds = [kv, rest]
        if self.config.replicas > 1:  # streams with leaders of their own: journal first
            journal = [out for out in rest if out.subject.startswith(self._journal)]
            rounds = [kv, journal, [out for out in rest if out not in journal]]
        try:
            for batch in rounds:
                if not batch:
                    continue
                await self.publisher.stored_all(
                    [
                        (
                            out.subject,
                            out.data,
                            tracing.inject_for(
                                {Header.MSG_ID: out.msg_id, **out.headers}, job.trace
                            ),
                        )
                        for out in batch
                    ],
                    timeout=_PUBLISH_TIMEOUT_S,
                )
        except Exception as exc:
            # The snapshot is written: a redelivery of the report re-sends the outbox.
            raise RetryableError(f"publishing the outbox failed: {exc!r}", delay=0.2) from exc

    # --- storage -----------------------------------------------------------------

    async def _load(self, job_id: str) -> tuple[JobSnapshot | None, int]:
        """The job's stored snapshot and its revision."""
        data, revision = await self._read(job_id)
        return (self._decoded(job_id, data) if data else None), revision

    def _decoded(self, job_id: str, data: bytes) -> JobSnapshot:
        """A stored snapshot; one that does not decode is an alarm (an error line, a
        metric) and a typed refusal naming the job, never skipped: only a supervisor
        writes snapshots, so something else did."""
        try:
            return decode_as(JobSnapshot, data)[0]
        except ProtocolError as exc:
            self.log.error("job.snapshot_unreadable", job_id=job_id, error=exc.message)
            SNAPSHOTS_UNREADABLE.inc()
            raise NonRetryableError(
                f"job {job_id}'s stored snapshot does not decode ({exc.message}): it was not "
                "written by a supervisor, and the job cannot move until an operator restores "
                "it (`rig status` shows this until then)",
                job_id=job_id,
            ) from None

    def _snapshot_of(
        self, job_id: str, stored: bytes | None, start: StartJob | None
    ) -> JobSnapshot:
        """The stored snapshot, or a new job's if there is none and `start` creates it."""
        if stored is not None:
            return self._decoded(job_id, stored)
        if start is None:
            raise UnknownJobError(f"no job {job_id!r}", job_id=job_id)
        return self.rules.new_snapshot(start)

    async def _read(self, job_id: str) -> tuple[bytes | None, int]:
        """The job's encoded snapshot (None if there is no job) and its revision."""
        try:
            entry = await self._jobs.get(job_id)
        except (KeyNotFoundError, NotFoundError):
            return None, 0
        if not entry.value:
            return None, 0
        return entry.value, entry.revision or 0

    def _remember(self, job: JobSnapshot, data: bytes, revision: int) -> None:
        """Keep the snapshot just written and sent, decoded, so the next report of this job
        skips a KV read and the decoding and validating of what this process wrote (its
        encoded form stays beside it, for a change too large to store).

        Another supervisor may move the job meanwhile; the compare-and-set then fails
        and the snapshot is read again, so the cache only ever saves work.
        """
        if job.terminal:
            self._snapshots.pop(job.job_id, None)
            return
        self._snapshots[job.job_id] = (job, data, revision)
        self._snapshots.move_to_end(job.job_id)
        while len(self._snapshots) > _SNAPSHOT_CACHE_SIZE:
            self._snapshots.popitem(last=False)

    async def _graph_of(self, job: JobSnapshot) -> Graph:
        """The graph the job runs on: the version it started with (or migrated to)."""
        if job.graph_version is None:
            return (await self._agent(job.agent)).graph
        return (await self._version(job, job.graph_version)).graph

    async def _version(self, job: JobSnapshot, version: str) -> AgentInfo:
        """One registered version of the job's agent (RIG_GRAPHS; it never changes)."""
        latest = await self._agent(job.agent)
        if latest.graph.version == version:
            return latest
        key = f"{job.agent}.{version}"
        if key not in self._versions:
            try:
                entry = await self._graphs.get(key)
            except (KeyNotFoundError, NotFoundError):
                entry = None
            if entry is None or not entry.value:
                raise NonRetryableError(
                    f"job {job.job_id} needs version {version} of agent {job.agent!r}'s "
                    f"graph, which is not in {self.names.graphs_bucket}",
                    job_id=job.job_id,
                )
            self._versions[key] = decode_as(AgentInfo, entry.value)[0]
        return self._versions[key]

    async def _agent(self, name: str) -> AgentInfo:
        cached = self._agent_cache.get(name)
        if cached is not None and time.monotonic() - cached[0] < _AGENT_CACHE_S:
            return cached[1]
        try:
            entry = await self._agents.get(name)
        except (KeyNotFoundError, NotFoundError):
            entry = None
        if entry is None or entry.value is None:
            raise UnknownAgentError(
                f"no agent named {name!r} has registered (start one with `rig actor run`)",
                agent=name,
            )
        info, _ = decode_as(AgentInfo, entry.value)
        self._agent_cache[name] = (time.monotonic(), info)
        return info


class _CommandReply(BaseModel):
    """What the supervisor carrying out a `ResolveJob`/`CancelJob` tells the API call."""

    job: JobInfo | None = None
    error: dict[str, Any] | None = None


class _Conflict(Exception):
    """The snapshot's revision moved: someone else wrote the job first."""


def _request_hash(request: SubmitRequest) -> str:
    """What a submission asks for (agent, input, limits), to tell a repeat from a conflict."""
    asked = request.model_dump(mode="json", exclude={"job_id"}, exclude_none=True)
    return hashlib.sha256(canonical(asked)).hexdigest()[:32]


def _letter_job(letter: DeadLetter) -> tuple[str | None, int | None, str]:
    """The job, step and kind of message a dead letter holds, as far as it can be read."""
    try:
        body, _ = decode(letter.data, letter.headers)
    except DecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("job_id"), str):
        step = body.get("step")
        return body["job_id"], step if isinstance(step, int) else None, str(body.get("kind", "?"))
    # Undecodable: its Nats-Msg-Id is `<job>:<step>:<kind>` if Rig published it.
    parts = letter.headers.get(Header.MSG_ID, "").split(":")
    if len(parts) >= 3 and parts[1].isdigit():
        return parts[0], int(parts[1]), parts[2]
    return None, None, "?"


def _letter_start(letter: DeadLetter) -> StartJob | None:
    """The `StartJob` a dead letter holds, if it decodes as one."""
    try:
        body, _ = decode(letter.data, letter.headers)
        return StartJob.model_validate(body)
    except (DecodeError, ValueError):
        return None


def _trace_transition(
    after: JobSnapshot, status_before: str, waited: Escalation | None, now: float
) -> None:
    """What a written transition adds to the job's trace: its own attributes on the
    current span; a person's wait (`waited`: the escalation before it), once it is over;
    the job's root, once it ended."""
    assert after.trace is not None
    moved = [e.data for e in after.new_events if e.type == "transition"]
    current = trace.get_current_span()
    current.set_attribute("rig.job.id", after.job_id)
    current.set_attribute("gen_ai.agent.name", after.agent)
    if moved:
        current.set_attribute("rig.transition.from", str(moved[0].get("source")))
        current.set_attribute("rig.transition.to", str(moved[-1].get("target")))
        current.set_attribute("rig.transition.edge", str(moved[-1].get("edge")))
    if status_before == "waiting_human" and after.status != "waiting_human" and waited:
        tracing.emit_span(
            after.trace,
            f"waiting_human {after.agent}",
            start_s=waited.since,
            end_s=now,
            attributes={
                "rig.job.id": after.job_id,
                "rig.escalation.kind": waited.kind,
                "rig.escalation.reason": waited.reason[:500],
            },
        )
    if after.terminal and status_before not in TERMINAL_STATUSES:
        error = (after.error or {}).get("message") if after.status != "succeeded" else None
        tracing.emit_root(
            after.trace,
            after.trace_parent,
            f"job {after.agent}",
            start_s=after.created_at,
            end_s=now,
            attributes={
                "gen_ai.agent.name": after.agent,
                "rig.job.id": after.job_id,
                "rig.job.status": after.status,
                "rig.job.steps": after.step,
                "openinference.span.kind": "CHAIN",
            },
            error=error or (after.status if after.status != "succeeded" else None),
        )


def timer_due(
    check: DeadlineCheck | StallCheck | SignalTimeout | ScheduleTick | FlowTick, delivery: Delivery
) -> float:
    """When a timer is due, by this process's clock. A job's timer is a wait (`at - armed`,
    both by its sender's clock) from when the server stored it: a sender whose clock was
    minutes off (a jump, a paused VM) sets it no later and no sooner. A schedule's tick is
    a time of day (`due`); a timer from before `armed` existed keeps its `at`."""
    if isinstance(check, ScheduleTick):
        return check.due
    if check.armed is None or not delivery.stored_at:
        return check.at
    return delivery.stored_at + max(check.at - check.armed, 0.0)


def partitions_of(instance: str, live: list[str], partitions: int) -> frozenset[int]:
    """The partitions `instance` takes among the `live` replicas: each partition goes to
    the replica with the highest hash of (partition, replica), so a replica that joins
    or leaves moves only its own share, and every replica computes the same split."""
    return frozenset(
        p
        for p in range(partitions)
        if max(live, key=lambda replica: (zlib.crc32(f"{p}:{replica}".encode()), replica))
        == instance
    )


def _instance_id(config: RigConfig) -> str:
    """This replica's name among the supervisors: `RIG_INSTANCE` (`rig up` gives each
    process slot one, so a restarted replica takes its partitions back at once), else
    host and pid."""
    raw = config.instance or f"{socket.gethostname()}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", raw)
