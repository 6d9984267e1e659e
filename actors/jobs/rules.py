"""A job's transitions, as pure functions of (snapshot, message, graph, now).

`Rules` computes the next snapshot of a job, and what it must publish (its outbox: journal
events, the next command, escalations, timers), from the snapshot, the message that moves
it, the graph the job runs on, and the time. It reads nothing and writes nothing: the
supervisor loads the snapshot and the graph, calls it, compare-and-sets the result and
publishes the outbox (`actors/jobs/supervisor.py`). So every rule here can be tested without
NATS, with examples or hypothesis (`tests/unit/test_rules.py`).

A method returns the job it was given, changed, or None when the message does not apply
(a stale report). Methods change the snapshot in place; the supervisor hands them a copy
it just decoded.
"""

# Long: every transition of a job, as one pure class: read top to bottom it is the
# table of what each message does in each phase; split, a rule would be far from its kin.

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actors.jobs import children, flows, threads
from actors.runtime.schemas import fits
from actors.runtime.settings import DEFAULT_RETENTION_S
from protocols import (
    LOOKUP,
    PUSH_LABEL,
    TERMINAL_STATUSES,
    AgentInfo,
    Budget,
    CancelJob,
    CancelRequest,
    ChildEnded,
    DeadlineCheck,
    Decision,
    Edge,
    Escalation,
    EscalationKind,
    Event,
    ExhaustedKind,
    FlowEnded,
    FlowNext,
    FlowTick,
    ForgedReportError,
    Graph,
    Header,
    InvalidNameError,
    JobContext,
    JobMovedError,
    JobSnapshot,
    JobStateError,
    JobStatusName,
    MemoryScope,
    Names,
    Outgoing,
    ResolveJob,
    ResolveRequest,
    SchemaError,
    SignalJob,
    SignalRequest,
    SignalTimeout,
    StallCheck,
    StartJob,
    State,
    StepRequest,
    SubmitRequest,
    ThreadEnded,
    ThreadNext,
    ThreadRecord,
    ToolCall,
    ToolCancel,
    ToolResult,
    Verdict,
    VerifyRequest,
    WebhookDelivery,
    check_token,
    encode,
    kv_subject,
    msg_id,
)


