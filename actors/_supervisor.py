"""The supervisor: owns every job's snapshot and journal, and moves jobs through their graph.

It is the only writer of job state. Agents, tools and verifiers report back to it on
`rig.work.supervisor`; for each report it loads the job's snapshot, checks that the
report answers the job's current step, computes the next snapshot, writes it with
compare-and-set, then publishes what the transition produced (events, next command).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from typing import Any

from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from actors._actor import Actor, Delivery, Endpoint, Inbox
from actors._nats import WRONG_LAST_SEQUENCE, PublishError, kv_subject
from protocols import (
    AgentInfo,
    Decision,
    Edge,
    Event,
    Graph,
    Header,
    JobContext,
    JobInfo,
    JobSnapshot,
    NonRetryableError,
    Outgoing,
    PayloadTooLargeError,
    RetryableError,
    StartJob,
    StatusRequest,
    StepRequest,
    SubmitReply,
    SubmitRequest,
    SupervisorMessage,
    ToolCall,
    ToolResult,
    UnknownAgentError,
    UnknownJobError,
    Verdict,
    VerifyRequest,
    decode_as,
    encode,
    msg_id,
)

# How long the supervisor trusts its copy of an agent's registry entry.
_AGENT_CACHE_S = 5.0
# Snapshots of running jobs kept in memory (about 2 KB each).
_SNAPSHOT_CACHE_SIZE = 20_000
# Attempts at a compare-and-set before giving the report back to JetStream.
_CAS_ATTEMPTS = 5
_PUBLISH_TIMEOUT_S = 10.0


class Supervisor(Actor):
    """Accepts jobs and steps them through their agent's graph; any number may run.

    Consumes: `rig.work.supervisor` (durable `supervisor`): `StartJob`, `Decision`,
    `ToolResult`, `Verdict` (which carries the tool's result when the executor sent the
    result straight to the verifier: two transitions per step, not three).
    Publishes: `rig.work.agent.<agent>` (`StepRequest`), `rig.work.tool.<tool>`
    (`ToolCall`), `rig.work.verify.<verifier>` (`VerifyRequest`), and the journal on
    `rig.events.<job_id>`.
    Answers: `rig.api.submit` and `rig.api.status` (queue group, JSON or msgpack).

    A report that is not for the job's current step (a redelivery, a duplicate) is
    dropped: the supervisor re-publishes the job's outbox (deduplicated by
    `Nats-Msg-Id`) and acks it. Replicas coordinate only through the snapshot's
    revision: a lost compare-and-set is retried after re-reading.
    """

    name = "supervisor"

    async def on_start(self) -> None:
        self._jobs: KeyValue = await self.js.key_value(self.names.jobs_bucket)
        self._agents: KeyValue = await self.js.key_value(self.names.agents_bucket)
        self._agent_cache: dict[str, tuple[float, AgentInfo]] = {}
        self._snapshots: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        self.stale_reports = 0

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(self.names.api_submit, SubmitRequest, self.submit),
            Endpoint(self.names.api_status, StatusRequest, self.status),
        ]

    def inboxes(self) -> list[Inbox]:
        return [
            Inbox(
                durable=self.names.supervisor_durable,
                subject=self.names.supervisor,
                model=SupervisorMessage,
                handler=self.on_message,
            )
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
        start = StartJob(
            job_id=job_id,
            agent=info.name,
            input=request.input,
            max_steps=request.max_steps or info.max_steps,
        )
        # The StartJob is the durable record: if this process dies before creating the
        # snapshot, the StartJob's handler creates it.
        await self.publish(self.names.supervisor, start, msg_id=msg_id(job_id, 0, "start"))
        try:
            await self._write(job_id, encode(self._new_snapshot(start)), last=0)
        except _Conflict:
            pass  # the job exists: a repeated submit with the same job_id, or the handler won
        return SubmitReply(job_id=job_id)

    async def status(self, request: StatusRequest) -> JobInfo:
        snapshot, _revision = await self._load(request.job_id)
        if snapshot is None:
            raise UnknownJobError(f"no job {request.job_id!r}", job_id=request.job_id)
        return snapshot.info()

    # --- reports -----------------------------------------------------------------

    async def on_message(self, message: Any, delivery: Delivery) -> None:
        """Apply one report to its job, or re-send the job's outbox if the report is stale."""
        for attempt in range(_CAS_ATTEMPTS):
            snapshot, revision = await self._load(message.job_id, cached=attempt == 0)
            if snapshot is None:
                if not isinstance(message, StartJob):
                    raise NonRetryableError(
                        f"{message.kind} for unknown job {message.job_id!r}", job_id=message.job_id
                    )
                snapshot = self._new_snapshot(message)
                revision = 0
            after = await self._apply(snapshot, message)
            if after is None:
                self.stale_reports += 1
                self.log.info("report.stale", kind=message.kind, job_step=snapshot.step)
                await self._send(snapshot)
                return
            after.updated_at = time.time()
            data = encode(after)
            try:
                revision = await self._write(after.job_id, data, last=revision)
            except _Conflict:
                # Another supervisor moved the job first (or our copy was old): read the
                # snapshot again and decide again.
                self._snapshots.pop(message.job_id, None)
                continue
            self._remember(after, data, revision)
            await self._send(after)
            return
        raise RetryableError("the job's snapshot kept changing under us", delay=0.05)

    async def _apply(self, job: JobSnapshot, message: Any) -> JobSnapshot | None:
        """The next snapshot after `message`, or None if `message` is not for this step."""
        if job.terminal:
            return None
        match message:
            case StartJob():
                return await self._start(job) if job.status == "accepted" else None
            case _ if message.step != job.step:
                return None
        # A report for the current step: its transition writes a fresh outbox.
        outbox, job.outbox = job.outbox, []
        match message:
            case Decision() if job.phase == "decide":
                return self._decided(job, await self._graph(job.agent), message)
            case ToolResult() if job.phase == "tool":
                return self._tool_done(job, await self._graph(job.agent), message)
            case Verdict(tool_result=ToolResult() as result) if job.phase == "tool":
                return self._tool_done(job, await self._graph(job.agent), result, message)
            case Verdict() if job.phase == "verify":
                return self._verified(job, await self._graph(job.agent), message)
        job.outbox = outbox
        return None

    async def _start(self, job: JobSnapshot) -> JobSnapshot:
        # The outbox still holds the `accepted` event written at submit: keep it.
        job.status = "running"
        graph = await self._graph(job.agent)
        self._event(job, "started", agent=job.agent, state=graph.initial, max_steps=job.max_steps)
        job.state = graph.initial
        job.path = [graph.initial]
        return self._next_step(job)

    def _decided(self, job: JobSnapshot, graph: Graph, decision: Decision) -> JobSnapshot:
        assert job.state is not None
        state = graph.state(job.state)
        edge = state.edge(decision.edge)
        fallback, reason = decision.fallback, decision.reason
        if edge is None:  # an agent from another version of the graph; take the safe edge
            fallback, reason = True, f"edge {decision.edge!r} is not an edge of {job.state!r}"
            edge = state.edge(state.safe_edge or "")
            if edge is None:
                return self._finish(
                    job, "failed", error={"code": "no_safe_edge", "message": reason}
                )
        job.usage.input_tokens += decision.usage.input_tokens
        job.usage.output_tokens += decision.usage.output_tokens
        self._event(
            job,
            "decision",
            state=job.state,
            edge=edge.name,
            tool=edge.tool,  # the call it makes, if any: one event, not two
            args=decision.args,
            reasks=decision.reasks,
            fallback=fallback,
            reason=reason,
            usage=decision.usage.model_dump(),
            llm_ms=round(decision.llm_ms, 3),
        )
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
            job.status, job.phase, job.error = "waiting_human", None, result.error
            self._event(
                job,
                "status",
                status=job.status,
                state=job.state,
                reason=(
                    f"tool {result.tool} may or may not have run (key {result.key}); "
                    "it has no reconcile, so it is not run again"
                ),
                error=result.error,
            )
            return job
        if not result.ok:
            return self._enter(
                job,
                graph,
                graph.fail_target(job.state, edge),
                edge=edge.name,
                reason=f"tool {result.tool} failed",
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
        self._event(job, "transition", source=job.state, target=target, edge=edge, reason=reason)
        job.state = target
        job.path.append(target)
        job.pending_edge, job.pending_args, job.pending_result = None, {}, None
        state = graph.state(target)
        if state.terminal is not None:
            return self._finish(job, state.terminal)
        if state.human:
            job.status, job.phase = "waiting_human", None
            self._event(
                job, "status", status=job.status, state=target, edges=[e.name for e in state.edges]
            )
            return job
        if job.step >= job.max_steps:
            return self._finish(
                job,
                "step_limit",
                error={
                    "code": "step_limit",
                    "message": f"the job took {job.step} steps, its max_steps, without finishing",
                },
            )
        job.step += 1
        return self._next_step(job)

    def _next_step(self, job: JobSnapshot) -> JobSnapshot:
        if job.step == 0:
            job.step = 1
        job.phase = "decide"
        assert job.state is not None
        request = StepRequest(
            job_id=job.job_id,
            step=job.step,
            agent=job.agent,
            state=job.state,
            context=_context(job),
        )
        self._command(job, self.names.agent(job.agent), request, "step")
        return job

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
        )
        return job

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
                await self.publisher.publish(out.subject, out.data, {Header.MSG_ID: out.msg_id})
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
            max_steps=start.max_steps,
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
        if cached and job_id in self._snapshots:
            data, revision = self._snapshots[job_id]
            return decode_as(JobSnapshot, data)[0], revision
        try:
            entry = await self._jobs.get(job_id)
        except (KeyNotFoundError, NotFoundError):
            return None, 0
        if entry.value is None:
            return None, 0
        snapshot, _ = decode_as(JobSnapshot, entry.value)
        return snapshot, entry.revision or 0

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

    async def _graph(self, agent: str) -> Graph:
        return (await self._agent(agent)).graph


class _Conflict(Exception):
    """The snapshot's revision moved: someone else wrote the job first."""


def _context(job: JobSnapshot) -> JobContext:
    return JobContext(input=job.input, results=job.results, path=job.path)
