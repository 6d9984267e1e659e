"""`run_job` and `LocalRig`: a whole job in one process (`actors.testing` says how)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from actors.jobs import flows
from actors.jobs.flows import admit, released
from actors.jobs.rules import Rules, check_input
from actors.jobs.threads import take_turn, thread_ended
from actors.models.agent import Agent
from actors.models.llm import LLM, ScriptExhausted
from actors.runtime.actor import Actor, Delivery, Inbox
from actors.runtime.settings import RigConfig
from actors.tools.catalog import Catalog, offered
from actors.tools.executor import ToolExecutor, ledger_owner
from actors.tools.ledger import Ledger
from actors.tools.memory import LocalMemory, MemoryTools
from actors.tools.verifier import Verifier
from protocols import (
    AgentInfo,
    CancelJob,
    CancelRequest,
    ChildEnded,
    DeadlineCheck,
    Decision,
    Encoding,
    Escalation,
    Event,
    FlowEnded,
    FlowRecord,
    JobContext,
    JobSnapshot,
    Names,
    NonRetryableError,
    ResolveRequest,
    RetryableError,
    SignalRequest,
    SignalTimeout,
    StartJob,
    SubmitRequest,
    SupervisorMessage,
    ThreadEnded,
    ThreadRecord,
    ToolCall,
    ToolResult,
    Usage,
    Verdict,
    VerifyRequest,
    decode,
    decode_as,
    encode,
    validate,
)

_SUPERVISOR_MESSAGE: TypeAdapter[Any] = TypeAdapter(SupervisorMessage)

# Every result inline: there is no object store in one process.
_INLINE_ALL = 1 << 40


@dataclass(eq=False)
class JobRun:
    """A job `run_job` ran: where it stands, and its journal (the events `rig watch`
    shows, in order). `resolve` and `cancel` go on with it, as a person would."""

    snapshot: JobSnapshot
    journal: list[Event]
    _rig: LocalRig = field(repr=False)
    _timers: list[DeadlineCheck | SignalTimeout] = field(default_factory=list, repr=False)

    @property
    def job_id(self) -> str:
        return self.snapshot.job_id

    @property
    def status(self) -> str:
        return self.snapshot.status

    @property
    def state(self) -> str | None:
        return self.snapshot.state

    @property
    def home(self) -> Path:
        """The run's home: its ledger, and what its tools wrote under `config.home`."""
        return self._rig.home

    @property
    def path(self) -> list[str]:
        """The states the job entered, from the first: `path_of(journal)`."""
        return path_of(self.journal)

    @property
    def edges(self) -> list[str]:
        """The edges it took, in order: `edges_of(journal)`."""
        return edges_of(self.journal)

    @property
    def result(self) -> dict[str, Any] | None:
        return self.snapshot.result

    @property
    def error(self) -> dict[str, Any] | None:
        return self.snapshot.error

    @property
    def escalation(self) -> Escalation | None:
        """Why the job waits for a person, when it does."""
        return self.snapshot.escalation

    @property
    def usage(self) -> Usage:
        return self.snapshot.usage

    @property
    def children(self) -> list[JobRun]:
        """The child jobs it started (sub-agent and fan-out edges), oldest first."""
        return [
            self._rig.runs[child] for child in self.snapshot.children if child in self._rig.runs
        ]

    @property
    def waiting_signal(self) -> str | None:
        """The signal it waits for, while it waits for one (`signal` delivers it)."""
        return self.snapshot.signal if self.snapshot.phase == "signal" else None

    def events(self, type_: str) -> list[Event]:
        """The journal's events of one type (`decision`, `tool_result`, `verdict`, ...)."""
        return [event for event in self.journal if event.type == type_]

    async def signal(
        self, name: str, data: dict[str, Any] | None = None, by: str = "test"
    ) -> JobRun:
        """Deliver signal `name` to the job waiting for it, and run it on: what `rig
        signal` does (a job not waiting for it raises `JobStateError`)."""
        request = validate(
            SignalRequest, {"job_id": self.job_id, "name": name, "data": data or {}, "by": by}
        )
        graph = self._rig.graph_of(self)
        await self._rig.go_on(self, lambda rules, job: rules.signal(job, graph, request), "signal")
        return self

    async def resolve(
        self,
        edge: str,
        *,
        args: dict[str, Any] | None = None,
        note: str = "",
        by: str = "test",
        **limits: Any,
    ) -> JobRun:
        """Take `edge` for the job waiting for a person, and run it on until it ends or
        waits again: what `rig resolve` does. An edge the state has not raises
        `JobStateError`, as the API answers."""
        request = validate(
            ResolveRequest,
            {"job_id": self.job_id, "edge": edge, "args": args or {}, "note": note, "by": by}
            | limits,
        )
        graph = self._rig.graph_of(self)
        await self._rig.go_on(
            self, lambda rules, job: rules.resolve(job, graph, request), "resolve"
        )
        return self

    async def cancel(self, reason: str = "") -> JobRun:
        """End the job `cancelled`, as `rig cancel` does."""
        request = validate(CancelRequest, {"job_id": self.job_id, "reason": reason})
        graph = self._rig.graph_of(self)
        await self._rig.go_on(self, lambda rules, job: rules.cancel(job, request, graph), "cancel")
        return self