class Rules:
    """The rules of one transition: `names` to address what it publishes, `now` its time."""

    def __init__(
        self,
        names: Names,
        now: float,
        retention: float = DEFAULT_RETENTION_S,
        owners: Mapping[str, str] | None = None,
    ) -> None:
        self.names = names
        self.now = now
        self.retention = retention  # seconds an ended job's snapshot and index entry live
        # Who serves the tool a decision picked (tool -> executor, from the catalog), when
        # its edge offers it only as one of an executor's tools (`<executor>.*`).
        self.owners = owners or {}

    # --- the transitions -------------------------------------------------------------

    def start(self, job: JobSnapshot, graph: Graph, at: str | None = None) -> JobSnapshot | None:
        """A `StartJob`: the job enters its graph's initial state (the newest version), or
        `at` (a thread's turn that summarises first)."""
        at = at or graph.initial
        if job.status != "accepted":
            return None
        # The outbox still holds the `accepted` event written at submit: keep it.
        job.status = "running"
        job.graph_version = graph.version  # the job runs on it, unless it migrates
        self.event(
            job,
            "started",
            agent=job.agent,
            graph_version=graph.version,
            state=at,
            budget=job.budget.model_dump(exclude_none=True),
            deadline=job.deadline,
        )
        if job.deadline is not None and job.parent is None:  # a child's is set already
            self.set_deadline(job, job.deadline)
        job.state = at
        job.path = [at]
        job.visits = {at: 1}
        return self.next_step(job, graph)

    def start_child(
        self, job: JobSnapshot, info: AgentInfo, parent: JobSnapshot | None
    ) -> JobSnapshot | None:
        """A child job's `StartJob`: its budget is the smaller of its agent's and what its
        parent had left (`job.budget` and deadline, as the parent sent them); it starts
        unless it cannot: its parent no longer waits for it (ended, or moved on: the
        child ends `cancelled`), its input does not fit its agent's, or the tree is too
        deep (it ends `failed`, and its parent takes the edge's failure path)."""
        if job.status != "accepted":
            return None
        link = job.parent
        assert link is not None
        job.on_exhausted = info.on_exhausted
        job.memory = memory_of(info, job.thread, job.labels)
        job.budget, job.deadline = _carved(info.budget, job.budget, job.deadline, self.now)
        if parent is None or parent.terminal or parent.phase != "child" or parent.step != link.step:
            where = f"it is {parent.status} at step {parent.step}" if parent else "it is gone"
            message = f"its parent job {link.job_id} no longer waits for it: {where}"
            return self.finish(job, "cancelled", error={"code": "cancelled", "message": message})
        if link.depth > MAX_DEPTH:
            message = (
                f"a child job {link.depth} deep (agent {job.agent!r}, started by "
                f"{link.agent!r}): agents start one another in a loop; at most {MAX_DEPTH}"
            )
            return self.finish(job, "failed", error={"code": "too_deep", "message": message})
        try:
            check_input(info, job.input)
        except SchemaError as exc:
            error = {"code": exc.code, "message": exc.message, **exc.details}
            return self.finish(job, "failed", error=error)
        if job.deadline is not None:
            self.set_deadline(job, job.deadline)
        return self.start(job, info.graph)

    def report(
        self,
        job: JobSnapshot,
        message: Decision | ToolResult | Verdict,
        graph: Graph,
        decided_on: AgentInfo | None = None,
        *,
        sender: tuple[str, str] | None = None,
    ) -> JobSnapshot | None:
        """An actor's report on the job's current step; None if it is for another step.

        `decided_on`: the version of the agent's graph a `Decision` was made with, when it
        is not the job's (an agent of another version applied the migration rule).
        `sender`: who the report's subject names (`Names.sender_of`); a report for the
        current step from anyone but the actor it waits for raises `ForgedReportError`.
        """
        relayed = message.tool_result if isinstance(message, Verdict) else message
        if isinstance(relayed, ToolResult) and self._late(job, relayed):
            return self.late_result(job, relayed)
        if job.terminal:
            return None
        expected = {
            "decide": isinstance(message, Decision),
            "tool": isinstance(message, ToolResult)
            or (isinstance(message, Verdict) and message.tool_result is not None),
            "verify": isinstance(message, Verdict),
        }
        if message.step != job.step or not expected.get(job.phase or "", False):
            return None
        if sender is not None:
            self.check_sender(job, graph, message, sender)
        if isinstance(message, Verdict) and message.tool_result is not None:
            self.check_relayed(job, graph, message.tool_result)
        if not self.takes_report(job, message.kind):
            return None
        match message:
            case Decision():
                if decided_on is not None:
                    target = decided_on.graph.migration_target(job.state or "", decided_on.renamed)
                    if target is not None:  # else the edge is checked against the job's own
                        self.move_to(job, decided_on, target)
                        graph = decided_on.graph
                return self.decided(job, graph, message)
            case ToolResult():
                return self.tool_done(job, graph, message)
            case Verdict(tool_result=ToolResult() as result) if job.phase == "tool":
                return self.tool_done(job, graph, result, message)
            case Verdict():
                return self.verified(job, graph, message)
        raise AssertionError(f"unexpected report {message.kind}")  # `expected` covers each

    def child_ended(
        self, job: JobSnapshot, graph: Graph, message: ChildEnded
    ) -> JobSnapshot | None:
        """A child job of the step the parent waits in ended (`actors/jobs/children.py`)."""
        return children.ended(self, job, graph, message)

    def takes_report(self, job: JobSnapshot, kind: str) -> bool:
        """Whether a report (of `kind`) on the job's current step moves it now: it runs,
        or it was parked because this very report was late or lost (it resumes). Its
        transition then writes a fresh outbox."""
        if job.status == "waiting_human":
            if job.escalation is None or job.escalation.kind not in RESUMABLE:
                return False
            job.outbox = []
            self.unpark(job)
            job.status, job.error = "running", None
            self.event(job, "resumed", state=job.state, phase=job.phase, by=kind)
            return True
        if job.status != "running":
            return False
        job.outbox = []
        return True

    @staticmethod
    def check_sender(
        job: JobSnapshot,
        graph: Graph,
        message: Decision | ToolResult | Verdict,
        sender: tuple[str, str],
    ) -> None:
        """Refuse a report on the current step from anyone but the actor it waits for: the
        job's agent decides; the edge's tool reports its result (or, when the edge has a
        verifier, that verifier carries it); the edge's verifier gives the verdict."""
        kind, name = sender
        if job.phase == "decide":
            waited = {("agent", job.agent)}
        else:
            edge = graph.edge(job.state, job.pending_edge)
            waited = {("verify", edge.verifier)} if edge and edge.verifier else set()
            tool = pending_tool(job, graph)
            if job.phase == "tool" and tool is not None:
                waited.add(("tool", tool))
        if (kind, name) not in waited:
            raise ForgedReportError(
                f"a {message.kind} for step {job.step} of job {job.job_id} from {kind} "
                f"{name!r}, but that step waits for "
                + " or ".join(f"{k} {n!r}" for k, n in sorted(waited)),
                job_id=job.job_id,
                sender=f"{kind}.{name}",
            )

    @staticmethod
    def _late(job: JobSnapshot, result: ToolResult) -> bool:
        """Whether `result` is of the call the job stopped waiting for (`abandoned`: it
        was cancelled, ran out of time, or a person moved it on) and says what the call
        did: it ran, or failed after it started. Any other stale result is not: the job
        recorded its step's own."""
        gone = job.abandoned
        if gone is None or (result.job_id, result.step, result.tool) != (
            gone.job_id,
            gone.step,
            gone.tool,
        ):
            return False
        if result.ledger == "hit":
            return False  # the ledger's answer: nothing ran now
        error = result.error or {}
        return result.ok or error.get("started") is not False

    def tool_result_event(self, job: JobSnapshot, result: ToolResult, **more: Any) -> None:
        """Journal what a tool's call did (`more`: what else the event says)."""
        self.event(
            job,
            "tool_result",
            tool=result.tool,
            ok=result.ok,
            result=result.result,
            error=result.error,
            ledger=result.ledger,
            key=result.key,
            tool_ms=round(result.tool_ms, 3),
            **more,
            **_handled(result),
        )

    def late_result(self, job: JobSnapshot, result: ToolResult) -> JobSnapshot:
        """Journal a tool's result that came after its job stopped waiting for it:
        the effect happened, or may have, and the journal says so; the job stays as it is
        (once: a repeat of the result is stale)."""
        job.outbox = []
        job.abandoned = None
        self.tool_result_event(job, result, late=True, after=job.status)
        return job

    @staticmethod
    def check_relayed(job: JobSnapshot, graph: Graph, result: ToolResult) -> None:
        """Refuse a verdict that carries a tool's result for anything but this step's
        call: a verifier checks whatever an executor hands it, so the result it relays
        must be of this job, this step and the tool this step calls."""
        tool = pending_tool(job, graph)
        if (result.job_id, result.step, result.tool) != (job.job_id, job.step, tool):
            raise ForgedReportError(
                f"a verdict for step {job.step} of job {job.job_id} relays a result of tool "
                f"{result.tool!r} for step {result.step} of job {result.job_id}, but that "
                f"step waits for tool {tool!r}",
                job_id=job.job_id,
                sender=f"tool.{result.tool}",
            )

    def no_edge(
        self, job: JobSnapshot, decision: Decision, spent: dict[str, Any], **why: Any
    ) -> None:
        """Journal a decision that names no edge (a budget, a bug, a refused request)."""
        self.event(
            job,
            "decision",
            state=job.state,
            edge=None,
            reasks=decision.reasks,
            usage=decision.usage.model_dump(),
            llm_ms=round(decision.llm_ms, 3),
            spent=spent,
            **why,
            **_handled(decision),
        )

    def resolve(self, job: JobSnapshot, graph: Graph, request: ResolveRequest) -> JobSnapshot:
        """A person's resolve: the job leaves its human state by `request.edge`."""
        self.check_resolve(job, graph, request)
        job.outbox = []
        if request.resolve_id is not None:
            job.resolve_ids = [*job.resolve_ids[-(_RESOLVE_IDS_KEPT - 1) :], request.resolve_id]
        self.unpark(job)
        self.stop_call(job, graph, f"a person resolved the job with edge {request.edge!r}")
        limits = request.limits()
        job.budget = job.budget.override(limits)
        if limits.deadline_s is not None:
            self.set_deadline(job, self.now + limits.deadline_s)
        job.status, job.error = "running", None
        self.event(
            job,
            "resolved",
            state=job.state,
            edge=request.edge,
            args=request.args,
            note=request.note,
            by=request.by,
            resolve_id=request.resolve_id,
            budget=limits.model_dump(exclude_none=True),
        )
        job.step += 1
        tool, args = picked(graph.edge(job.state, request.edge), request.args)
        decision = Decision(
            job_id=job.job_id,
            step=job.step,
            edge=request.edge,
            tool=tool,
            args=args,
            reason=request.note,
        )
        return self.decided(job, graph, decision, by="human")

    def cancel(
        self, job: JobSnapshot, request: CancelRequest, graph: Graph | None = None
    ) -> JobSnapshot:
        """A person's cancel: any job that has not ended ends `cancelled` (and the call
        it waits for, if any, is stopped: `graph` names its tool)."""
        self.check_cancel(job)
        job.outbox = []
        self.unpark(job)
        reason = request.reason or "cancelled by request"
        self.stop_call(job, graph, f"the job was cancelled: {reason}")
        return self.finish(job, "cancelled", error={"code": "cancelled", "message": reason})

    def await_signal(self, job: JobSnapshot, state: State) -> JobSnapshot:
        """The job waits in `state` for its signal (not a decision): journaled, and timed
        by a `SignalTimeout` if the state has a timeout."""
        job.phase, job.signal = "signal", state.wait_for
        until = self.now + state.timeout_s if state.timeout_s is not None else None
        self.event(job, "signal", name=state.wait_for, state=job.state, waiting=True, until=until)
        if until is not None:
            check = SignalTimeout(job_id=job.job_id, step=job.step, at=until, armed=self.now)
            job.outbox.append(
                Outgoing(
                    subject=self.names.timer,
                    msg_id=msg_id(job.job_id, job.step, "signal-timeout"),
                    data=encode(check),
                )
            )
        return job

    @staticmethod
    def signalled_already(job: JobSnapshot, request: SignalRequest) -> bool:
        """Whether this very signal (its `signal_id`) was delivered already."""
        return request.signal_id is not None and request.signal_id in job.signal_ids

    def check_signal(self, job: JobSnapshot, graph: Graph, request: SignalRequest) -> State:
        """The state waiting for `request`'s signal, or `JobStateError` saying what the
        job does instead; its data checked against the state's `payload` (or the
        `on_signal` edge's arguments): `SchemaError`."""
        if job.phase != "signal" or job.signal != request.name or job.state is None:
            doing = (
                f"waits for signal {job.signal!r}"
                if job.phase == "signal"
                else f"is {job.status}" + (f" in {job.state!r}" if job.state else "")
            )
            raise JobStateError(
                f"job {job.job_id} is not waiting for signal {request.name!r}: it {doing}",
                job_id=job.job_id,
                status=job.status,
                signal=request.name,
            )
        state = graph.state(job.state)
        edge = state.edge(state.on_signal or "")
        schema = state.payload or (edge.args if edge is not None else None)
        if schema is not None:
            check_data(request.name, schema, request.data)
        return state

    def signal(self, job: JobSnapshot, graph: Graph, request: SignalRequest) -> JobSnapshot:
        """A signal the job waits for: its data is kept in the job's results (under the
        signal's name) and is the arguments of the state's `on_signal` edge."""
        state = self.check_signal(job, graph, request)
        job.outbox = []
        if request.signal_id is not None:
            job.signal_ids = [*job.signal_ids[-(_RESOLVE_IDS_KEPT - 1) :], request.signal_id]
        self.event(
            job,
            "signal",
            name=request.name,
            data=request.data,
            by=request.by,
            signal_id=request.signal_id,
        )
        job.results[request.name] = request.data
        job.signal = None
        assert state.on_signal is not None
        decision = Decision(
            job_id=job.job_id,
            step=job.step,
            edge=state.on_signal,
            args=request.data,
            reason=f"signal {request.name!r}" + (f" from {request.by}" if request.by else ""),
        )
        return self.decided(job, graph, decision, by="signal")

    def signal_timeout(
        self, job: JobSnapshot, graph: Graph, check: SignalTimeout
    ) -> JobSnapshot | None:
        """No signal came in time: the state's `on_timeout` edge."""
        if job.terminal or job.phase != "signal" or job.step != check.step or job.state is None:
            return None  # it came, or the job moved on
        state = graph.state(job.state)
        if state.on_timeout is None:
            return None
        job.outbox = []
        self.event(job, "signal", name=job.signal, timed_out=True, waited_s=state.timeout_s)
        job.signal = None
        decision = Decision(
            job_id=job.job_id,
            step=job.step,
            edge=state.on_timeout,
            reason=f"no signal {state.wait_for!r} within {state.timeout_s:g} s",
        )
        return self.decided(job, graph, decision, by="timeout")

    def deadline(self, job: JobSnapshot, graph: Graph, check: DeadlineCheck) -> JobSnapshot | None:
        """The job's deadline timer fired."""
        if job.status == "accepted" and job.deadline == check.at and job.flow_key is not None:
            message = (
                f"the job's deadline of {job.budget.deadline_s} s passed while it waited for "
                f"its place under key {job.flow_key}"
            )
            error = {"code": "deadline_exceeded", "exhausted": "deadline", "message": message}
            return self.finish(job, "deadline_exceeded", error=error)
        # A newer deadline (set by a person's resolve) has its own timer; a job waiting
        # for a person is on the person's time.
        if job.terminal or job.deadline != check.at or job.status != "running":
            return None
        job.outbox = []
        ran = self.now - (job.deadline - (job.budget.deadline_s or 0))
        message = (
            f"the job's deadline of {job.budget.deadline_s} s passed ({ran:.1f} s after it started)"
        )
        self.stop_call(job, graph, message)
        return self.exhaust(job, graph, "deadline", message)

    def stall(
        self, job: JobSnapshot, graph: Graph, check: StallCheck, on_stuck: str
    ) -> tuple[JobSnapshot | None, StallCheck | None]:
        """The stall watchdog fired: a running job whose journal has not moved since the
        check was armed goes to a person (or fails, by `on_stuck`); one that moved gets
        its next check (returned), `stall_s` after its last change."""
        stall_s = job.budget.stall_s
        if job.status != "running" or job.stall_arm != check.arm or stall_s is None:
            return None, None  # ended, parked (a person's time), or watched by a newer arm
        if job.event_seq != check.seq or job.phase in ("child", "signal"):
            # It moved; or it waits for a child job (which has a watchdog of its own) or a
            # signal (as long as its state says).
            at = max(job.updated_at + stall_s, self.now + 1.0)
            again = StallCheck(
                job_id=job.job_id, at=at, seq=job.event_seq, arm=job.stall_arm, armed=self.now
            )
            return None, again
        job.outbox = []
        waited = self.now - job.updated_at
        reason = f"no progress for {waited:.0f} s (stall_s {stall_s:g}): {self.awaited(job, graph)}"
        return self.stuck(job, graph, on_stuck, "stalled", reason), None

    def overdue(
        self, job: JobSnapshot, graph: Graph, grace: float
    ) -> list[DeadlineCheck | StallCheck | SignalTimeout | FlowTick]:
        """The timers the job waits for that are due more than `grace` s ago: had the
        servers kept them, they would have fired (the timer sweep sends them again). Each
        is due at once; its handler judges it as it would have (a timer's cause is its
        identity: one that did fire is not applied twice)."""
        late = self.now - grace
        found: list[DeadlineCheck | StallCheck | SignalTimeout | FlowTick] = []
        if not job.timed:
            return found  # ended, or on a person's time
        if job.deadline is not None and job.deadline < late:
            found.append(DeadlineCheck(job_id=job.job_id, at=job.deadline))
        if job.status == "accepted":
            if job.flow_key is not None and job.updated_at < late:
                found.append(FlowTick(key=job.flow_key, at=self.now))  # its key's wake-up
            return found
        stall_s = job.budget.stall_s
        if job.phase == "signal" and job.state is not None:
            state = graph.state(job.state)
            until = job.updated_at + (state.timeout_s or 0.0)
            if state.timeout_s is not None and state.on_timeout is not None and until < late:
                found.append(SignalTimeout(job_id=job.job_id, step=job.step, at=until))
        elif job.phase != "child" and stall_s is not None and job.updated_at + stall_s < late:
            at = job.updated_at + stall_s
            found.append(StallCheck(job_id=job.job_id, at=at, seq=job.event_seq, arm=job.stall_arm))
        return found

    def dead_letter(
        self, job: JobSnapshot, graph: Graph, step: int | None, reason: str, on_stuck: str
    ) -> JobSnapshot | None:
        """A message of the job was dead-lettered: if it was for the job's current step (or
        for no step), the job must not wait for it forever."""
        if job.terminal:
            return None
        if job.status == "accepted":  # it never started: nobody can decide for it
            job.outbox = []
            return self.finish(job, "failed", error={"code": "dead_letter", "message": reason})
        if job.status != "running" or (step is not None and step != job.step):
            return None
        job.outbox = []
        return self.stuck(job, graph, on_stuck, "dead_letter", reason)

    def stuck(
        self, job: JobSnapshot, graph: Graph, on_stuck: str, kind: EscalationKind, reason: str
    ) -> JobSnapshot:
        """A job that cannot move by itself: a person is told, or it fails (`on_stuck`)."""
        if on_stuck == "fail":
            return self.finish(job, "failed", error={"code": kind, "message": reason})
        # The work under way may still report (a slow agent, a replayed letter): the job
        # keeps its phase so that the report resumes it.
        return self.park(job, graph, reason, kind=kind, keep_phase=True)

    def migrate(self, job: JobSnapshot, latest: AgentInfo) -> JobSnapshot:
        """Move a job about to ask its agent for a step to the agent's newest graph, if it can.

        The rule (docs/design/architecture.md, Graph versions): at a step boundary, a job moves
        to the newest registered version of its agent's graph when that version has the
        job's state, under the same name or the new name its `renamed` gives; otherwise
        it stays on the version it runs on. (An agent of another version that gets the
        step applies the same rule and says so in its `Decision`.)
        """
        step = msg_id(job.job_id, job.step, "step")
        if job.status != "running" or not any(out.msg_id == step for out in job.outbox):
            return job
        if job.graph_version in (None, latest.graph.version) or job.state is None:
            return job
        target = latest.graph.migration_target(job.state, latest.renamed)
        if target is None:
            return job
        job.outbox = [out for out in job.outbox if out.msg_id != step]
        self.move_to(job, latest, target)
        return self.next_step(job, latest.graph)

    def settle(
        self,
        job: JobSnapshot,
        *,
        cause: str,
        status_before: JobStatusName,
        latest: AgentInfo | None,
    ) -> JobSnapshot:
        """What every transition ends with, whichever message made it: at a step boundary
        the job may move to `latest` (its agent's newest graph, `migrate`); it records
        its `cause` and time; a job that starts or resumes running gets a stall
        watchdog. The supervisor calls it before it writes the snapshot, and so does
        `actors.testing.run_job`."""
        if latest is not None and job.phase == "decide":
            job = self.migrate(job, latest)
        job.cause = cause
        job.updated_at = self.now
        if job.status == "running" and status_before != "running":
            self.arm_stall(job)
        if job.status != status_before:
            self.index(job)
        return job

    def index(self, job: JobSnapshot) -> None:
        """Write the job's entry in the index that listing reads (`Names.index_bucket`),
        and its key in `Names.running_bucket` while it runs or waits to start: what the
        timer sweep reads (a job that ended or waits for a person has no timer)."""
        key = self.names.index_key(job.agent, job.job_id)
        running = kv_subject(self.names.running_bucket, self.names.running_key(job.job_id))
        ended = {} if job.timed else {Header.KV_OPERATION: "DEL"}
        job.outbox += [
            Outgoing(
                subject=kv_subject(self.names.index_bucket, key),
                msg_id=msg_id(job.job_id, job.event_seq, "index"),
                data=encode(job.entry()),
                headers=self.expiry(job),
            ),
            Outgoing(
                subject=running,
                msg_id=msg_id(job.job_id, job.event_seq, "running"),
                data=b"1" if job.timed else b"",
                headers=ended | self.expiry(job),
            ),
        ]

    def expiry(self, job: JobSnapshot) -> dict[str, str]:
        """The headers of a write about the job: an ended job's expires after `retention`
        (the server deletes the message: a stream with per-message TTLs)."""
        return {Header.TTL: str(int(self.retention))} if job.terminal else {}

    # --- the parts of a transition -------------------------------------------------------

    @staticmethod
    def resolved_already(job: JobSnapshot, request: ResolveRequest) -> bool:
        """Whether this very resolve (its `resolve_id`) was carried out already."""
        return request.resolve_id is not None and request.resolve_id in job.resolve_ids

    def check_resolve(self, job: JobSnapshot, graph: Graph, request: ResolveRequest) -> Edge:
        """The edge a person may take now, or `JobStateError` saying why not
        (`JobMovedError`: the resolve names a step the job has left)."""
        if request.step is not None and request.step != job.step:
            raise JobMovedError(
                f"job {job.job_id} has left step {request.step}, the wait this resolve was "
                f"for: it is {job.status} at step {job.step}"
                + (f" in {job.state!r}" if job.state else "")
                + "; look at it again before resolving",
                job_id=job.job_id,
                step=request.step,
                current_step=job.step,
                status=job.status,
            )
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
        if edge.args is not None:
            check_args(edge.name, edge.args, request.args)
        if edge.tools:
            tool, _args = picked(edge, request.args)
            refused = self.refused_tool(job, state, edge, tool)
            if refused is not None:
                raise SchemaError(
                    f'{refused}: a person gives {{"tool": <its name>, "args": {{...}}}}',
                    field="args.tool",
                    edge=edge.name,
                )
        if edge.to == job.state and state.human and edge.tool is None and not edge.verifier:
            raise JobStateError(
                f"edge {edge.name!r} leads straight back to {job.state!r}, where the job "
                "waits: it would park again at once with nothing done; take another edge",
                job_id=job.job_id,
                edge=request.edge,
            )
        return edge

    def stop_call(self, job: JobSnapshot, graph: Graph | None, reason: str) -> None:
        """The job stops waiting for the tool call of its step, if it waits for one: its
        executors are told to stop it (`ToolCancel`, sent once the transition is written).
        A child job it waits for is cancelled (a durable `CancelJob`, which its own
        cancel carries down to its calls and children)."""
        if job.phase == "child":
            children.stop(self, job, reason)
            job.waiting = None
            return
        tool = pending_tool(job, graph)
        if job.phase == "tool" and tool is not None:
            cancel = ToolCancel(job_id=job.job_id, step=job.step, tool=tool, reason=reason)
            job.cancels.append(cancel)
            job.abandoned = cancel  # its result, if it comes, is journaled (`late_result`)
            # Durably too, with the transition's outbox: an executor that was away when
            # the notice went out reads it after its claim, before the tool starts.
            key = self.names.cancel_key(tool, job.job_id, job.step)
            job.outbox.append(
                Outgoing(
                    subject=kv_subject(self.names.cancels_bucket, key),
                    msg_id=msg_id(job.job_id, job.step, f"cancel-{tool}"),
                    data=encode(cancel),
                )
            )

    def check_cancel(self, job: JobSnapshot) -> None:
        if job.terminal:
            raise JobStateError(
                f"job {job.job_id} already ended: {job.status}",
                job_id=job.job_id,
                status=job.status,
            )

    def awaited(self, job: JobSnapshot, graph: Graph) -> str:
        """What a running job waits for, in words."""
        edge = graph.edge(job.state, job.pending_edge)
        match job.phase:
            case "decide":
                what = f"agent {job.agent!r} to decide step {job.step} in state {job.state!r}"
            case "tool" if edge is not None:
                tool = pending_tool(job, graph)
                what = f"tool {tool!r} (step {job.step}, edge {edge.name!r})"
            case "child" if job.waiting is not None:
                running = [s.job_id for s in job.waiting.slots if s.state == "running"]
                what = f"child job(s) {', '.join(running)} (step {job.step})"
            case "signal":
                what = f"signal {job.signal!r} in state {job.state!r} (rig signal)"
            case "verify" if edge is not None:
                what = f"verifier {edge.verifier!r} (step {job.step}, edge {edge.name!r})"
            case _:
                what = f"step {job.step} in state {job.state!r}"
        return f"it waits for {what}; is a process of that kind running?"

    def decided(
        self, job: JobSnapshot, graph: Graph, decision: Decision, *, by: str = "llm"
    ) -> JobSnapshot:
        assert job.state is not None
        state = graph.state(job.state)
        job.usage.add(decision.usage)
        spent = self.spent(job)
        if decision.exhausted is not None:
            self.no_edge(job, decision, spent, exhausted=decision.exhausted, reason=decision.reason)
            return self.exhaust(job, graph, decision.exhausted, decision.reason)
        if decision.code_error is not None:
            error = decision.code_error
            self.no_edge(job, decision, spent, code_error=error)
            job.error = {"code": "code_error", **error}
            reason = (
                f"the agent's own code raised {error.get('type')}: {error.get('message')} "
                f"(a bug, not a model's answer; the traceback is in agent {job.agent!r}'s log)"
            )
            return self.park(job, graph, reason, kind="code_error")
        if decision.config_error is not None:
            error = decision.config_error
            self.no_edge(job, decision, spent, config_error=error, calls=decision.calls)
            job.error = {"code": "config_error", **error}
            reason = (
                f"the model provider refused the agent's request: {decision.reason} "
                f"(a configuration error, not a model's answer: fix agent {job.agent!r}'s "
                "LLM config, `rig models probe` shows what the server accepts)"
            )
            return self.park(job, graph, reason, kind="config_error")
        edge = graph.edge(job.state, decision.edge)
        fallback, reason = decision.fallback, decision.reason
        tool = (edge.tool or decision.tool) if edge is not None and edge.calls else None
        refused = self.refused_tool(job, state, edge, tool) if edge is not None else None
        if edge is None or refused is not None:
            # An agent of another version of the graph, or one that picked what the edge
            # does not offer (a forged or confused decision): take the safe edge.
            fallback = True
            reason = refused or f"edge {decision.edge!r} is not an edge of {job.state!r}"
            edge = state.edge(state.safe_edge or "")
            if edge is None:
                return self.finish(job, "failed", error={"code": "no_safe_edge", "message": reason})
            tool = edge.tool  # a safe edge offers no set of tools (`Graph.check`)
        self.event(
            job,
            "decision",
            state=job.state,
            edge=edge.name,
            by=by,
            tool=tool,  # the call it makes, if any: one event, not two
            args=decision.args,
            reasks=decision.reasks,
            fallback=fallback,
            reason=reason,
            usage=decision.usage.model_dump(),
            llm_ms=round(decision.llm_ms, 3),
            spent=spent,
            **({"calls": decision.calls} if decision.calls else {}),
            **({"answer": decision.answer} if decision.answer else {}),
            **({"outage": True} if decision.outage else {}),
            **({"memory": decision.memory} if decision.memory else {}),
            **_handled(decision),
        )
        note: dict[str, Any] = {"step": job.step, "state": job.state, "edge": edge.name, "by": by}
        if edge.tools:  # which of its tools, and (a lookup) what was asked
            note |= {"tool": tool, "args": decision.args} if edge.name == LOOKUP else {"tool": tool}
        job.decisions.append(note | ({"reason": reason} if reason else {}))
        over = self.over_budget(job) if by == "llm" else None  # a person's choice costs nothing
        if over is not None:  # the call spent more than the agent reserved for it
            return self.exhaust(job, graph, *over)
        job.pending_edge, job.pending_args, job.pending_result = edge.name, decision.args, None
        job.pending_tool = tool
        if edge.starts:
            return children.begin(self, job, graph, edge, decision.args)
        if edge.output:
            job.pending_result = decision.args  # what a verifier checks
        if tool is not None:
            job.phase = "tool"
            if edge.name == LOOKUP:
                job.lookups += 1
            call = ToolCall(
                job_id=job.job_id,
                step=job.step,
                tool=tool,
                args=decision.args,
                verifier=edge.verifier,
                context=_context(job) if edge.verifier is not None else None,
                lookup=edge.name == LOOKUP,
                deadline=job.deadline,
                memory=job.memory,
            )
            self.command(job, self.names.tool(tool), call, "tool_call")
            return job
        if edge.verifier is not None:
            return self.verify(job, edge)
        outage = reason if decision.outage and fallback else ""
        return self.passed(job, graph, edge, outage=outage)

    def refused_tool(
        self, job: JobSnapshot, state: State, edge: Edge, tool: str | None
    ) -> str | None:
        """Why a decision's edge cannot call `tool` (None: it can): a lookup with none
        left, or a tool the edge's set does not offer (`self.owners` says who serves one
        picked of an executor's tools)."""
        if edge.name == LOOKUP and job.lookups >= state.max_lookups:
            return f"no lookup is left in state {job.state!r} (max_lookups {state.max_lookups})"
        if not edge.tools:
            return None
        if tool is None:
            return f"edge {edge.name!r} calls one of a set of tools, and the decision names none"
        if not edge.offers(tool, self.owners.get(tool)):
            offered = "a lookup" if edge.name == LOOKUP else f"edge {edge.name!r}"
            return (
                f"tool {tool!r} is not one of the tools {offered} offers ({', '.join(edge.tools)})"
            )
        return None

    def passed(
        self, job: JobSnapshot, graph: Graph, edge: Edge, *, outage: str = ""
    ) -> JobSnapshot:
        """The edge went as asked (its call done, its check passed): an output edge's
        arguments become the job's output, and the job enters the edge's target."""
        if edge.output:
            job.output = job.pending_args
        if job.compaction is not None and job.state == graph.compact:
            threads.compacted(self, job, edge, job.pending_args if edge.args else None)
        return self.enter(job, graph, edge.to, edge=edge.name, outage=outage)

    def tool_done(
        self, job: JobSnapshot, graph: Graph, result: ToolResult, verdict: Verdict | None = None
    ) -> JobSnapshot:
        """Record the tool's result; `verdict` is the verifier's, if the result came through it."""
        edge = graph.edge(job.state, job.pending_edge)
        assert job.state is not None and edge is not None
        self.tool_result_event(job, result)
        if (
            result.error is not None
            and result.error.get("code") == "cancelled"
            and job.deadline is not None
            and result.error.get("deadline") == job.deadline
        ):
            # The executor saw the job's deadline pass (before the supervisor's timer
            # fired, or the call came after it): the deadline ends the step, as the timer's
            # would, not the edge's failure path.
            message = (
                f"the job's deadline of {job.budget.deadline_s} s passed during tool "
                f"{result.tool}'s call: {result.error.get('message')}"
            )
            return self.exhaust(job, graph, "deadline", message)
        if result.error is not None and result.error.get("code") == "effect_unknown":
            # The effect may have happened and the tool cannot tell: a person must look,
            # whatever the graph says about ordinary failures.
            job.error = result.error
            return self.park(
                job,
                graph,
                f"tool {result.tool} may or may not have run (key {result.key}); "
                "it has no reconcile, so it is not run again",
                kind="effect_unknown",
            )
        if not result.ok:
            error = result.error or {}
            return self.enter(
                job,
                graph,
                graph.fail_target(job.state, edge),
                edge=edge.name,
                reason=f"tool {result.tool} failed: {error.get('code')}: {error.get('message')}",
            )
        if edge.name == LOOKUP:  # what the LLM looked at: with its question, not the results
            job.decisions[-1]["result"] = result.result
        else:
            job.results[result.tool] = result.result
        job.pending_result = result.result
        if verdict is not None:
            return self.verified(job, graph, verdict)
        if edge.verifier is not None:
            return self.verify(job, edge)
        return self.passed(job, graph, edge)

    def verified(self, job: JobSnapshot, graph: Graph, verdict: Verdict) -> JobSnapshot:
        edge = graph.edge(job.state, job.pending_edge)
        assert job.state is not None and edge is not None
        self.event(
            job,
            "verdict",
            verifier=verdict.verifier,
            passed=verdict.passed,
            reason=verdict.reason,
            **_handled(verdict),
        )
        if verdict.passed:
            return self.passed(job, graph, edge)
        return self.enter(
            job,
            graph,
            graph.fail_target(job.state, edge),
            edge=edge.name,
            reason=f"verifier {verdict.verifier} rejected: {verdict.reason}",
        )

    def verify(self, job: JobSnapshot, edge: Edge) -> JobSnapshot:
        assert edge.verifier is not None
        job.phase = "verify"
        request = VerifyRequest(
            job_id=job.job_id,
            step=job.step,
            verifier=edge.verifier,
            tool=job.pending_tool or edge.tool,
            args=job.pending_args,
            result=job.pending_result,
            context=_context(job),
        )
        self.command(job, self.names.verifier(edge.verifier), request, "verify")
        return job

    def enter(
        self,
        job: JobSnapshot,
        graph: Graph,
        target: str,
        *,
        edge: str,
        reason: str = "",
        outage: str = "",
    ) -> JobSnapshot:
        """Move the job into `target` and decide what follows: finish, park, or next step.
        `outage`: the edge is the safe one because no model provider answered (their
        words); a person it brings the job to is told so (`provider_down`)."""
        job.pending_edge, job.pending_args, job.pending_result = None, {}, None
        job.pending_tool = None
        if reason and job.decisions and job.decisions[-1]["step"] == job.step:
            job.decisions[-1]["outcome"] = reason  # the edge did not go as asked: why
        if edge == LOOKUP:  # still in its state, which decides again: a step, not a visit
            return self.next_step_after(job, graph)
        if job.compaction is not None:  # it left the summarising state without a summary
            threads.compacted(self, job, graph.edge(job.state, edge), None)
        visits = job.visits.get(target, 0) + 1
        limit = job.budget.max_visits
        if limit is not None and visits > limit and graph.state(target).decided_by_llm:
            return self.exhaust(
                job,
                graph,
                "visits",
                f"edge {edge!r} would enter {target!r} a {_nth(visits)} time; "
                f"max_visits is {limit}",
            )
        self.move(job, target, edge=edge, reason=reason)
        state = graph.state(target)
        if state.terminal is not None:
            return self.finish(job, state.terminal)
        if state.human:
            source = job.path[-2] if len(job.path) > 1 else None
            if outage:
                why = (
                    f"no model provider answered ({outage}); the safe edge {edge!r} from "
                    f"{source!r} brought the job to {target!r}, for a person"
                )
                return self.park(job, graph, why, kind="provider_down")
            why = (
                reason or f"edge {edge!r} from {source!r} leads to {target!r}, a state for a person"
            )
            return self.park(job, graph, why)
        return self.next_step_after(job, graph)

    def next_step_after(self, job: JobSnapshot, graph: Graph) -> JobSnapshot:
        """The step after this one, if the job's steps allow one more."""
        if job.step + job.child_steps >= job.budget.max_steps:
            children = f" and its children {job.child_steps}" if job.child_steps else ""
            return self.exhaust(
                job,
                graph,
                "steps",
                f"the job took {job.step} steps{children} without finishing "
                f"(max_steps {job.budget.max_steps})",
            )
        job.step += 1
        return self.next_step(job, graph)

    def move(self, job: JobSnapshot, target: str, *, edge: str | None, reason: str) -> None:
        """Put the job in `target`, in the journal, its path and its visit counts."""
        self.event(job, "transition", source=job.state, target=target, edge=edge, reason=reason)
        job.state = target
        job.path.append(target)
        job.visits[target] = job.visits.get(target, 0) + 1
        job.lookups = 0

    def next_step(self, job: JobSnapshot, graph: Graph) -> JobSnapshot:
        over = self.over_budget(job)
        if over is not None:
            return self.exhaust(job, graph, *over)
        if job.step == 0:
            job.step = 1
        assert job.state is not None
        state = graph.state(job.state)
        if state.wait_for is not None:
            return self.await_signal(job, state)
        job.phase = "decide"
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
            edges=[edge.name for edge in state.edges],
            sampling=job.sampling,
            lookups_left=state.max_lookups - job.lookups if state.lookup else 0,
            memory=job.memory,
        )
        self.command(job, self.names.agent(job.agent), request, "step")
        return job

    def over_budget(self, job: JobSnapshot) -> tuple[ExhaustedKind, str] | None:
        """The budget that leaves no room for another LLM call, if one is spent."""
        budget, usage = job.budget, job.usage
        if budget.max_tokens is not None and usage.tokens >= budget.max_tokens:
            return "tokens", f"spent {usage.tokens} of max_tokens {budget.max_tokens}"
        if budget.max_cost is not None and usage.cost >= budget.max_cost:
            return "cost", f"spent {usage.cost:.6g} of max_cost {budget.max_cost:.6g}"
        if job.deadline is not None and self.now >= job.deadline:
            return "deadline", f"the job's deadline of {budget.deadline_s} s passed"
        return None

    def exhaust(
        self, job: JobSnapshot, graph: Graph, kind: ExhaustedKind, message: str
    ) -> JobSnapshot:
        """A budget ran out: go to the agent's fallback state if it has one, else end the job."""
        status = _EXHAUSTED_STATUS.get(kind, "budget_exceeded")
        fallback = job.on_exhausted if job.on_exhausted != job.state else None
        self.event(
            job,
            "budget",
            exhausted=kind,
            message=message,
            spent=self.spent(job),
            action=f"enter {fallback}" if fallback else status,
        )
        job.pending_edge, job.pending_args, job.pending_result = None, {}, None
        job.pending_tool = None
        error = {"code": status, "exhausted": kind, "message": message}
        if fallback is None:
            return self.finish(job, status, error=error)
        self.move(job, fallback, edge=None, reason=message)
        state = graph.state(fallback)
        if state.terminal is not None:
            return self.finish(job, state.terminal, error=error)
        job.error = error
        return self.park(job, graph, message, kind="exhausted")

    def park(
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
            parent=job.parent.job_id if job.parent is not None else None,
        )
        job.escalation = escalation
        # What a person reads carries the job's input; the snapshot keeps it once. The
        # inbox is written before the journal says `waiting_human`, so that whoever reads
        # that finds the job in the inbox.
        data = encode(escalation.model_copy(update={"input": job.input}))
        key = msg_id(job.job_id, job.event_seq + 1, "escalation")  # the status event's seq
        job.outbox.append(Outgoing(subject=self.names.escalations, msg_id=key, data=data))
        job.outbox.append(
            Outgoing(
                subject=kv_subject(self.names.inbox_bucket, job.job_id),
                msg_id=key,
                data=data,
            )
        )
        self.event(
            job,
            "status",
            status=job.status,
            state=job.state,
            reason=reason,
            kind=kind,
            edges=escalation.edges,
            error=job.error,
        )
        return job

    def unpark(self, job: JobSnapshot) -> None:
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

    def arm_stall(self, job: JobSnapshot) -> None:
        """Start a stall watchdog for a job that starts (or resumes) running."""
        if job.budget.stall_s is None:
            return
        job.stall_arm += 1
        check = StallCheck(
            job_id=job.job_id,
            at=self.now + job.budget.stall_s,
            seq=job.event_seq,
            arm=job.stall_arm,
            armed=self.now,
        )
        job.outbox.append(
            Outgoing(
                subject=self.names.timer,
                msg_id=msg_id(job.job_id, job.event_seq, f"stall{job.stall_arm}"),
                data=encode(check),
            )
        )

    def set_deadline(self, job: JobSnapshot, at: float) -> None:
        job.deadline = at
        check = DeadlineCheck(job_id=job.job_id, at=at, armed=self.now)
        job.outbox.append(
            Outgoing(
                subject=self.names.timer,
                msg_id=msg_id(job.job_id, job.event_seq, "deadline"),
                data=encode(check),
            )
        )

    def spent(self, job: JobSnapshot) -> dict[str, Any]:
        return {
            "steps": job.step + job.child_steps,
            "tokens": job.usage.tokens,
            "cost": job.usage.cost,
            "seconds": round(self.now - job.created_at, 3),
        }

    def finish(
        self, job: JobSnapshot, status: Any, *, error: dict[str, Any] | None = None
    ) -> JobSnapshot:
        job.status, job.phase, job.error = status, None, error
        job.result = {"state": job.state, "results": job.results}
        if job.output is not None:
            job.result["output"] = job.output
        self.event(
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
        if job.parent is not None:  # its parent waits for this
            link = job.parent
            ended = ChildEnded(
                job_id=link.job_id,
                step=link.step,
                child=job.job_id,
                agent=job.agent,
                status=status,
                result=job.result,
                error=error,
                usage=job.usage,
                steps=job.step + job.child_steps,
                budget=job.budget,
            )
            job.outbox.append(
                Outgoing(
                    subject=self.names.supervisor_for(link.job_id),
                    msg_id=msg_id(link.job_id, link.step, f"child-{job.job_id}"),
                    data=encode(ended),
                )
            )
        if job.thread is not None:  # the thread keeps the turn; its next one starts
            threads.ended(self, job)
        if job.flow_key is not None:  # its place under its key goes to the next
            flows.ended(self, job)
        return job

    def start_turn(
        self, job: JobSnapshot, info: AgentInfo, record: ThreadRecord, runs: bool, most: int
    ) -> JobSnapshot | None:
        """A turn of a thread (`actors/jobs/threads.py`), whose context carries at most
        `most` tokens of it (`RIG_MAX_THREAD_TOKENS`) whatever its agent declares."""
        return threads.start(self, job, info, record, runs, min(info.thread_tokens, most))

    def too_large(
        self, job: JobSnapshot, grown: JobSnapshot, size: int, limit: int, *, what: str
    ) -> tuple[JobSnapshot, str]:
        """End `job` (as it was before a change that grew `what`, its state or one of its
        journal events, to `size` bytes, over `limit`) as failed; and the largest part of
        the grown job, for the log.

        Tool results over the executors' inline limit travel by reference, so what grows
        a job past one message is its input, an LLM's arguments, or many results at once.
        """
        parts = {"the input": len(encode(grown.input))}
        parts["the arguments of edge " + repr(grown.pending_edge)] = len(encode(grown.pending_args))
        for tool, value in grown.results.items():
            parts[f"the result of tool {tool!r}"] = len(encode(value))
        largest = max(parts, key=lambda part: parts[part])
        setting = "RIG_MAX_EVENT_BYTES" if "event" in what else "RIG_MAX_SNAPSHOT_BYTES"
        message = (
            f"{what} would grow to {size} bytes, over its {limit}-byte limit ({setting}, "
            f"and the server's max_payload); the largest part is {largest} "
            f"({parts[largest]} bytes). Tool results over RIG_INLINE_RESULT_BYTES travel by "
            "reference; keep inputs and LLM arguments small (pass a reference instead)"
        )
        job.outbox = []
        self.unpark(job)
        job.pending_edge, job.pending_args, job.pending_result = None, {}, None
        job.pending_tool = None
        if len(encode(job.results)) * 4 > limit:  # the end event repeats them: keep it small
            job.results = {}
        error = {"code": "too_large", "message": message, "bytes": size, "limit": limit}
        ended = self.finish(job, "failed", error=error)
        self.index(ended)
        return ended, largest

    def command(self, job: JobSnapshot, subject: str, message: Any, kind: str) -> None:
        job.outbox.append(
            Outgoing.model_construct(  # Rig's own values: validating them again costs a step
                subject=subject, msg_id=msg_id(job.job_id, job.step, kind), data=encode(message)
            )
        )

    def accept(
        self, job_id: str, info: AgentInfo, request: SubmitRequest, request_hash: str = ""
    ) -> StartJob:
        """A submission accepted now: the `StartJob` that records it, with the agent's
        budget overridden by the request's limits and the deadline counted from now."""
        budget = info.budget.override(request.limits())
        return StartJob(
            job_id=job_id,
            agent=info.name,
            input=request.input,
            budget=budget,
            deadline=self.now + budget.deadline_s if budget.deadline_s else None,
            on_exhausted=info.on_exhausted,
            accepted_at=self.now,
            request_hash=request_hash,
            webhook=request.webhook.url if request.webhook else None,
            sampling=request.sampling,
            labels=request.labels,
            thread=request.thread,
            thread_busy=request.thread_busy or "wait",
            memory=memory_of(info, request.thread, request.labels),
            **_flow(info, request),
        )

    def new_snapshot(self, start: StartJob) -> JobSnapshot:
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
            webhook=start.webhook,
            sampling=start.sampling,
            labels=start.labels,
            thread=start.thread,
            thread_busy=start.thread_busy,
            memory=start.memory,
            flow_key=start.flow_key,
            flow_limit=start.flow_limit,
            flow_rate=start.flow_rate,
            flow_debounce=start.flow_debounce,
            priority=start.priority,
            trace=start.trace,
            trace_parent=start.trace_parent,
            parent=start.parent,
        )
        parent = {"parent": start.parent.job_id} if start.parent is not None else {}
        self.event(job, "accepted", agent=start.agent, input=start.input, **parent)
        return job

    def event(self, job: JobSnapshot, type_: Any, **data: Any) -> None:
        """Append a journal event to the job's outbox."""
        job.event_seq += 1
        # Built from Rig's own values, not validated again (a few times each step); a
        # reader of the journal validates what it decodes.
        event = Event.model_construct(
            job_id=job.job_id, seq=job.event_seq, step=job.step, type=type_, ts=self.now, data=data
        )
        job.new_events.append(event)
        job.outbox.append(
            Outgoing.model_construct(
                subject=self.names.events(job.job_id),
                msg_id=msg_id(job.job_id, job.event_seq, "event"),
                data=encode(event),
            )
        )
        push = job.labels is not None and PUSH_LABEL in job.labels
        if (job.webhook is not None or push) and (
            (type_ == "status" and data["status"] in _WEBHOOK_STATUSES)
            or (push and type_ == "signal" and data.get("waiting"))  # asks for input too
        ):
            hook = WebhookDelivery(job_id=job.job_id, url=job.webhook or "", event=event, push=push)
            job.outbox.append(
                Outgoing(
                    subject=self.names.webhook,
                    msg_id=msg_id(job.job_id, job.event_seq, "webhook"),
                    data=encode(hook),
                )
            )

    def move_to(self, job: JobSnapshot, info: AgentInfo, target: str) -> None:
        """Put the job on `info`'s version of the graph, in `target` (its state's name there)."""
        version = info.graph.version
        self.event(
            job, "migrated", source=job.graph_version, version=version, state=job.state, to=target
        )
        if job.state is not None and target != job.state:
            job.visits[target] = job.visits.pop(job.state, 0)
            job.state = target
        job.graph_version = version


