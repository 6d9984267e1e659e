"""The supervisor: owns every job's snapshot and journal, and moves jobs through their graph.

It is the only writer of job state. Agents, tools and verifiers report back to it on
`rig.work.supervisor`; for each report it loads the job's snapshot, checks that the
report answers the job's current step, computes the next snapshot, writes it with
compare-and-set, then publishes what the transition produced (events, next command).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js.errors import KeyNotFoundError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from actors._actor import Actor, Delivery, Endpoint, Inbox
from actors._faults import crash_point
from actors._nats import (
    PRESENCE_TTL_S,
    WRONG_LAST_SEQUENCE,
    PublishError,
    kv_subject,
    live_agents,
)
from protocols import (
    AgentInfo,
    CancelJob,
    CancelRequest,
    DeadLetter,
    DeadlineCheck,
    Decision,
    DecodeError,
    Edge,
    Escalation,
    EscalationKind,
    Event,
    ExhaustedKind,
    Graph,
    Header,
    InboxReply,
    InboxRequest,
    JobConflictError,
    JobContext,
    JobInfo,
    JobSnapshot,
    JobStateError,
    JobStatusName,
    NonRetryableError,
    Outgoing,
    PayloadTooLargeError,
    ResolveJob,
    ResolveRequest,
    RetryableError,
    RigError,
    StallCheck,
    StartJob,
    StatusRequest,
    StepRequest,
    SubmitReply,
    SubmitRequest,
    SupervisorMessage,
    TimerMessage,
    ToolCall,
    ToolResult,
    UnknownAgentError,
    UnknownJobError,
    Verdict,
    VerifyRequest,
    canonical,
    decode,
    decode_as,
    encode,
    error_from_dict,
    msg_id,
)

# How long the supervisor trusts its copy of an agent's registry entry, and of its presence.
_AGENT_CACHE_S = 5.0
_LIVE_CACHE_S = 2.0
# Snapshots of running jobs kept in memory (about 2 KB each).
_SNAPSHOT_CACHE_SIZE = 20_000
# Attempts at a compare-and-set before giving the report back to JetStream.
_CAS_ATTEMPTS = 5
_PUBLISH_TIMEOUT_S = 10.0
# Bytes of a message's max_payload kept for its headers.
_HEADROOM = 1024
# How long `rig.api.resolve|cancel` waits for the supervisor that carries the request out.
_COMMAND_WAIT_S = 8.0


class Supervisor(Actor):
    """Accepts jobs and steps them through their agent's graph; any number may run.

    Consumes: `rig.work.supervisor` (durable `supervisor`): `StartJob`, `Decision`,
    `ToolResult`, `Verdict` (which carries the tool's result when the executor sent the
    result straight to the verifier: two transitions per step, not three); and
    `rig.work.timer` (durable `supervisor-timer`): `DeadlineCheck` and `StallCheck`,
    held back by nak-with-delay until due; and every dead letter, `rig.dlq.>` of
    stream `RIG_DLQ` (durable `supervisor-dlq`), so that a job whose message could
    not be handled is handed to a person (or failed, by the agent's `on_stuck`).
    Publishes: `rig.work.agent.<agent>` (`StepRequest`), `rig.work.tool.<tool>`
    (`ToolCall`), `rig.work.verify.<verifier>` (`VerifyRequest`), the journal on
    `rig.events.<job_id>`, escalations on `rig.escalations` and in `RIG_INBOX`.
    Answers: `rig.api.submit|status|resolve|cancel|inbox` (queue group, JSON or msgpack).

    Every change of a job is made by a durable message (a report, a timer, a dead
    letter, or a person's resolve or cancel, which the API turns into a `ResolveJob` or
    `CancelJob` on `rig.work.supervisor`), and that message is acked only once the
    change's outbox is published. The snapshot names its `cause`: if the message comes
    back (its supervisor died between the write and the publish), whichever supervisor
    gets it publishes the stored outbox again, under the same `Nats-Msg-Id`s. Any
    other message that is not for the job's current step is dropped. No clock decides
    anything. Replicas coordinate only through the snapshot's revision: a lost
    compare-and-set is retried after re-reading.
    """

    name = "supervisor"

    async def on_start(self) -> None:
        self._jobs: KeyValue = await self.js.key_value(self.names.jobs_bucket)
        self._agents: KeyValue = await self.js.key_value(self.names.agents_bucket)
        self._inbox: KeyValue = await self.js.key_value(self.names.inbox_bucket)
        self._presence: KeyValue = await self.js.key_value(self.names.presence_bucket)
        self._graphs: KeyValue = await self.js.key_value(self.names.graphs_bucket)
        self._versions: dict[str, AgentInfo] = {}
        self._agent_cache: dict[str, tuple[float, AgentInfo]] = {}
        self._live_cache: dict[str, tuple[float, bool]] = {}
        self._live_lookups: dict[str, asyncio.Future[bool]] = {}
        self._snapshots: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        # A snapshot is one KV message: room for the headers the write adds.
        self._max_snapshot = self.nc.max_payload - _HEADROOM
        self.stale_reports = 0

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(self.names.api_submit, SubmitRequest, self.submit),
            Endpoint(self.names.api_status, StatusRequest, self.status),
            Endpoint(self.names.api_resolve, ResolveRequest, self.resolve),
            Endpoint(self.names.api_cancel, CancelRequest, self.cancel),
            Endpoint(self.names.api_inbox, InboxRequest, self.inbox),
        ]

    def inboxes(self) -> list[Inbox]:
        return [
            Inbox(
                durable=self.names.supervisor_durable,
                subject=self.names.supervisor,
                model=SupervisorMessage,
                handler=self.on_message,
            ),
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

    # --- the API -----------------------------------------------------------------

    async def submit(self, request: SubmitRequest) -> SubmitReply:
        """Store the job durably, then answer `accepted` with its id."""
        info = await self._agent(request.agent)
        size = len(encode(request.input))
        limit = self.nc.max_payload // 4
        if size > limit:
            raise PayloadTooLargeError(
                f"input is {size} bytes; a job input may be at most {limit} bytes "
                "(a quarter of the server's max_payload, since the job carries it in its snapshot)",
                size=size,
                limit=limit,
            )
        job_id = request.job_id or uuid.uuid4().hex
        asked = _request_hash(request)
        if request.job_id is not None:
            existing, _revision = await self._load(job_id)
            if existing is not None:
                return await self._accepted_again(existing, asked, info)
        budget = info.budget.override(request.limits())
        accepted_at = time.time()
        start = StartJob(
            job_id=job_id,
            agent=info.name,
            input=request.input,
            budget=budget,
            deadline=accepted_at + budget.deadline_s if budget.deadline_s else None,
            on_exhausted=info.on_exhausted,
            accepted_at=accepted_at,
            request_hash=asked,
        )
        # The StartJob is the durable record: if this process dies before creating the
        # snapshot, the StartJob's handler creates it.
        await self.publish(self.names.supervisor, start, msg_id=msg_id(job_id, 0, "start"))
        snapshot = self._new_snapshot(start)
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
        return SubmitReply(job_id=job_id, warning=await self._offline_warning(info))

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
            live = bool(await live_agents(self._presence, agent))
        self._live_cache[agent] = (time.monotonic(), live)
        return live

    async def status(self, request: StatusRequest) -> JobInfo:
        snapshot, _revision = await self._load(request.job_id)
        if snapshot is None:
            raise UnknownJobError(f"no job {request.job_id!r}", job_id=request.job_id)
        return snapshot.info()

    async def resolve(self, request: ResolveRequest) -> JobInfo:
        """A person takes an edge for a job waiting for a human; the job runs on from it.

        Checked here against the stored job (a mistake is answered at once), then carried
        out as a durable `ResolveJob`, so that nothing it must publish is lost if a
        supervisor dies half-way.
        """
        job = await self._stored(request.job_id)
        self._check_resolve(job, await self._graph_of(job), request)
        command = ResolveJob(job_id=job.job_id, command_id=uuid.uuid4().hex, request=request)
        return await self._carry_out(command)

    async def cancel(self, request: CancelRequest) -> JobInfo:
        """End a job that is not terminal, whatever it is doing, as `cancelled` (durably,
        like `resolve`)."""
        self._check_cancel(await self._stored(request.job_id))
        command = CancelJob(job_id=request.job_id, command_id=uuid.uuid4().hex, request=request)
        return await self._carry_out(command)

    async def _stored(self, job_id: str) -> JobSnapshot:
        snapshot, _revision = await self._load(job_id)
        if snapshot is None:
            raise UnknownJobError(f"no job {job_id!r}", job_id=job_id)
        return snapshot

    async def _carry_out(self, command: ResolveJob | CancelJob) -> JobInfo:
        """Publish a person's command to the work stream; answer with its outcome."""
        reply_to = self.nc.new_inbox()
        sub = await self.nc.subscribe(reply_to, max_msgs=1)
        try:
            command.reply_to = reply_to
            await self.publish(
                self.names.supervisor,
                command,
                msg_id=msg_id(command.job_id, 0, f"{command.kind}-{command.command_id}"),
            )
            try:
                answer = await sub.next_msg(timeout=_COMMAND_WAIT_S)
            except TimeoutError:
                raise RigError(
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

    async def _on_command(self, command: ResolveJob | CancelJob) -> None:
        """Carry out a person's resolve or cancel; tell the waiting API call how it went."""
        if isinstance(command, ResolveJob):
            apply = self._resolving(command.request)
        else:
            apply = self._cancelling(command.request)
        try:
            job = await self._transition(
                command.job_id, apply, cause=f"{command.kind}:{command.command_id}", fresh=True
            )
            reply = _CommandReply(job=job.info())
        except (JobStateError, UnknownJobError) as exc:  # changed since the API checked
            reply = _CommandReply(error=exc.to_dict())
        if command.reply_to:
            with contextlib.suppress(Exception):  # the caller may have given up: fine
                await self.nc.publish(command.reply_to, encode(reply))

    def _check_resolve(self, job: JobSnapshot, graph: Graph, request: ResolveRequest) -> Edge:
        """The edge a person may take now, or `JobStateError` saying why not."""
        if job.status != "waiting_human":
            raise JobStateError(
                f"job {job.job_id} is {job.status}, not waiting for a human",
                job_id=job.job_id,
                status=job.status,
            )
        assert job.state is not None
        state = graph.state(job.state)
        edge = state.edge(request.edge)
        if edge is None:
            raise JobStateError(
                f"{request.edge!r} is not an edge of state {job.state!r}; "
                f"edges: {', '.join(e.name for e in state.edges) or 'none'}",
                job_id=job.job_id,
                edge=request.edge,
            )
        if edge.to == job.state and state.human and edge.tool is None and not edge.verifier:
            raise JobStateError(
                f"edge {edge.name!r} leads straight back to {job.state!r}, where the job "
                "waits: it would park again at once with nothing done; take another edge",
                job_id=job.job_id,
                edge=request.edge,
            )
        return edge

    def _check_cancel(self, job: JobSnapshot) -> None:
        if job.terminal:
            raise JobStateError(
                f"job {job.job_id} already ended: {job.status}",
                job_id=job.job_id,
                status=job.status,
            )

    def _resolving(
        self, request: ResolveRequest
    ) -> Callable[[JobSnapshot], Awaitable[JobSnapshot | None]]:
        async def apply(job: JobSnapshot) -> JobSnapshot:
            graph = await self._graph_of(job)
            self._check_resolve(job, graph, request)
            job.outbox = []
            self._unpark(job)
            limits = request.limits()
            job.budget = job.budget.override(limits)
            if limits.deadline_s is not None:
                self._set_deadline(job, time.time() + limits.deadline_s)
            job.status, job.error = "running", None
            self._event(
                job,
                "resolved",
                state=job.state,
                edge=request.edge,
                args=request.args,
                note=request.note,
                by=request.by,
                budget=limits.model_dump(exclude_none=True),
            )
            job.step += 1
            decision = Decision(
                job_id=job.job_id, step=job.step, edge=request.edge, args=request.args
            )
            return self._decided(job, graph, decision, by="human")

        return apply

    def _cancelling(
        self, request: CancelRequest
    ) -> Callable[[JobSnapshot], Awaitable[JobSnapshot | None]]:
        async def apply(job: JobSnapshot) -> JobSnapshot:
            self._check_cancel(job)
            job.outbox = []
            self._unpark(job)
            reason = request.reason or "cancelled by request"
            return self._finish(job, "cancelled", error={"code": "cancelled", "message": reason})

        return apply

    async def inbox(self, request: InboxRequest) -> InboxReply:
        """The jobs waiting for a person, oldest first."""
        try:
            keys = await self._inbox.keys()
        except NoKeysError:
            keys = []
        found = []
        for key in keys:
            try:
                entry = await self._inbox.get(key)
            except (KeyNotFoundError, NotFoundError):
                continue  # resolved meanwhile
            if entry.value:
                escalation = decode_as(Escalation, entry.value)[0]
                if request.agent is None or escalation.agent == request.agent:
                    found.append(escalation)
        return InboxReply(jobs=sorted(found, key=lambda e: e.since))

    # --- reports -----------------------------------------------------------------

    async def on_message(self, message: Any, delivery: Delivery) -> None:
        """Apply one report (or a person's command) to its job; drop it if it is stale."""
        if isinstance(message, ResolveJob | CancelJob):
            await self._on_command(message)
            return
        start = message if isinstance(message, StartJob) else None
        cause = "start" if start is not None else f"{message.kind}:{message.step}"
        try:
            await self._transition(
                message.job_id, lambda job: self._apply(job, message), cause=cause, start=start
            )
        except UnknownJobError as exc:  # never retried: dead-lettered with the reason
            raise NonRetryableError(
                f"{message.kind} for {exc.message}", job_id=message.job_id
            ) from exc

    async def on_timer(self, check: DeadlineCheck | StallCheck, delivery: Delivery) -> None:
        """A job's deadline or stall check: wait for it on the server, then act if due."""
        left = check.at - time.time()
        if left > 0:
            raise RetryableError("not due yet", delay=left, routine=True)
        try:
            if isinstance(check, StallCheck):
                await self._on_stall(check)
            else:
                await self._on_deadline(check)
        except UnknownJobError:
            self.log.warning("timer.no_job", kind=check.kind)  # nothing left to time

    async def _on_deadline(self, check: DeadlineCheck) -> None:
        async def apply(job: JobSnapshot) -> JobSnapshot | None:
            # A newer deadline (set by a person's resolve) has its own timer; a job
            # waiting for a person is on the person's time.
            if job.terminal or job.deadline != check.at or job.status != "running":
                return None
            job.outbox = []
            graph = await self._graph_of(job)
            late = time.time() - (job.deadline - (job.budget.deadline_s or 0))
            message = f"the job's deadline of {job.budget.deadline_s} s passed ({late:.1f} s)"
            return self._exhaust(job, graph, "deadline", message)

        await self._transition(check.job_id, apply, cause=f"deadline:{check.at!r}")

    async def _on_stall(self, check: StallCheck) -> None:
        """The stall watchdog: a running job whose journal has not moved since the check was
        armed goes to a person (or fails, by `on_stuck`); one that moved is checked again
        `stall_s` after its last change."""
        again: list[StallCheck] = []

        async def apply(job: JobSnapshot) -> JobSnapshot | None:
            again.clear()
            stall_s = job.budget.stall_s
            if job.status != "running" or job.stall_arm != check.arm or stall_s is None:
                return None  # ended, parked (a person's time), or watched by a newer arm
            if job.event_seq != check.seq:
                at = max(job.updated_at + stall_s, time.time() + 1.0)
                again.append(
                    StallCheck(job_id=job.job_id, at=at, seq=job.event_seq, arm=job.stall_arm)
                )
                return None
            job.outbox = []
            waited = time.time() - job.updated_at
            awaited = self._awaited(job, await self._graph_of(job))
            reason = f"no progress for {waited:.0f} s (stall_s {stall_s:g}): {awaited}"
            return await self._stuck(job, "stalled", reason)

        await self._transition(check.job_id, apply, cause=f"stall:{check.arm}:{check.seq}")
        for next_check in again:
            await self.publish(
                self.names.timer,
                next_check,
                msg_id=msg_id(check.job_id, next_check.seq, f"stall{next_check.arm}"),
            )

    def _awaited(self, job: JobSnapshot, graph: Graph) -> str:
        """What a running job waits for, in words."""
        edge = (
            graph.state(job.state).edge(job.pending_edge)
            if job.pending_edge and job.state in graph.states
            else None
        )
        match job.phase:
            case "decide":
                what = f"agent {job.agent!r} to decide step {job.step} in state {job.state!r}"
            case "tool" if edge is not None:
                what = f"tool {edge.tool!r} (step {job.step}, edge {edge.name!r})"
            case "verify" if edge is not None:
                what = f"verifier {edge.verifier!r} (step {job.step}, edge {edge.name!r})"
            case _:
                what = f"step {job.step} in state {job.state!r}"
        return f"it waits for {what}; is a process of that kind running?"

    # --- dead letters --------------------------------------------------------------

    async def on_dead_letter(self, letter: DeadLetter, delivery: Delivery) -> None:
        """A message of a job could not be handled: the job must not wait for it forever.

        A letter for the job's current step (or a job-wide one, like its timer) hands the
        job to a person with the reason (or fails it, by the agent's `on_stuck`); one for
        a job that has moved on, or ended, changes nothing. A letter of this consumer's
        own is never acted on, so a broken letter cannot loop.
        """
        if letter.actor == self.names.dlq_durable:
            return
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
            if job.status == "accepted":  # it never started: nobody can decide for it
                job.outbox = []
                return self._finish(job, "failed", error={"code": "dead_letter", "message": reason})
            if job.status != "running" or (step is not None and step != job.step):
                return None
            job.outbox = []
            return await self._stuck(job, "dead_letter", reason)

        try:
            await self._transition(job_id, apply, cause=f"dlq:{delivery.stream_seq}")
        except UnknownJobError:
            self.log.info("dlq.unknown_job", job=job_id)

    async def _stuck(self, job: JobSnapshot, kind: EscalationKind, reason: str) -> JobSnapshot:
        """A job that cannot move by itself: a person is told, or it fails (`on_stuck`)."""
        info = await self._agent(job.agent)
        if info.on_stuck == "fail":
            return self._finish(job, "failed", error={"code": kind, "message": reason})
        # The work under way may still report (a slow agent, a replayed letter): the job
        # keeps its phase so that the report resumes it.
        return self._park(job, await self._graph_of(job), reason, kind=kind, keep_phase=True)

    async def _transition(
        self,
        job_id: str,
        apply: Callable[[JobSnapshot], Awaitable[JobSnapshot | None]],
        *,
        cause: str,
        start: StartJob | None = None,
        fresh: bool = False,
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
            cached = not fresh and attempt == 0 and job_id in self._snapshots
            stored, revision = await self._read(job_id, cached=cached)
            snapshot = self._snapshot_of(job_id, stored, start)
            if snapshot.cause == cause:
                if cached:  # only the stored snapshot can say what is published
                    self._snapshots.pop(job_id, None)
                    continue
                self.log.info("outbox.resent", cause=cause, messages=len(snapshot.outbox))
                await self._send(snapshot)
                return snapshot
            status_before = snapshot.status
            after = await apply(snapshot)
            if after is None and cached:
                # Our copy may be old (another replica moved the job): only the stored
                # snapshot can say that a report is stale.
                self._snapshots.pop(job_id, None)
                continue
            if after is None:
                self.stale_reports += 1
                self.log.info("report.stale", cause=cause, job_step=snapshot.step)
                return snapshot
            await self._migrate(after)
            after.cause = cause
            after.updated_at = time.time()
            if after.status == "running" and status_before != "running":
                self._arm_stall(after)
            data = encode(after)
            if len(data) > self._max_snapshot:
                # The change does not fit in a message: the job, as it was, ends saying why.
                before = self._snapshot_of(job_id, stored, start)
                after = self._too_large(before, after, len(data))
                after.cause, after.updated_at = cause, time.time()
                data = encode(after)
            try:
                revision = await self._write(job_id, data, last=revision)
            except _Conflict:
                # Another supervisor moved the job first (or our copy was old): read the
                # snapshot again and decide again.
                self._snapshots.pop(job_id, None)
                continue
            self._remember(after, data, revision)
            crash_point(f"after_write_{cause.split(':', 1)[0]}")
            if after.status != status_before:  # a few lines per job, for `rig logs JOB`
                self.log.info(
                    "job.status",
                    job=job_id,
                    status=after.status,
                    state=after.state,
                    step=after.step,
                    reason=after.escalation.reason if after.escalation else None,
                )
            await self._send(after)
            return after
        raise RetryableError("the job's snapshot kept changing under us", delay=0.05)

    async def _apply(self, job: JobSnapshot, message: Any) -> JobSnapshot | None:
        """The next snapshot after `message`, or None if `message` is not for this step."""
        if job.terminal:
            return None
        if isinstance(message, StartJob):
            return await self._start(job) if job.status == "accepted" else None
        expected = {
            "decide": isinstance(message, Decision),
            "tool": isinstance(message, ToolResult)
            or (isinstance(message, Verdict) and message.tool_result is not None),
            "verify": isinstance(message, Verdict),
        }
        if message.step != job.step or not expected.get(job.phase or "", False):
            return None
        if job.status == "waiting_human":
            if job.escalation is None or job.escalation.kind not in _RESUMABLE:
                return None
            # Parked because this report was late or lost; here it is after all.
            job.outbox = []
            self._unpark(job)
            job.status, job.error = "running", None
            self._event(job, "resumed", state=job.state, phase=job.phase, by=message.kind)
        elif job.status != "running":
            return None
        else:
            job.outbox = []  # a report for the current step: its transition writes a fresh outbox
        graph = await self._graph_of(job)
        match message:
            case Decision(graph_version=str(version)) if version != job.graph_version:
                # An agent of another version answered: the job moves to that version if
                # the migration rule allows, else the edge is checked against its own.
                info = await self._version(job, version)
                target = info.graph.migration_target(job.state or "", info.renamed)
                if target is not None:
                    self._move_to(job, info, target)
                    graph = info.graph
                return self._decided(job, graph, message)
            case Decision():
                return self._decided(job, graph, message)
            case ToolResult():
                return self._tool_done(job, graph, message)
            case Verdict(tool_result=ToolResult() as result) if job.phase == "tool":
                return self._tool_done(job, graph, result, message)
            case Verdict():
                return self._verified(job, graph, message)
        raise AssertionError(f"unexpected report {message.kind}")  # `expected` covers each

    async def _start(self, job: JobSnapshot) -> JobSnapshot:
        # The outbox still holds the `accepted` event written at submit: keep it.
        job.status = "running"
        graph = (await self._agent(job.agent)).graph
        job.graph_version = graph.version  # the job runs on it, unless it migrates
        self._event(
            job,
            "started",
            agent=job.agent,
            graph_version=graph.version,
            state=graph.initial,
            budget=job.budget.model_dump(exclude_none=True),
            deadline=job.deadline,
        )
        if job.deadline is not None:
            self._set_deadline(job, job.deadline)
        job.state = graph.initial
        job.path = [graph.initial]
        job.visits = {graph.initial: 1}
        return self._next_step(job, graph)

    def _decided(
        self, job: JobSnapshot, graph: Graph, decision: Decision, *, by: str = "llm"
    ) -> JobSnapshot:
        assert job.state is not None
        state = graph.state(job.state)
        job.usage.add(decision.usage)
        spent = self._spent(job)
        if decision.exhausted is not None:
            self._event(
                job,
                "decision",
                state=job.state,
                edge=None,
                exhausted=decision.exhausted,
                reason=decision.reason,
                reasks=decision.reasks,
                usage=decision.usage.model_dump(),
                llm_ms=round(decision.llm_ms, 3),
                spent=spent,
            )
            return self._exhaust(job, graph, decision.exhausted, decision.reason)
        if decision.code_error is not None:
            error = decision.code_error
            self._event(
                job,
                "decision",
                state=job.state,
                edge=None,
                code_error=error,
                reasks=decision.reasks,
                usage=decision.usage.model_dump(),
                llm_ms=round(decision.llm_ms, 3),
                spent=spent,
            )
            job.error = {"code": "code_error", **error}
            reason = (
                f"the agent's own code raised {error.get('type')}: {error.get('message')} "
                f"(a bug, not a model's answer; the traceback is in agent {job.agent!r}'s log)"
            )
            return self._park(job, graph, reason, kind="code_error")
        edge = state.edge(decision.edge)
        fallback, reason = decision.fallback, decision.reason
        if edge is None:  # an agent from another version of the graph; take the safe edge
            fallback, reason = True, f"edge {decision.edge!r} is not an edge of {job.state!r}"
            edge = state.edge(state.safe_edge or "")
            if edge is None:
                return self._finish(
                    job, "failed", error={"code": "no_safe_edge", "message": reason}
                )
        self._event(
            job,
            "decision",
            state=job.state,
            edge=edge.name,
            by=by,
            tool=edge.tool,  # the call it makes, if any: one event, not two
            args=decision.args,
            reasks=decision.reasks,
            fallback=fallback,
            reason=reason,
            usage=decision.usage.model_dump(),
            llm_ms=round(decision.llm_ms, 3),
            spent=spent,
            **({"calls": decision.calls} if decision.calls else {}),
        )
        over = self._over_budget(job) if by == "llm" else None  # a person's choice costs nothing
        if over is not None:  # the call spent more than the agent reserved for it
            return self._exhaust(job, graph, *over)
        job.pending_edge, job.pending_args, job.pending_result = edge.name, decision.args, None
        if edge.tool is not None:
            job.phase = "tool"
            call = ToolCall(
                job_id=job.job_id,
                step=job.step,
                tool=edge.tool,
                args=decision.args,
                verifier=edge.verifier,
                context=_context(job) if edge.verifier is not None else None,
            )
            self._command(job, self.names.tool(edge.tool), call, "tool_call")
            return job
        if edge.verifier is not None:
            return self._verify(job, edge)
        return self._enter(job, graph, edge.to, edge=edge.name)

    def _tool_done(
        self, job: JobSnapshot, graph: Graph, result: ToolResult, verdict: Verdict | None = None
    ) -> JobSnapshot:
        """Record the tool's result; `verdict` is the verifier's, if the result came through it."""
        assert job.state is not None and job.pending_edge is not None
        edge = graph.state(job.state).edge(job.pending_edge)
        assert edge is not None
        self._event(
            job,
            "tool_result",
            tool=result.tool,
            ok=result.ok,
            result=result.result,
            error=result.error,
            ledger=result.ledger,
            key=result.key,
            tool_ms=round(result.tool_ms, 3),
        )
        if result.error is not None and result.error.get("code") == "effect_unknown":
            # The effect may have happened and the tool cannot tell: a person must look,
            # whatever the graph says about ordinary failures.
            job.error = result.error
            return self._park(
                job,
                graph,
                f"tool {result.tool} may or may not have run (key {result.key}); "
                "it has no reconcile, so it is not run again",
                kind="effect_unknown",
            )
        if not result.ok:
            error = result.error or {}
            return self._enter(
                job,
                graph,
                graph.fail_target(job.state, edge),
                edge=edge.name,
                reason=f"tool {result.tool} failed: {error.get('code')}: {error.get('message')}",
            )
        job.results[result.tool] = result.result
        job.pending_result = result.result
        if verdict is not None:
            return self._verified(job, graph, verdict)
        if edge.verifier is not None:
            return self._verify(job, edge)
        return self._enter(job, graph, edge.to, edge=edge.name)

    def _verified(self, job: JobSnapshot, graph: Graph, verdict: Verdict) -> JobSnapshot:
        assert job.state is not None and job.pending_edge is not None
        edge = graph.state(job.state).edge(job.pending_edge)
        assert edge is not None
        self._event(
            job, "verdict", verifier=verdict.verifier, passed=verdict.passed, reason=verdict.reason
        )
        if verdict.passed:
            return self._enter(job, graph, edge.to, edge=edge.name)
        return self._enter(
            job,
            graph,
            graph.fail_target(job.state, edge),
            edge=edge.name,
            reason=f"verifier {verdict.verifier} rejected: {verdict.reason}",
        )

    def _verify(self, job: JobSnapshot, edge: Edge) -> JobSnapshot:
        assert edge.verifier is not None
        job.phase = "verify"
        request = VerifyRequest(
            job_id=job.job_id,
            step=job.step,
            verifier=edge.verifier,
            tool=edge.tool,
            args=job.pending_args,
            result=job.pending_result,
            context=_context(job),
        )
        self._command(job, self.names.verifier(edge.verifier), request, "verify")
        return job

    def _enter(
        self, job: JobSnapshot, graph: Graph, target: str, *, edge: str, reason: str = ""
    ) -> JobSnapshot:
        """Move the job into `target` and decide what follows: finish, park, or next step."""
        job.pending_edge, job.pending_args, job.pending_result = None, {}, None
        visits = job.visits.get(target, 0) + 1
        limit = job.budget.max_visits
        if limit is not None and visits > limit and graph.state(target).decided_by_llm:
            return self._exhaust(
                job,
                graph,
                "visits",
                f"edge {edge!r} would enter {target!r} a {_nth(visits)} time; "
                f"max_visits is {limit}",
            )
        self._move(job, target, edge=edge, reason=reason)
        state = graph.state(target)
        if state.terminal is not None:
            return self._finish(job, state.terminal)
        if state.human:
            source = job.path[-2] if len(job.path) > 1 else None
            why = (
                reason or f"edge {edge!r} from {source!r} leads to {target!r}, a state for a person"
            )
            return self._park(job, graph, why)
        if job.step >= job.budget.max_steps:
            return self._exhaust(
                job,
                graph,
                "steps",
                f"the job took {job.step} steps, its max_steps, without finishing",
            )
        job.step += 1
        return self._next_step(job, graph)

    def _move(self, job: JobSnapshot, target: str, *, edge: str | None, reason: str) -> None:
        """Put the job in `target`, in the journal, its path and its visit counts."""
        self._event(job, "transition", source=job.state, target=target, edge=edge, reason=reason)
        job.state = target
        job.path.append(target)
        job.visits[target] = job.visits.get(target, 0) + 1

    def _next_step(self, job: JobSnapshot, graph: Graph) -> JobSnapshot:
        over = self._over_budget(job)
        if over is not None:
            return self._exhaust(job, graph, *over)
        if job.step == 0:
            job.step = 1
        job.phase = "decide"
        assert job.state is not None
        budget = job.budget
        request = StepRequest(
            job_id=job.job_id,
            step=job.step,
            agent=job.agent,
            state=job.state,
            context=_context(job),
            max_reasks=budget.max_reasks,
            tokens_left=None if budget.max_tokens is None else budget.max_tokens - job.usage.tokens,
            cost_left=None if budget.max_cost is None else budget.max_cost - job.usage.cost,
            deadline=job.deadline,
            graph_version=job.graph_version,
            edges=[edge.name for edge in graph.state(job.state).edges],
        )
        self._command(job, self.names.agent(job.agent), request, "step")
        return job

    def _over_budget(self, job: JobSnapshot) -> tuple[ExhaustedKind, str] | None:
        """The budget that leaves no room for another LLM call, if one is spent."""
        budget, usage = job.budget, job.usage
        if budget.max_tokens is not None and usage.tokens >= budget.max_tokens:
            return "tokens", f"spent {usage.tokens} of max_tokens {budget.max_tokens}"
        if budget.max_cost is not None and usage.cost >= budget.max_cost:
            return "cost", f"spent {usage.cost:.6g} of max_cost {budget.max_cost:.6g}"
        if job.deadline is not None and time.time() >= job.deadline:
            return "deadline", f"the job's deadline of {budget.deadline_s} s passed"
        return None

    def _exhaust(
        self, job: JobSnapshot, graph: Graph, kind: ExhaustedKind, message: str
    ) -> JobSnapshot:
        """A budget ran out: go to the agent's fallback state if it has one, else end the job."""
        status = _EXHAUSTED_STATUS.get(kind, "budget_exceeded")
        fallback = job.on_exhausted if job.on_exhausted != job.state else None
        self._event(
            job,
            "budget",
            exhausted=kind,
            message=message,
            spent=self._spent(job),
            action=f"enter {fallback}" if fallback else status,
        )
        job.pending_edge, job.pending_args, job.pending_result = None, {}, None
        error = {"code": status, "exhausted": kind, "message": message}
        if fallback is None:
            return self._finish(job, status, error=error)
        self._move(job, fallback, edge=None, reason=message)
        state = graph.state(fallback)
        if state.terminal is not None:
            return self._finish(job, state.terminal, error=error)
        job.error = error
        return self._park(job, graph, message, kind="exhausted")

    def _park(
        self,
        job: JobSnapshot,
        graph: Graph,
        reason: str,
        *,
        kind: EscalationKind = "human_state",
        keep_phase: bool = False,
    ) -> JobSnapshot:
        """Hand the job to a person: status, journal, `rig.escalations` and the inbox.

        `keep_phase`: the job still waits for the report of its step, which resumes it
        if it comes (a stalled or dead-lettered step); otherwise only a person moves it.
        """
        assert job.state is not None
        job.status = "waiting_human"
        if not keep_phase:
            job.phase = None
        # A graph that lost the job's state (another version) still lets a person cancel.
        state = graph.states.get(job.state)
        escalation = Escalation(
            job_id=job.job_id,
            agent=job.agent,
            state=job.state,
            step=job.step,
            reason=reason,
            kind=kind,
            edges=[edge.name for edge in state.edges] if state is not None else [],
        )
        job.escalation = escalation
        self._event(
            job,
            "status",
            status=job.status,
            state=job.state,
            reason=reason,
            kind=kind,
            edges=escalation.edges,
            error=job.error,
        )
        # What a person reads carries the job's input; the snapshot keeps it once.
        data = encode(escalation.model_copy(update={"input": job.input}))
        key = msg_id(job.job_id, job.event_seq, "escalation")
        job.outbox.append(Outgoing(subject=self.names.escalations, msg_id=key, data=data))
        job.outbox.append(
            Outgoing(
                subject=kv_subject(self.names.inbox_bucket, job.job_id),
                msg_id=key,
                data=data,
            )
        )
        return job

    def _unpark(self, job: JobSnapshot) -> None:
        """Take the job out of the inbox, if it is there."""
        if job.escalation is None:
            return
        job.escalation = None
        job.outbox.append(
            Outgoing(
                subject=kv_subject(self.names.inbox_bucket, job.job_id),
                msg_id=msg_id(job.job_id, job.event_seq, "unpark"),
                data=b"",
                headers={Header.KV_OPERATION: "DEL"},
            )
        )

    def _arm_stall(self, job: JobSnapshot) -> None:
        """Start a stall watchdog for a job that starts (or resumes) running."""
        if job.budget.stall_s is None:
            return
        job.stall_arm += 1
        check = StallCheck(
            job_id=job.job_id,
            at=time.time() + job.budget.stall_s,
            seq=job.event_seq,
            arm=job.stall_arm,
        )
        job.outbox.append(
            Outgoing(
                subject=self.names.timer,
                msg_id=msg_id(job.job_id, job.event_seq, f"stall{job.stall_arm}"),
                data=encode(check),
            )
        )

    def _set_deadline(self, job: JobSnapshot, at: float) -> None:
        job.deadline = at
        check = DeadlineCheck(job_id=job.job_id, at=at)
        job.outbox.append(
            Outgoing(
                subject=self.names.timer,
                msg_id=msg_id(job.job_id, job.event_seq, "deadline"),
                data=encode(check),
            )
        )

    def _spent(self, job: JobSnapshot) -> dict[str, Any]:
        return {
            "steps": job.step,
            "tokens": job.usage.tokens,
            "cost": job.usage.cost,
            "seconds": round(time.time() - job.created_at, 3),
        }

    def _finish(
        self, job: JobSnapshot, status: Any, *, error: dict[str, Any] | None = None
    ) -> JobSnapshot:
        job.status, job.phase, job.error = status, None, error
        job.result = {"state": job.state, "results": job.results}
        self._event(
            job,
            "status",
            status=status,
            state=job.state,
            steps=job.step,
            result=job.result,
            error=error,
            usage=job.usage.model_dump(),
            visits=job.visits,
        )
        return job

    def _too_large(self, job: JobSnapshot, grown: JobSnapshot, size: int) -> JobSnapshot:
        """End `job` (as it was before a change that grew it to `size` bytes) as failed.

        Tool results over the executors' inline limit travel by reference, so what grows
        a job past one message is its input, an LLM's arguments, or many results at once.
        """
        limit = self._max_snapshot
        parts = {"the input": len(encode(grown.input))}
        parts["the arguments of edge " + repr(grown.pending_edge)] = len(encode(grown.pending_args))
        for tool, value in grown.results.items():
            parts[f"the result of tool {tool!r}"] = len(encode(value))
        largest = max(parts, key=lambda part: parts[part])
        message = (
            f"the job's state would grow to {size} bytes, over the {limit}-byte limit of one "
            f"message (the server's max_payload); the largest part is {largest} "
            f"({parts[largest]} bytes). Tool results over RIG_INLINE_RESULT_BYTES travel by "
            "reference; keep inputs and LLM arguments small (pass a reference instead)"
        )
        self.log.error("job.too_large", job=job.job_id, bytes=size, limit=limit, largest=largest)
        job.outbox = []
        self._unpark(job)
        job.pending_edge, job.pending_args, job.pending_result = None, {}, None
        if len(encode(job.results)) * 4 > limit:  # the end event repeats them: keep it small
            job.results = {}
        error = {"code": "too_large", "message": message, "bytes": size, "limit": limit}
        return self._finish(job, "failed", error=error)

    def _command(self, job: JobSnapshot, subject: str, message: Any, kind: str) -> None:
        job.outbox.append(
            Outgoing(
                subject=subject, msg_id=msg_id(job.job_id, job.step, kind), data=encode(message)
            )
        )

    async def _write(self, job_id: str, data: bytes, *, last: int) -> int:
        """Compare-and-set the snapshot (`last=0`: create); return the new revision."""
        stored = await self.publisher.publish(
            kv_subject(self.names.jobs_bucket, job_id),
            data,
            {Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(last)},
        )
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT_S):
                return await stored
        except PublishError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise _Conflict from exc
            raise

    async def _send(self, job: JobSnapshot) -> None:
        """Publish the outbox, pipelined: one round trip for all of it, order kept."""
        try:
            acks = [
                await self.publisher.publish(
                    out.subject, out.data, {Header.MSG_ID: out.msg_id, **out.headers}
                )
                for out in job.outbox
            ]
            async with asyncio.timeout(_PUBLISH_TIMEOUT_S):
                await asyncio.gather(*acks)
        except Exception as exc:
            # The snapshot is written: a redelivery of the report re-sends the outbox.
            raise RetryableError(f"publishing the outbox failed: {exc!r}", delay=0.2) from exc

    def _new_snapshot(self, start: StartJob) -> JobSnapshot:
        job = JobSnapshot(
            job_id=start.job_id,
            agent=start.agent,
            status="accepted",
            input=start.input,
            budget=start.budget,
            deadline=start.deadline,
            on_exhausted=start.on_exhausted,
            created_at=start.accepted_at,
            request_hash=start.request_hash,
        )
        self._event(job, "accepted", agent=start.agent, input=start.input)
        return job

    def _event(self, job: JobSnapshot, type_: Any, **data: Any) -> None:
        """Append a journal event to the job's outbox."""
        job.event_seq += 1
        event = Event(job_id=job.job_id, seq=job.event_seq, step=job.step, type=type_, data=data)
        job.outbox.append(
            Outgoing(
                subject=self.names.events(job.job_id),
                msg_id=msg_id(job.job_id, job.event_seq, "event"),
                data=encode(event),
            )
        )

    # --- storage -----------------------------------------------------------------

    async def _load(self, job_id: str, *, cached: bool = False) -> tuple[JobSnapshot | None, int]:
        """The job's snapshot and revision: from this process's cache if `cached` and known."""
        data, revision = await self._read(job_id, cached=cached)
        return (decode_as(JobSnapshot, data)[0] if data else None), revision

    def _snapshot_of(
        self, job_id: str, stored: bytes | None, start: StartJob | None
    ) -> JobSnapshot:
        """The stored snapshot, or a new job's if there is none and `start` creates it."""
        if stored is not None:
            return decode_as(JobSnapshot, stored)[0]
        if start is None:
            raise UnknownJobError(f"no job {job_id!r}", job_id=job_id)
        return self._new_snapshot(start)

    async def _read(self, job_id: str, *, cached: bool = False) -> tuple[bytes | None, int]:
        """The job's encoded snapshot (None if there is no job) and its revision."""
        if cached and job_id in self._snapshots:
            return self._snapshots[job_id]
        try:
            entry = await self._jobs.get(job_id)
        except (KeyNotFoundError, NotFoundError):
            return None, 0
        if not entry.value:
            return None, 0
        return entry.value, entry.revision or 0

    def _remember(self, job: JobSnapshot, data: bytes, revision: int) -> None:
        """Keep the snapshot just written, so the next report of this job skips a KV read.

        Another supervisor may move the job meanwhile; the compare-and-set then fails
        and the snapshot is read again, so the cache only ever saves work.
        """
        if job.terminal:
            self._snapshots.pop(job.job_id, None)
            return
        self._snapshots[job.job_id] = (data, revision)
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

    async def _migrate(self, job: JobSnapshot) -> None:
        """Move a job about to ask its agent for a step to the agent's newest graph, if it can.

        The rule (docs/architecture.md, Graph versions): at a step boundary, a job moves
        to the newest registered version of its agent's graph when that version has the
        job's state, under the same name or the new name its `renamed` gives; otherwise
        it stays on the version it runs on. (An agent of another version that gets the
        step applies the same rule and says so in its `Decision`.)
        """
        step = msg_id(job.job_id, job.step, "step")
        if job.status != "running" or not any(out.msg_id == step for out in job.outbox):
            return
        latest = await self._agent(job.agent)
        if job.graph_version in (None, latest.graph.version) or job.state is None:
            return
        target = latest.graph.migration_target(job.state, latest.renamed)
        if target is None:
            return
        job.outbox = [out for out in job.outbox if out.msg_id != step]
        self._move_to(job, latest, target)
        self._next_step(job, latest.graph)

    def _move_to(self, job: JobSnapshot, info: AgentInfo, target: str) -> None:
        """Put the job on `info`'s version of the graph, in `target` (its state's name there)."""
        version = info.graph.version
        self._event(
            job, "migrated", source=job.graph_version, version=version, state=job.state, to=target
        )
        if job.state is not None and target != job.state:
            job.visits[target] = job.visits.pop(job.state, 0)
            job.state = target
        job.graph_version = version

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


# The status a job ends with when a budget runs out and it has no fallback state.
_EXHAUSTED_STATUS: dict[str, JobStatusName] = {
    "steps": "step_limit",
    "deadline": "deadline_exceeded",
}


class _CommandReply(BaseModel):
    """What the supervisor carrying out a `ResolveJob`/`CancelJob` tells the API call."""

    job: JobInfo | None = None
    error: dict[str, Any] | None = None


# Parked because a report was late or lost: that report, if it comes, resumes the job.
_RESUMABLE = frozenset({"stalled", "dead_letter"})


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


def _context(job: JobSnapshot) -> JobContext:
    return JobContext(input=job.input, results=job.results, path=job.path)


def _nth(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