async def run_job(
    agent: type[Agent],
    input: dict[str, Any] | None = None,
    *,
    tools: Iterable[type[ToolExecutor]] = (),
    verifiers: Iterable[type[Verifier]] = (),
    agents: Iterable[type[Agent]] = (),
    llm: LLM | Mapping[str, LLM] | None = None,
    limits: dict[str, Any] | None = None,
    job_id: str = "job-1",
    home: Path | None = None,
) -> JobRun:
    """Run one job of `agent` on `input` (default: its `example_input`) to its end, or
    until it waits for a person, in this process; return it with its journal.

    `tools` and `verifiers` are the classes that serve the graph's tools and checks
    (each is made once, as a process would be), `agents` the agents its edges start
    child jobs of (their children run here too, `run.children`). `llm` routes instead
    of the agent's own (`ScriptedLLM`, `RuleLLM`, or any object with `async
    complete(prompt)`); a mapping gives one per agent name.
    `limits` override the agent's budget as a submission may (`max_steps`,
    `max_tokens`, `max_cost`, `deadline_s`, `max_visits`, `max_reasks`). `home` holds
    the ledger and is what the tools see as `self.config.home` (default: a temporary
    directory, removed with the run).

    For many jobs, `LocalRig` makes the actors and opens the ledger once."""
    rig = LocalRig(agent, tools=tools, verifiers=verifiers, agents=agents, llm=llm, home=home)
    return await rig.run(input, limits=limits, job_id=job_id)


async def call_tool(
    executor: type[ToolExecutor],
    tool: str,
    args: dict[str, Any],
    *,
    job_id: str = "job-1",
    step: int = 1,
    input: dict[str, Any] | None = None,
    home: Path | None = None,
) -> ToolResult:
    """One call of `tool` as its executor makes it, through the ledger (a temporary file,
    or `home`'s): the `ToolResult` the supervisor would get. `input` is the job's input
    the tool sees in `tool_context().job`. A `RetryableError` the call ends with is
    raised, as a consumer would see it (and retry)."""
    made = home is None
    place = Path(tempfile.mkdtemp(prefix="rig-call-")) if home is None else home
    actor = executor(config=_config(place))
    actor.ledger = await _open_ledger(place)
    context = JobContext(input=input) if input is not None else None
    call = validate(
        ToolCall, {"job_id": job_id, "step": step, "tool": tool, "args": args, "context": context}
    )
    try:
        return await actor.execute(call)
    finally:
        await actor.ledger.close()
        if made:
            await asyncio.to_thread(shutil.rmtree, place, True)