# The status a job ends with when a budget runs out and it has no fallback state.
_EXHAUSTED_STATUS: dict[str, JobStatusName] = {
    "steps": "step_limit",
    "deadline": "deadline_exceeded",
}

# The statuses a job's webhook is POSTed for: its end, and each wait for a person.
_WEBHOOK_STATUSES = TERMINAL_STATUSES | {"waiting_human"}
# How many resolves' ids a job keeps (`JobSnapshot.resolve_ids`): a retry comes seconds
# after its first try, never sixteen resolves later.
_RESOLVE_IDS_KEPT = 16

# How deep a tree of jobs may grow (agents that start one another in a loop stop here).
MAX_DEPTH = 8

# Parked because a report was late or lost: that report, if it comes, resumes the job.
RESUMABLE = frozenset({"stalled", "dead_letter"})


def check_input(info: AgentInfo, value: dict[str, Any]) -> None:
    """Refuse (`SchemaError`) an input that does not fit the agent's input schema."""
    if info.input_schema is not None:
        fits(
            info.input_schema,
            value,
            "input",
            f"the input does not fit agent {info.name!r}'s input schema",
        )


def check_args(edge: str, schema: dict[str, Any], value: dict[str, Any]) -> None:
    """Refuse (`SchemaError`) a person's arguments that do not fit the edge's schema:
    before a step is spent, not when the tool refuses them."""
    fits(schema, value, "args", f"the arguments do not fit edge {edge!r}", edge=edge)


def check_data(signal: str, schema: dict[str, Any], value: dict[str, Any]) -> None:
    """Refuse (`SchemaError`) a signal's data that does not fit what its state takes."""
    fits(schema, value, "data", f"the data does not fit signal {signal!r}", signal=signal)


def _carved(
    own: Budget, cap: Budget, deadline: float | None, now: float
) -> tuple[Budget, float | None]:
    """A child's budget and deadline: its agent's own, each limit no more than what its
    parent had left (`cap`, `deadline`)."""

    def least(mine: Any, left: Any) -> Any:
        return left if mine is None else mine if left is None else min(mine, left)

    if own.deadline_s is not None:
        deadline = least(now + own.deadline_s, deadline)
    budget = own.model_copy(
        update={
            "max_steps": min(own.max_steps, cap.max_steps),
            "max_tokens": least(own.max_tokens, cap.max_tokens),
            "max_cost": least(own.max_cost, cap.max_cost),
            "deadline_s": None if deadline is None else max(deadline - now, 0.001),
        }
    )
    return budget, deadline


def picked(edge: Edge | None, args: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The tool a person picked, and its arguments, on an edge that offers a set of tools
    (`{"tool": ..., "args": {...}}`); on any other edge, no tool and `args` as given."""
    if edge is None or not edge.tools:
        return None, args
    tool, inner = args.get("tool"), args.get("args", {})
    return (tool if isinstance(tool, str) else None), (inner if isinstance(inner, dict) else {})


def pending_tool(job: JobSnapshot, graph: Graph | None) -> str | None:
    """The tool the job's current step calls (a snapshot written before `pending_tool`
    existed has it from its edge)."""
    if job.pending_tool is not None or graph is None:
        return job.pending_tool
    edge = graph.edge(job.state, job.pending_edge)
    return edge.tool if edge is not None else None


def _flow(info: AgentInfo, request: SubmitRequest) -> dict[str, Any]:
    """A submission's concurrency key, limit and priority (`actors/jobs/flows.py`); none
    for a turn of a thread (one turn of a thread runs at a time already)."""
    found = flows.flow_of(info, request) if request.thread is None else None
    if found is None:
        return {"priority": request.priority}
    key, limit = found
    flow = info.flow  # its rate and debounce hold for every key of the agent
    return {
        "flow_key": key,
        "flow_limit": limit,
        "flow_rate": flow.rate_per_min if flow is not None else None,
        "flow_debounce": flow.debounce_s if flow is not None else None,
        "priority": request.priority,
    }


def memory_of(
    info: AgentInfo, thread: str | None, labels: Mapping[str, str] | None
) -> MemoryScope | None:
    """Whose memory a job of `info`'s agent reads and writes: its thread's, and its
    user's (the label `user`, when it is a token); None for an agent without memory."""
    if info.memory is None:
        return None
    user = (labels or {}).get("user")
    return MemoryScope(
        agent=info.name,
        thread=thread,
        user=user if _token(user) else None,
        ttl_s=info.memory.ttl_s,
    )