async def run_check(
    verifier: type[Verifier],
    check: str,
    *,
    args: dict[str, Any],
    result: Any,
    input: dict[str, Any] | None = None,
    results: dict[str, Any] | None = None,
    tool: str | None = None,
) -> Verdict:
    """Ask one check of `verifier` about a tool's `result` for `args`, in a job with
    `input` and earlier `results`: the `Verdict` it gives (a check that raises fails,
    with the exception as its reason; a `RetryableError` is raised, to be asked again)."""
    actor = verifier(config=_config(Path(".rig")))
    said: list[bytes] = []

    async def keep(subject: str, message: Any, **_: Any) -> None:
        said.append(encode(message))

    actor.publish = keep  # type: ignore[method-assign]  # the in-memory seam
    request = VerifyRequest(
        job_id="job-1",
        step=1,
        verifier=check,
        tool=tool,
        args=args,
        result=result,
        context=JobContext(input=input or {}, results=results or {}),
    )
    await actor.on_request(request, Delivery("", {}, Encoding.MSGPACK, 1, 0, time.time()))
    return decode_as(Verdict, said[-1])[0]


class LocalRig:
    """The actors of `run_job`, made once for many jobs: as a context manager it keeps
    the ledger open between them (a few hundred jobs a second), and removes its
    temporary home at the end.

        async with LocalRig(RefundAgent, tools=[RefundTools]) as rig:
            for case in cases:
                run = await rig.run(case.input, job_id=case.name)

    Jobs run one at a time (concurrent `run` calls take turns). Two jobs of one rig
    share its ledger, as two jobs of one deployment do: give each its own `job_id`.
    """

    def __init__(
        self,
        agent: type[Agent],
        *,
        tools: Iterable[type[ToolExecutor]] = (),
        verifiers: Iterable[type[Verifier]] = (),
        agents: Iterable[type[Agent]] = (),
        llm: LLM | Mapping[str, LLM] | None = None,
        home: Path | None = None,
    ) -> None:
        self._made_home = home is None
        self.home = Path(tempfile.mkdtemp(prefix="rig-run-")) if home is None else home
        if self._made_home:
            weakref.finalize(self, shutil.rmtree, self.home, ignore_errors=True)
        self.config = _config(self.home)
        self.names: Names = self.config.names
        made = [cls(config=self.config) for cls in dict.fromkeys([agent, *agents])]
        for each in made:
            own = llm.get(each.name) if isinstance(llm, Mapping) else None
            if llm is not None and not isinstance(llm, Mapping) and each is made[0]:
                own = llm
            each._llm = own if own is not None else each.create_llm()
        self.agent = made[0]
        self.info: AgentInfo = self.agent.info()
        self.infos: dict[str, AgentInfo] = {each.name: each.info() for each in made}
        self.runs: dict[str, JobRun] = {}  # every job run here, children too
        self.threads: dict[str, ThreadRecord] = {}  # the conversations of the jobs run here
        self.flows: dict[str, FlowRecord] = {}  # the concurrency keys of the jobs run here
        self.executors = [cls(config=self.config) for cls in tools]
        served = [entry for executor in self.executors for entry in executor.catalog()]
        self._owners = {entry.tool: entry.executor for entry in served}
        self._served = {entry.tool: entry for entry in served}
        for each in made:  # what sets of tools and lookups offer: the executors given
            each.catalog = Catalog.of(served, self.names)
        self.memory = LocalMemory()  # what its agents remember, as RIG_MEMORY would keep it
        for each in made:
            each.memory_store = self.memory
        for executor in self.executors:
            if isinstance(executor, MemoryTools):
                executor.store = self.memory
        self.actors: list[Actor] = [*made, *self.executors]
        self.actors += [cls(config=self.config) for cls in verifiers]
        self.inboxes: dict[str, Inbox] = {}
        for actor in self.actors:
            actor.publish = self._publish  # type: ignore[method-assign]  # the in-memory seam
            for inbox in actor.inboxes():
                self.inboxes[inbox.subject] = inbox
        self._check_served()
        self._queue: deque[tuple[str, bytes]] = deque()
        self._turn = asyncio.Lock()
        self._ledger: Ledger | None = None
        self._entered = False

    async def __aenter__(self) -> LocalRig:
        await self._open()
        self._entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._entered = False
        await self._close()
        if self._made_home:
            await asyncio.to_thread(shutil.rmtree, self.home, True)

    async def _open(self) -> None:
        if self._ledger is None and self.executors:
            self._ledger = await _open_ledger(self.home)
            for executor in self.executors:  # one host: one ledger file, as in production
                executor.ledger = self._ledger

    async def _close(self) -> None:
        if self._ledger is not None:
            ledger, self._ledger = self._ledger, None
            await ledger.close()

    async def run(
        self,
        input: dict[str, Any] | None = None,
        *,
        limits: dict[str, Any] | None = None,
        job_id: str = "job-1",
        thread: str | None = None,
        thread_busy: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> JobRun:
        """Submit one job and run it until it ends or waits for a person (`run_job`).

        `thread`: the job is a turn of that conversation (its context carries the
        thread's earlier turns run here); while another turn waits for a person, it
        waits (its status `accepted`) until that one ends, or with `thread_busy="refuse"`
        it is refused, as in a deployment. `labels` as a submission's (`user` names whose
        memory it reads and writes)."""
        info = self.info
        if input is None and info.example_input is None:
            raise TypeError(
                f"{type(self.agent).__qualname__} declares no example_input: give the job's input"
            )
        threading = {"thread": thread, "thread_busy": thread_busy} if thread else {}
        request = validate(
            SubmitRequest,
            {"agent": info.name, "input": info.example_input if input is None else input}
            | {"job_id": job_id}
            | threading
            | ({"labels": labels} if labels else {})
            | (limits or {}),
        )
        check_input(info, request.input)  # as the supervisor does at submission
        rules = Rules(self.names, time.time(), owners=self._owners)
        run = JobRun(rules.new_snapshot(rules.accept(job_id, info, request)), [], self)
        self.runs[job_id] = run
        await self.go_on(run, lambda rules, job: self._start(rules, job, info), "start")
        return run

    def _start(self, rules: Rules, job: JobSnapshot, info: AgentInfo) -> JobSnapshot | None:
        """A job's start; a turn of a thread takes its turn, a job with a concurrency key
        its place, as a supervisor's would."""
        if job.flow_key is not None:
            key = self.flows.setdefault(
                job.flow_key, FlowRecord(key=job.flow_key, limit=job.flow_limit)
            )
            job.flow_rate = job.flow_debounce = None  # a clock's: a deployment's alone
            return flows.start(rules, job, info, key, admit(key, job, time.time())[0])
        if job.thread is None:
            return rules.start(job, info.graph)
        record = self.threads.setdefault(
            job.thread, ThreadRecord(thread=job.thread, agent=job.agent)
        )
        runs = take_turn(record, job)
        return rules.start_turn(job, info, record, runs, self.config.sizes.thread_tokens)

    def graph_of(self, run: JobRun) -> Any:
        """The graph the job runs on: its agent's."""
        return self.infos[run.snapshot.agent].graph

    def _check_served(self) -> None:
        """Every tool and verifier the graph names must have a class here to serve it."""
        missing = []
        every = [state for info in self.infos.values() for state in info.graph.states.values()]
        for state in every:
            sets = [*(edge.tools for edge in state.edges), state.lookup]
            missing += [f"tool {s!r}" for e in sets for s in e if not offered((s,), self._served)]
            for edge in state.edges:
                missing += [f"agent {a!r}" for a in edge.starts if a not in self.infos]
                if edge.tool is not None and self.names.tool(edge.tool) not in self.inboxes:
                    missing.append(f"tool {edge.tool!r}")
                if edge.verifier is not None and (
                    self.names.verifier(edge.verifier) not in self.inboxes
                ):
                    missing.append(f"verifier {edge.verifier!r}")
        if missing:
            raise TypeError(
                f"agent {self.info.name!r}'s graph names {', '.join(sorted(set(missing)))}, "
                "which no class given to run_job serves (pass them as tools=[...], "
                "verifiers=[...], agents=[...])"
            )

    async def _publish(
        self, subject: str, message: Any, *, msg_id: str | None = None, **_: Any
    ) -> None:
        self._queue.append((subject, message if isinstance(message, bytes) else encode(message)))

    # --- moving the job --------------------------------------------------------------

    async def go_on(self, run: JobRun, apply: Any, cause: str) -> None:
        """Apply one transition to the job, then carry messages until none is left."""
        async with self._turn:
            if not self._entered:
                await self._open()  # a lone run_job: the ledger for this call only
            try:
                self._transition(run, apply, cause)
                while self._queue:
                    self._fire_due_timers()
                    subject, data = self._queue.popleft()
                    sender = self.names.sender_of(subject)
                    if subject.startswith(self._own):
                        self._supervise(data)
                    elif sender is not None:
                        self._report(subject, data, sender)
                    else:
                        await self._deliver(subject, data)
            finally:
                self._queue.clear()
                if not self._entered:
                    await self._close()
        if run.status == "running" and not self._waits(run):
            raise AssertionError(
                f"job {run.job_id} is running in state {run.state!r} (phase "
                f"{run.snapshot.phase}) but no message is under way: a bug of Rig's "
                "in-process runner"
            )

    def _waits(self, run: JobRun) -> bool:
        """Whether a running job waits for something outside: a signal, or a child
        that waits for a person or a signal."""
        if run.snapshot.phase == "signal":
            return True
        return run.snapshot.phase == "child" and any(
            child.status == "waiting_human" or self._waits(child)
            for child in run.children
            if child.status in ("running", "waiting_human")
        )

    @property
    def _own(self) -> str:
        """The subjects of the supervisor's own messages (a child's start, end, cancel)."""
        return f"{self.names.prefix}.work.supervisor.api."

    def _supervise(self, data: bytes) -> None:
        """A message a transition sent the supervisor itself: a child job's start, a
        child's end for its parent, a parent's cancel of its child."""
        message = decode_as(_SUPERVISOR_MESSAGE, data)[0]
        if isinstance(message, StartJob):
            if message.job_id in self.runs:
                return  # started already: its id names it
            info = self.infos[message.agent]
            rules = Rules(self.names, time.time(), owners=self._owners)
            child = JobRun(rules.new_snapshot(message), [], self)
            self.runs[message.job_id] = child
            parent = self.runs[message.parent.job_id].snapshot if message.parent else None
            self._transition(
                child, lambda rules, job: rules.start_child(job, info, parent), "start"
            )
        elif isinstance(message, ChildEnded):
            parent_run = self.runs[message.job_id]
            graph = self.graph_of(parent_run)
            self._transition(
                parent_run,
                lambda rules, job: rules.child_ended(job, graph, message),
                f"child_ended:{message.child}",
            )
        elif isinstance(message, ThreadEnded):
            record = self.threads.get(message.thread)
            if record is None or not thread_ended(record, message) or record.active is None:
                return
            following = self.runs.get(record.active)
            if following is not None and following.snapshot.status == "accepted":
                info = self.infos[following.snapshot.agent]
                self._transition(
                    following, lambda rules, job: self._start(rules, job, info), "thread_next"
                )
        elif isinstance(message, FlowEnded):
            key = self.flows.get(message.key)
            freed = released(key, message.job_id, time.time())[1] if key is not None else []
            for job_id in freed:
                waiting = self.runs[job_id]
                info = self.infos[waiting.snapshot.agent]
                self._transition(
                    waiting,
                    lambda rules, job, info=info: self._start(rules, job, info),
                    "flow_next",
                )
        elif isinstance(message, CancelJob):
            child_run = self.runs.get(message.job_id)
            if child_run is None or child_run.snapshot.terminal:
                return  # ended already: nothing to stop
            graph = self.graph_of(child_run)
            self._transition(
                child_run,
                lambda rules, job: rules.cancel(job, message.request, graph),
                f"cancel:{message.command_id}",
            )

    def _transition(self, run: JobRun, apply: Any, cause: str) -> None:
        """What the supervisor does with a message, without the store: the same rules,
        on a copy of the snapshot decoded from its bytes."""
        rules = Rules(self.names, time.time(), owners=self._owners)
        job = decode_as(JobSnapshot, encode(run.snapshot))[0]
        status_before = job.status
        after = apply(rules, job)
        if after is None:
            return  # a stale report: nothing to do
        latest = self.infos[after.agent]
        after = rules.settle(after, cause=cause, status_before=status_before, latest=latest)
        run.snapshot = after
        events = self.names.events(after.job_id)
        for out in after.outbox:
            if out.subject == events:
                run.journal.append(decode_as(Event, out.data)[0])
            elif out.subject == self.names.timer:
                body, _ = decode(out.data)
                if isinstance(body, dict) and body.get("kind") == "deadline":
                    run._timers.append(DeadlineCheck.model_validate(body))
                elif isinstance(body, dict) and body.get("kind") == "signal_timeout":
                    run._timers.append(SignalTimeout.model_validate(body))
            elif out.subject.startswith(f"{self.names.prefix}.work."):
                self._queue.append((out.subject, out.data))
            # else: the inbox's bucket and webhooks, which no one reads here

    def _fire_due_timers(self) -> None:
        now = time.time()
        for run in list(self.runs.values()):
            due = [check for check in run._timers if check.at <= now]
            run._timers = [check for check in run._timers if check.at > now]
            graph = self.graph_of(run)
            for check in due:
                if isinstance(check, SignalTimeout):
                    self._transition(
                        run,
                        lambda rules, job, check=check, graph=graph: rules.signal_timeout(
                            job, graph, check
                        ),
                        f"signal_timeout:{check.step}",
                    )
                    continue
                self._transition(
                    run,
                    lambda rules, job, check=check, graph=graph: rules.deadline(job, graph, check),
                    f"deadline:{check.at!r}",
                )

    def _report(self, subject: str, data: bytes, sender: tuple[str, str]) -> None:
        message: Decision | ToolResult | Verdict
        if sender[0] == "agent":
            message = decode_as(Decision, data)[0]
        elif sender[0] == "tool":
            message = decode_as(ToolResult, data)[0]
        else:
            message = decode_as(Verdict, data)[0]
        if isinstance(message, Decision):
            _raise_script_exhausted(message)
        run = self.runs[message.job_id]
        graph = self.graph_of(run)
        self._transition(
            run,
            lambda rules, job: rules.report(job, message, graph, sender=sender),
            f"{message.kind}:{message.step}",
        )

    async def _deliver(self, subject: str, data: bytes) -> None:
        """Hand a work message to the actor that reads its subject, as a consumer would:
        again on a retryable failure, dead-lettered after the last delivery or on a
        final one."""
        inbox = self.inboxes.get(subject)
        if inbox is None:
            raise AssertionError(f"a message on {subject}, which no actor here reads")
        message, encoding = decode_as(inbox.model, data)
        problem = ""
        for attempt in range(1, self.config.max_deliver + 1):
            delivery = Delivery(subject, {}, encoding or Encoding.MSGPACK, attempt, 0, time.time())
            try:
                await inbox.handler(message, delivery)
                return
            except NonRetryableError as exc:
                problem = exc.message
                break
            except RetryableError as exc:
                problem = exc.message
            except Exception as exc:  # retried, as a consumer naks it
                problem = repr(exc)
        self._dead_letter(self.runs[message.job_id], message, inbox, attempt, problem)

    def _dead_letter(
        self, run: JobRun, message: Any, inbox: Inbox, deliveries: int, problem: str
    ) -> None:
        step = getattr(message, "step", None)
        reason = (
            f"a {message.kind} message of step {step} was dead-lettered by {inbox.durable} "
            f"after {deliveries} deliveries: {problem}"
        )
        info = self.infos[run.snapshot.agent]
        graph, on_stuck = info.graph, info.on_stuck
        self._transition(
            run,
            lambda rules, job: rules.dead_letter(job, graph, step, reason, on_stuck),
            f"dlq:{inbox.durable}:{step}",
        )


def _config(home: Path) -> RigConfig:
    """The configuration of an in-process run: `home` for its files, every result
    inline (there is no object store), no LLM config file (the test gives the model)."""
    return replace(RigConfig(), home=home, inline_result_bytes=_INLINE_ALL, llm_config=None)


async def _open_ledger(home: Path) -> Ledger:
    """The run's ledger, in `home`: a throwaway file, so commits are not synced."""
    owner = ledger_owner()
    return await Ledger.open(home / "ledger.sqlite3", owner=owner, durable=False)


def _raise_script_exhausted(decision: Decision) -> None:
    """A `ScriptedLLM` asked past its script: the test's mistake, not the agent's. The
    agent caught it as a bug in its LLM (`code_error`); say it as what it is."""
    error = decision.code_error or {}
    if error.get("type") == ScriptExhausted.__name__:
        raise ScriptExhausted(str(error.get("message", "")))


# --- reading a journal -----------------------------------------------------------------------


def path_of(journal: JobRun | Iterable[Any]) -> list[str]:
    """The states a job entered, in order, from its journal: a `JobRun`, a list of
    `Event`s (`RigClient.events`), or of dicts (`rig watch --json` lines)."""
    path = []
    for type_, data in _events(journal):
        if type_ == "started" and data.get("state"):
            path.append(data["state"])
        elif type_ == "transition":
            path.append(data["target"])
    return path


def edges_of(journal: JobRun | Iterable[Any]) -> list[str]:
    """The edges a job took, in order (the LLM's, a person's, the safe ones)."""
    return [
        data["edge"]
        for type_, data in _events(journal)
        if type_ == "transition" and data.get("edge") is not None
    ]


def assert_path(journal: JobRun | Iterable[Any], expected: Sequence[str]) -> None:
    """Fail, saying where the job went instead and why, unless it entered exactly the
    states `expected`, in order."""
    actual = path_of(journal)
    if actual == list(expected):
        return
    at = next(
        (i for i, (a, e) in enumerate(zip(actual, expected, strict=False)) if a != e),
        min(len(actual), len(expected)),
    )
    got = repr(actual[at]) if at < len(actual) else "the end of the path"
    want = repr(expected[at]) if at < len(expected) else "the end of the path"
    raise AssertionError(
        f"the job's path differs at state {at + 1}: expected {want}, got {got}\n"
        f"  expected: {' -> '.join(expected)}\n"
        f"  actual:   {' -> '.join(actual)}\n" + _story(journal)
    )


def assert_edges(journal: JobRun | Iterable[Any], expected: Sequence[str]) -> None:
    """Fail, with the job's story, unless it took exactly the edges `expected`."""
    actual = edges_of(journal)
    if actual != list(expected):
        raise AssertionError(
            f"the job took edges {actual}, not {list(expected)}\n" + _story(journal)
        )


def assert_status(run: JobRun, expected: str) -> None:
    """Fail, with the job's story (its error, or why it waits), unless it is `expected`."""
    if run.status != expected:
        raise AssertionError(
            f"job {run.job_id} is {run.status!r}, not {expected!r}\n" + _story(run)
        )


def _events(journal: JobRun | Iterable[Any]) -> list[tuple[str, dict[str, Any]]]:
    items = journal.journal if isinstance(journal, JobRun) else journal
    found: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        if isinstance(item, Event):
            found.append((item.type, item.data))
        elif isinstance(item, dict):
            found.append((str(item.get("type")), dict(item.get("data") or {})))
        else:
            raise TypeError(f"not a journal event: {item!r}")
    return found


def _story(journal: JobRun | Iterable[Any]) -> str:
    """What the journal says happened, a line per decision, result, verdict and end."""
    lines = []
    for type_, data in _events(journal):
        if type_ == "decision":
            line = f"  decision in {data.get('state')}: edge {data.get('edge')}"
            if data.get("fallback"):
                line += " (the safe edge)"
            if data.get("reasks"):
                line += f" after {data['reasks']} re-ask(s)"
            why = data.get("reason") or (data.get("code_error") or {}).get("message")
            if why:
                line += f": {why}"
            lines.append(line)
        elif type_ == "tool_result":
            outcome = "ok" if data.get("ok") else f"failed: {data.get('error')}"
            lines.append(f"  tool {data.get('tool')}: {outcome}")
        elif type_ == "verdict":
            passed = "passed" if data.get("passed") else "failed"
            lines.append(f"  verifier {data.get('verifier')}: {passed} {data.get('reason', '')}")
        elif type_ == "escalated":
            lines.append(f"  waits for a person: {data.get('reason')}")
        elif type_ == "status" and data.get("error"):
            lines.append(f"  ended {data.get('status')}: {data.get('error')}")
    return "\n".join(lines)