def _token(text: str | None) -> bool:
    try:
        check_token(text or "", what="user")
    except InvalidNameError:
        return False
    return True


def _context(job: JobSnapshot) -> JobContext:
    return JobContext(
        input=job.input,
        results=job.results,
        path=job.path,
        decisions=job.decisions,
        thread=job.thread_context,
    )


def _nth(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _handled(report: Decision | ToolResult | Verdict) -> dict[str, Any]:
    """The journal's record of who handled a report's command, and when (`rig trace`)."""
    handled = report.handled
    return {"handled": handled.model_dump()} if handled is not None else {}


def forged(message: Any, sender: tuple[str, str] | None) -> str | None:
    """Why `message` cannot have come from the `sender` its subject names (None: it can).
    A person's command and a job's start are the supervisor's own (the API subject, which
    only supervisors may publish to); a report names its sender, who must be the one the
    report says made it."""
    if isinstance(
        message,
        StartJob
        | ResolveJob
        | CancelJob
        | SignalJob
        | ChildEnded
        | ThreadEnded
        | ThreadNext
        | FlowEnded
        | FlowNext,
    ):
        if sender is None:
            return None
        kind, name = sender
        return f"a {message.kind} command from {kind} {name!r}: only a supervisor sends those"
    if sender is None:
        return f"a {message.kind} on the supervisor's own subject: a report names its sender"
    kind, name = sender
    claimed = {
        "decision": ("agent", name),  # which agent a decision is for: its job says
        "tool_result": ("tool", getattr(message, "tool", None)),
        "verdict": ("verify", getattr(message, "verifier", None)),
    }.get(message.kind)
    if claimed != (kind, name):
        return f"a {message.kind} sent as {kind} {name!r}"
    return None
