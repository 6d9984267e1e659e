"""Every message that crosses NATS, as pydantic v2 models.

Messages between actors carry a `kind` so that one subject (the supervisor's) can take
several of them. Models read from outside (the `rig.api.*` requests) forbid unknown
fields, so a typo gets a clear error; models passed between actors ignore them, so an
older actor keeps working beside a newer one.
"""

# Long: the whole wire contract between Rig's processes, one model per message, in the
# order a job meets them; split, a reader would chase a message's parts across files.

from __future__ import annotations

import time
import urllib.parse
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    model_serializer,
    model_validator,
)

from protocols._codec import check_plain
from protocols._errors import SchemaError
from protocols._graph import Graph

JobStatusName = Literal[
    "accepted",
    "running",
    "waiting_human",
    "succeeded",
    "failed",
    "step_limit",
    "budget_exceeded",
    "deadline_exceeded",
    "cancelled",
]
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"succeeded", "failed", "step_limit", "budget_exceeded", "deadline_exceeded", "cancelled"}
)

DEFAULT_MAX_STEPS = 25

JobId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def _plain(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    try:
        return check_plain(value, what=info.field_name or "value")  # type: ignore[no-any-return]
    except SchemaError as exc:  # pydantic collects ValueErrors, with the field's location
        raise ValueError(exc.message) from None


# A JSON object from outside (a job's input, an edge's arguments): finite numbers only,
# nesting bounded (`protocols.check_plain`).
PlainObject = Annotated[dict[str, Any], AfterValidator(_plain)]
LabelKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Labels = Annotated[dict[LabelKey, Annotated[str, Field(max_length=256)]], Field(max_length=16)]


def now() -> float:
    return time.time()


class _Wire(BaseModel):
    """Between actors: unknown fields are ignored (forward compatible).

    Every message model here defers building its validator to its first use: a process
    uses a few of them (building them all at import cost each process about 15 ms)."""

    model_config = ConfigDict(extra="ignore", defer_build=True)


class _Api(BaseModel):
    """From clients: unknown fields are an error, so typos are caught; NaN is refused, and
    so is anything else `check_plain` refuses, in any field (a lone surrogate in a note,
    an integer past 64 bits)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, defer_build=True)  # as _Wire

    @model_validator(mode="before")
    @classmethod
    def _plain_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                check_plain(key, what="a field's name")
                check_plain(value, what=str(key))
        return data


# --- the request/reply API -------------------------------------------------------


class Budget(_Wire):
    """The limits of one job. `None` means no limit (except `max_steps`, always bounded).

    An agent class declares its defaults; a submission may override any of them.
    """

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    max_steps: int = Field(default=DEFAULT_MAX_STEPS, ge=1, le=100_000)
    max_tokens: int | None = Field(default=None, ge=1, description="input + output tokens")
    max_cost: float | None = Field(default=None, gt=0, description="in the price table's money")
    deadline_s: float | None = Field(
        default=None, gt=0, description="wall-clock seconds from submission to a terminal status"
    )
    max_visits: int | None = Field(
        default=None, ge=1, description="times the job may enter any one state (loop detection)"
    )
    max_reasks: int = Field(default=1, ge=0, le=10, description="re-asks of the LLM per step")
    stall_s: float | None = Field(
        default=None,
        gt=0,
        description="seconds a running job may go without progress before a person is told",
    )

    def override(self, limits: BudgetOverride) -> Budget:
        """These limits with the ones `limits` sets replaced."""
        return self.model_copy(update=limits.model_dump(exclude_none=True))


_TEN_YEARS_S = 10 * 365.25 * 86400


class BudgetOverride(_Api):
    """The limits a submission may set; what it leaves out comes from the agent's defaults."""

    max_steps: int | None = Field(default=None, ge=1, le=100_000)
    max_tokens: int | None = Field(default=None, ge=1, le=10**12)
    max_cost: float | None = Field(default=None, gt=0, le=1e12)
    deadline_s: float | None = Field(default=None, gt=0, le=_TEN_YEARS_S)
    max_visits: int | None = Field(default=None, ge=1, le=100_000)
    max_reasks: int | None = Field(default=None, ge=0, le=10)
    stall_s: float | None = Field(default=None, gt=0, le=_TEN_YEARS_S)

    def limits(self) -> BudgetOverride:
        """Just the limits (a request that carries them has other fields too)."""
        return BudgetOverride.model_validate(
            self.model_dump(include=set(BudgetOverride.model_fields))
        )


def _webhook_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("a webhook url is http:// or https:// with a host")
    if parts.username or parts.password:
        raise ValueError("a webhook url carries no user or password (it is signed instead)")
    return url


class WebhookTarget(_Api):
    """Where a job's webhooks go: a POST, signed per Standard Webhooks, when the job ends
    and when it waits for a person."""

    url: Annotated[str, Field(min_length=8, max_length=2048), AfterValidator(_webhook_url)]


class Sampling(_Api):
    """How a job's model calls sample. An eval sets one per trial, so that its trials are
    independent and each can be replayed."""

    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        description="sent as `seed` with every model call of the job (a provider that "
        "supports it samples reproducibly); recorded in the job",
    )
    cache: bool = Field(
        default=True,
        description="false: the response cache neither answers nor keeps this job's calls",
    )


class SubmitRequest(BudgetOverride):
    """`rig.api.submit`: start a job of `agent` on `input`, with optional budget overrides."""

    agent: Name
    input: PlainObject
    job_id: JobId | None = Field(
        default=None,
        description="choose the id to make the submit idempotent: the same request again "
        "is accepted once; another request under the same id is a `job_conflict`",
    )
    webhook: WebhookTarget | None = Field(
        default=None,
        description="POST the job's end (and each wait for a person) to this url, signed",
    )
    sampling: Sampling | None = Field(
        default=None, description="the job's model sampling: a seed, the response cache"
    )
    labels: Labels | None = Field(
        default=None,
        description="up to 16 short strings kept with the job and shown with its status "
        "(what a caller needs to find it again: an A2A context, a conversation)",
    )
    thread: JobId | None = Field(
        default=None,
        description="the conversation the job is a turn of: one job of a thread runs at a "
        "time, and its context carries the thread's earlier turns",
    )
    thread_busy: Literal["wait", "refuse"] | None = Field(
        default=None,
        description="while another turn of the thread runs: `wait` for it (the default), "
        "or `refuse` (the job ends `failed` with `thread_busy`)",
    )
    concurrency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="jobs of the agent with this key run at most `concurrency_limit` at "
        "once (default: the agent's `Flow`, or 1); the others wait in order, durably",
    )
    concurrency_limit: int | None = Field(default=None, ge=1, le=10_000)
    priority: int = Field(
        default=0,
        ge=-1000,
        le=1000,
        description="among jobs waiting for the same key, a higher one starts first",
    )


class SubmitReply(_Wire):
    """`accepted`, once the job is stored; `warning` says why it may not run soon."""

    job_id: str
    status: Literal["accepted"] = "accepted"
    warning: str | None = None

    @model_serializer(mode="wrap")
    def _drop_no_warning(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("warning") is None:
            data.pop("warning", None)
        return data


class StatusRequest(_Api):
    """`rig.api.status`: the current snapshot of a job."""

    job_id: JobId


class ResolveRequest(BudgetOverride):
    """`rig.api.resolve`: a person takes `edge` for a job waiting for a human.

    Budget fields, if given, replace the job's limits (`deadline_s` counts from now).
    """

    job_id: JobId
    edge: Name
    args: PlainObject = Field(default_factory=dict)
    note: str = Field(default="", max_length=4000)
    by: str = Field(default="", max_length=200, description="who resolved it")
    step: int | None = Field(
        default=None,
        ge=0,
        description="the step of the wait the person was shown (its escalation's): a "
        "resolve for a step the job has left is refused (`job_moved`), never applied to a "
        "later wait",
    )
    resolve_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="names this resolve: one carried out already is answered again, not "
        "applied again (a retry after a lost answer)",
    )


class SignalRequest(_Api):
    """`rig.api.signal`: deliver signal `name` (with `data`) to a job waiting for it."""

    job_id: JobId
    name: Name
    data: PlainObject = Field(default_factory=dict)
    by: str = Field(default="", max_length=200, description="who sent it (a person, a job)")
    signal_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="names this signal: one delivered already is answered again, not "
        "delivered twice (a client's retry, a redelivery)",
    )


class CancelRequest(_Api):
    """`rig.api.cancel`: end a job that is not terminal yet, as `cancelled`."""

    job_id: JobId
    reason: str = Field(default="", max_length=4000)


class InboxRequest(_Api):
    """`rig.api.inbox`: the jobs waiting for a human."""

    agent: Name | None = None


EscalationKind = Literal[
    "human_state",
    "effect_unknown",
    "exhausted",
    "stalled",
    "dead_letter",
    "code_error",
    "config_error",
    "provider_down",
]


class Escalation(_Wire):
    """A job parked for a person: on `rig.escalations`, and in `RIG_INBOX` until resolved.

    `kind` says why: the graph entered a state for a person (`human_state`), a tool's
    effect is unknown, a budget ran out into `on_exhausted`, the job made no progress
    for its `stall_s` (`stalled`), one of its messages was dead-lettered, the agent's
    own code raised (`code_error`), every model provider refused the agent's request
    (`config_error`), or none answered and the safe edge led to a person
    (`provider_down`, with the providers' words). `reason` is the sentence a person reads.
    """

    job_id: str
    agent: str
    state: str | None
    step: int
    reason: str
    edges: list[str]
    kind: EscalationKind = "human_state"
    input: dict[str, Any] = Field(default_factory=dict)
    since: float = Field(default_factory=now)
    parent: str | None = Field(default=None, description="the job waiting for this one")


class InboxReply(_Wire):
    jobs: list[Escalation]


class ErrorReply(_Wire):
    """What every `rig.api.*` endpoint answers when it cannot do what was asked."""

    error: dict[str, Any]


class ParentLink(_Wire):
    """Where a child job came from: the parent job, the step and edge that started it,
    and how deep in the tree it is (a job submitted from outside is depth 0)."""

    job_id: str
    agent: str
    step: int
    edge: str
    depth: int = Field(default=1, ge=1)


class JobEntry(_Wire):
    """A job as the index lists it (`Names.index_bucket`): enough to filter, count and
    page without reading its snapshot."""

    job_id: str
    agent: str
    status: JobStatusName
    created_at: float
    updated_at: float
    parent: str | None = Field(default=None, description="the job that started it, if any")


class JobInfo(_Wire):
    """A job as `rig status` shows it."""

    job_id: str
    agent: str
    status: JobStatusName
    state: str | None
    steps: int
    max_steps: int
    path: list[str]
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    budget: Budget = Field(default_factory=Budget)
    usage: Usage = Field(default_factory=lambda: Usage())
    visits: dict[str, int] = Field(default_factory=dict)
    deadline: float | None = Field(default=None, description="wall-clock time (epoch seconds)")
    graph_version: str | None = Field(
        default=None, description="the version of the agent's graph the job runs on"
    )
    waiting: Escalation | None = Field(
        default=None, description="why the job waits for a person, and what they may do"
    )
    sampling: Sampling | None = Field(default=None, description="as submitted")
    labels: dict[str, str] | None = Field(default=None, description="as submitted")
    thread: str | None = Field(default=None, description="the thread it is a turn of")
    queued: dict[str, Any] | None = Field(
        default=None,
        description="an accepted job waiting for its concurrency key: `key`, `limit`, "
        "`running` and `ahead` (the jobs that start before it)",
    )
    trace_id: str | None = Field(
        default=None, description="the job's trace in the tracing backend, when traces are on"
    )
    parent: ParentLink | None = Field(default=None, description="the job that started it")
    child_steps: int = Field(
        default=0, description="steps its ended children took, charged to its max_steps"
    )
    children: list[str] = Field(
        default_factory=list, description="the child jobs it started, oldest first"
    )
    waiting_for: list[str] = Field(
        default_factory=list, description="the child jobs it waits for, while it waits"
    )
    waiting_signal: str | None = Field(
        default=None, description="the signal it waits for, while it waits for one"
    )
    handled: list[str] = Field(
        default_factory=list,
        description="the ids of its latest signals delivered and resolves carried out: a "
        "client that asks again sees its request was taken",
    )
    created_at: float
    updated_at: float


# --- between actors -------------------------------------------------------------


PUSH_LABEL = "rig.push"
"""The label of a job that takes push targets registered after it started (an A2A task's
push notification configs): its status webhooks also go to each (`WebhookDelivery.push`)."""

RESULT_REF = "$rig_result"
"""The key that marks a tool result stored by reference (see `result_ref`)."""


def result_ref(name: str, size: int, sha256: str) -> dict[str, Any]:
    """What travels instead of a tool result too large to carry inline.

    The result itself is in the results object store (`Names.results_store`) under
    `name`; agents and verifiers get it back transparently, and `RigClient.fetch_result`
    reads it for anyone else.
    """
    return {RESULT_REF: name, "bytes": size, "sha256": sha256}


def ref_name(value: Any) -> str | None:
    """The object name if `value` is a result stored by reference, else None."""
    name = value.get(RESULT_REF) if isinstance(value, dict) else None
    return name if isinstance(name, str) else None


class JobContext(_Wire):
    """What an agent and a verifier see of a job: its input and the tools' results so far.

    A result larger than the executor's inline limit is a `result_ref` here; the
    agent and verifier base classes replace it with the stored value before user code
    runs.
    """

    input: dict[str, Any]
    results: dict[str, Any] = Field(default_factory=dict)
    path: list[str] = Field(default_factory=list)
    decisions: list[dict[str, Any]] = Field(
        default_factory=list,
        description="each decision so far, in order: its step, state and edge, who took it "
        "(`llm` or `human`), why (a safe edge's reason, a person's note) and, when the edge "
        "did not go as asked, its outcome (a tool's failure, a verifier's reason)",
    )
    thread: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the earlier turns of the job's thread, oldest first (`ThreadTurn`s, "
        "as many of the newest as the agent's `thread_tokens` hold), after the summary of "
        'the older ones if there is one (`{"summary": {...}, "turns": N}`); in the '
        "graph's summarising state (`Graph.compact`), the summary so far and the turns to "
        "fold into it",
    )
    memory: list[dict[str, Any]] = Field(
        default_factory=list,
        description="what the agent remembers (`Agent.memory`), read for this step: "
        '`{"scope", "key", "value"}` each, newest first, then what its `retrieve` hook found',
    )


class Usage(_Wire):
    """What LLM calls spent: tokens, and money by the provider's price table."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost += other.cost


class StartJob(_Wire):
    """Supervisor to itself: a job was accepted; start it. A child job's (`parent` set)
    is sent by its parent's transition: its `budget` is what the parent has left, which
    caps the child agent's own."""

    kind: Literal["start"] = "start"
    job_id: str
    agent: str
    input: dict[str, Any]
    budget: Budget
    deadline: float | None = None
    on_exhausted: str | None = None
    accepted_at: float = Field(default_factory=now)
    request_hash: str = Field(
        default="", description="what was asked, so a reused job id with another request is seen"
    )
    webhook: str | None = Field(default=None, description="the url of the job's webhooks")
    sampling: Sampling | None = None
    labels: dict[str, str] | None = None
    thread: str | None = None
    thread_busy: Literal["wait", "refuse"] = "wait"
    memory: MemoryScope | None = None
    flow_key: str | None = None
    flow_limit: int = 1
    flow_rate: float | None = None
    flow_debounce: float | None = None
    priority: int = 0
    trace: str | None = None
    trace_parent: str | None = None
    parent: ParentLink | None = None


class ChildSlot(_Wire):
    """One child job of a parent's step: `waiting` to start (a fan-out's `at_once` cap),
    `running` (its start is sent), or `ended` with its status, result and error."""

    job_id: str
    agent: str
    state: Literal["waiting", "running", "ended"] = "waiting"
    input: dict[str, Any] | None = Field(default=None, description="kept until it starts")
    status: JobStatusName | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def outcome(self) -> dict[str, Any]:
        """The child as the edge's result lists it."""
        return {
            "job_id": self.job_id,
            "agent": self.agent,
            "status": self.status,
            "result": self.result,
            "error": self.error,
        }


class Children(_Wire):
    """The child jobs a parent's step waits for, and how: each child's `share` of what
    the parent had left, how many run `at_once`, and the `join`."""

    step: int
    edge: str
    share: Budget
    at_once: int
    join: Literal["all", "first"] = "all"
    slots: list[ChildSlot]


class ChildEnded(_Wire):
    """Supervisor to itself, on the parent's partition: child job `child` of `job_id`'s
    step `step` ended. Sent by the child's last transition (`Rules.finish`)."""

    kind: Literal["child_ended"] = "child_ended"
    job_id: str
    step: int
    child: str
    agent: str
    status: JobStatusName
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    usage: Usage = Field(default_factory=lambda: Usage())
    steps: int = Field(default=0, description="the steps the child took, its children's too")
    budget: Budget | None = Field(default=None, description="the child's, as carved")


class ThreadTurn(_Wire):
    """A turn of a thread that ended, as the thread keeps it for the turns after it."""

    job_id: str
    status: JobStatusName
    input: dict[str, Any]
    output: dict[str, Any] | None = None
    results: dict[str, Any] = Field(default_factory=dict)
    said: list[str] = Field(
        default_factory=list, description="why its decisions went as they did, a person's notes"
    )
    ended_at: float = Field(default_factory=now)


class ThreadSummary(_Wire):
    """What a thread's summarising state (`Graph.compact`) made of its older turns: the
    edge's arguments, standing in for the turns before `through` (counted from the
    thread's first)."""

    summary: dict[str, Any]
    through: int = Field(description="the turns it covers: the thread's first `through`")
    job_id: str = Field(description="the turn that wrote it")
    at: float = Field(default_factory=now)

    def entry(self) -> dict[str, Any]:
        """The summary as a turn's context carries it (before the turns after it)."""
        return {"summary": self.summary, "turns": self.through}


class Compaction(_Wire):
    """A turn that starts in its graph's summarising state: the summary will cover the
    thread's first `through` turns, and the newest, `recent`, stay as they were."""

    through: int
    recent: list[dict[str, Any]] = Field(default_factory=list)


class ThreadRecord(_Wire):
    """A thread, in `RIG_THREADS` under its id (written by supervisors, compare-and-set):
    the turn that runs, the turns waiting for it, and the turns that ended."""

    thread: str
    agent: str
    active: str | None = Field(default=None, description="the job of the turn that runs")
    waiting: list[str] = Field(default_factory=list, description="jobs waiting, in order")
    turns: list[ThreadTurn] = Field(default_factory=list, description="ended, oldest first")
    dropped: int = Field(default=0, description="ended turns no longer kept (the oldest)")
    summary: ThreadSummary | None = Field(
        default=None, description="the newest summary of its older turns (`Graph.compact`)"
    )
    compactions: int = Field(default=0, description="the summaries kept so far")
    updated_at: float = Field(default_factory=now)

    def covered(self) -> int:
        """How many of the thread's turns, from its first, its summary covers."""
        return self.summary.through if self.summary is not None else 0


class ThreadEnded(_Wire):
    """Supervisor to itself: job `job_id`, a turn of `thread`, ended (sent by its last
    transition): the thread keeps the turn, and its next waiting job starts."""

    kind: Literal["thread_ended"] = "thread_ended"
    job_id: str
    thread: str
    turn: ThreadTurn | None = Field(
        default=None, description="None: the job ended without running (cancelled, refused)"
    )
    summary: ThreadSummary | None = Field(
        default=None, description="the summary of older turns the turn wrote, if it did"
    )


class ThreadNext(_Wire):
    """Supervisor to itself, on the job's partition: job `job_id` is the thread's next
    turn; it starts."""

    kind: Literal["thread_next"] = "thread_next"
    job_id: str
    thread: str


class SignalTimeout(_Wire):
    """Supervisor to itself, on `rig.work.timer`: the job waiting at `step` for a signal
    takes its state's `on_timeout` edge if none came by `at`."""

    kind: Literal["signal_timeout"] = "signal_timeout"
    job_id: str
    step: int
    at: float
    armed: float | None = Field(
        default=None,
        description="the sender's clock when it set `at`: the timer waits `at - armed` from "
        "when the server stored it, so a sender whose clock is wrong does not move it",
    )


class DeadlineCheck(_Wire):
    """Supervisor to itself, on `rig.work.timer`: end the job if it is still running at `at`."""

    kind: Literal["deadline"] = "deadline"
    job_id: str
    at: float
    armed: float | None = Field(
        default=None,
        description="the sender's clock when it set `at`: the timer waits `at - armed` from "
        "when the server stored it, so a sender whose clock is wrong does not move it",
    )


class StallCheck(_Wire):
    """Supervisor to itself, on `rig.work.timer`: has the job moved since event `seq`?

    The stall watchdog: held back until `at`; a job still running with the same journal
    position is handed to a person. `arm` names the watchdog of one stretch of running
    (a resolve starts a new one), so an old timer never doubles a new one.
    """

    kind: Literal["stall"] = "stall"
    job_id: str
    at: float
    seq: int
    arm: int
    armed: float | None = Field(
        default=None,
        description="the sender's clock when it set `at`: the timer waits `at - armed` from "
        "when the server stored it, so a sender whose clock is wrong does not move it",
    )


class ScheduleTick(_Wire):
    """Supervisor to itself, on `rig.work.timer`: schedule `name`'s tick `at` (held back
    until `due`, its jitter added) fires, then the next tick is sent (`rig schedule`)."""

    kind: Literal["schedule_tick"] = "schedule_tick"
    name: str
    generation: int = Field(description="the schedule's when it was sent: an older is void")
    at: float
    due: float


class FlowTick(_Wire):
    """Supervisor to itself, on `rig.work.timer`: concurrency key `key` may start a waiting
    job at `at` (its rate allows one again, or a debounce window ends)."""

    kind: Literal["flow_tick"] = "flow_tick"
    key: str
    at: float
    armed: float | None = Field(
        default=None,
        description="the sender's clock when it set `at`: the timer waits `at - armed` from "
        "when the server stored it, so a sender whose clock is wrong does not move it",
    )


TimerMessage = Annotated[
    DeadlineCheck | StallCheck | SignalTimeout | ScheduleTick | FlowTick,
    Field(discriminator="kind"),
]


MemoryScopeName = Literal["thread", "user", "global"]


class Memory(_Wire):
    """What an agent remembers across jobs (`Agent.memory`): entries in `RIG_MEMORY`,
    written by the memory tools (`actors.tools.memory`: at most once, through the ledger)
    and read into each step's context (`JobContext.memory`), in the `scopes` it names."""

    scopes: tuple[MemoryScopeName, ...] = Field(
        default=("thread",),
        min_length=1,
        description="`thread`: the job's thread's; `user`: the user's (the job's label "
        "`user`); `global`: the agent's, shared by every job",
    )
    recall: int = Field(
        default=20, ge=1, le=200, description="the most entries of each scope a step reads"
    )
    ttl_s: float | None = Field(
        default=None,
        gt=0,
        description="how long an entry lives unless its write says (None: RIG_RETENTION)",
    )


class Flow(_Wire):
    """How many jobs of an agent run at once per key (`Agent.flow`): the key is a field of
    the job's input (`key="customer_id"`), and at most `limit` jobs with the same value run
    at once; the others wait, durably, in order of priority then arrival."""

    key: str = Field(min_length=1, max_length=200, description="a field of the input, dotted")
    limit: int = Field(default=1, ge=1, le=10_000)
    rate_per_min: float | None = Field(
        default=None,
        gt=0,
        le=60_000,
        description="at most this many starts a minute per key, evenly spaced (60/N s apart)",
    )
    debounce_s: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        description="within this window of a submit for a key, a later submit replaces it: "
        "only the last one runs (the others end `cancelled`, `debounced`)",
    )


class FlowWaiter(_Wire):
    job_id: str
    priority: int = 0
    at: float = Field(default_factory=now)


class FlowRecord(_Wire):
    """A concurrency key, in `RIG_FLOWS` under `<agent>.<key>` (supervisors, compare-and-
    set): the jobs that run with it, and those waiting, first to start first."""

    key: str
    limit: int = 1
    running: list[str] = Field(default_factory=list)
    waiting: list[FlowWaiter] = Field(default_factory=list)
    rate_per_min: float | None = None
    starts: list[float] = Field(default_factory=list, description="its last start (a rate's)")
    debouncing: FlowWaiter | None = Field(
        default=None, description="the newest submit of a debounced key, until its window ends"
    )
    debounce_s: float | None = None
    newest: float = Field(
        default=0.0, description="when the newest debounced submit came: older ones are void"
    )
    updated_at: float = Field(default_factory=now)


class FlowEnded(_Wire):
    """Supervisor to itself: job `job_id`, which held a place of concurrency key `key`,
    ended (sent by its last transition): the next waiting jobs start."""

    kind: Literal["flow_ended"] = "flow_ended"
    job_id: str
    key: str


class FlowNext(_Wire):
    """Supervisor to itself, on the job's partition: job `job_id` has its place under
    concurrency key `key`; it starts."""

    kind: Literal["flow_next"] = "flow_next"
    job_id: str
    key: str


class MemoryScope(_Wire):
    """Whose memory a job reads and writes: its agent's, in its thread and for its user."""

    agent: str
    thread: str | None = None
    user: str | None = None
    ttl_s: float | None = Field(default=None, description="the agent's `Memory.ttl_s`")

    def owner(self, scope: str) -> str | None:
        """The id of `scope` for this job (`_` for `global`); None: the job has none."""
        return {"thread": self.thread, "user": self.user, "global": "_"}.get(scope)


class StepRequest(_Wire):
    """Supervisor to agent: pick one edge of `state`."""

    kind: Literal["step"] = "step"
    job_id: str
    step: int
    agent: str
    state: str
    context: JobContext
    graph_version: str | None = Field(
        default=None, description="the version of the agent's graph the job runs on"
    )
    edges: list[str] | None = Field(
        default=None, description="the names of `state`'s edges in that version"
    )
    max_reasks: int = 1
    tokens_left: int | None = Field(default=None, description="the job's token budget left")
    cost_left: float | None = Field(default=None, description="the job's money budget left")
    deadline: float | None = Field(default=None, description="wall-clock end of the job")
    sampling: Sampling | None = Field(default=None, description="the job's, as submitted")
    lookups_left: int = Field(
        default=0, description="lookups the state still allows in this visit (`State.lookup`)"
    )
    memory: MemoryScope | None = Field(
        default=None, description="whose memory the step reads (an agent with `memory`)"
    )


# The most of a model's answer a decision (and so the journal) keeps.
ANSWER_MAX_CHARS = 4096

ExhaustedKind = Literal["steps", "tokens", "cost", "deadline", "visits"]


class Handled(_Wire):
    """Which process handled the message a report answers, and when: what `rig trace`
    draws a job's waterfall from (queueing is `at` minus when the command was sent)."""

    by: str = Field(description="the process: <actor>@<host>:<pid>")
    at: float = Field(description="when it began handling (epoch seconds)")
    ms: float = Field(description="from then until it sent the report")


class Decision(_Wire):
    """Agent to supervisor: the edge the LLM picked (or the safe edge, if `fallback`)."""

    kind: Literal["decision"] = "decision"
    job_id: str
    step: int
    edge: str
    tool: str | None = Field(
        default=None,
        description="the tool the LLM picked, on an edge that offers a set (`Edge.tools`) "
        "or a lookup (`State.lookup`); `args` are then that tool's arguments",
    )
    args: dict[str, Any] = Field(default_factory=dict)
    reasks: int = 0
    fallback: bool = False
    reason: str = ""
    outage: bool = Field(
        default=False,
        description="the safe edge was taken because no provider answered, on the step's "
        "last delivery (an infrastructure failure, not the model's answer)",
    )
    usage: Usage = Field(default_factory=Usage)
    llm_ms: float = Field(
        default=0.0, description="time spent waiting for the LLM, re-asks included"
    )
    handled: Handled | None = None
    exhausted: ExhaustedKind | None = Field(
        default=None, description="no edge: the next LLM call would not fit the job's budget"
    )
    calls: list[dict[str, Any]] = Field(
        default_factory=list,
        description="every attempt at the model for this decision: provider, model, ms, error",
    )
    code_error: dict[str, Any] | None = Field(
        default=None,
        description="no edge: the agent's own code (its routing function or LLM class) "
        "raised; `type` and `message` say what, the agent's log has the traceback",
    )
    answer: str = Field(
        default="",
        max_length=ANSWER_MAX_CHARS,
        description="the model's own text for this decision (its last answer; cut to "
        "ANSWER_MAX_CHARS): the journal keeps it, so `rig watch --tokens` replays a step",
    )
    config_error: dict[str, Any] | None = Field(
        default=None,
        description="no edge: every provider refused the request itself (a 4xx, or a 500 "
        "that is a validation error): `provider`, `status` and the server's `message`; the "
        "agent's LLM config needs fixing",
    )
    graph_version: str | None = Field(
        default=None,
        description="the version of the graph the agent decided with, when it is not the "
        "request's: the job moves to it by the migration rule (`Graph.migration_target`)",
    )
    memory: list[dict[str, Any]] = Field(
        default_factory=list,
        description="what the step read of its memory (and its retrieval hook found), as "
        "its context carried it: the journal's decision keeps it",
    )


class ToolCall(_Wire):
    """Supervisor to tool executor: run `tool` with `args`, at most once per job and args.

    With `verifier` set, a successful result goes straight to that verifier (with
    `context` for it), which reports both to the supervisor in its `Verdict`: one
    supervisor transition less per step. Otherwise the result goes to the supervisor.
    """

    kind: Literal["tool_call"] = "tool_call"
    job_id: str
    step: int
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    verifier: str | None = None
    context: JobContext | None = None
    lookup: bool = Field(
        default=False,
        description="a lookup (`State.lookup`): the executor refuses it for a tool with "
        "side effects",
    )
    deadline: float | None = Field(
        default=None,
        description="the job's deadline (epoch seconds): a call is not started after it, "
        "and a running one is stopped at it",
    )
    memory: MemoryScope | None = Field(
        default=None, description="whose memory the memory tools write (`actors.tools.memory`)"
    )


class ToolCancel(_Wire):
    """Supervisor to every executor of `tool` (core NATS, not stored): the job no longer
    waits for this call. A running call is stopped (its ledger record becomes `unknown`
    if the tool has side effects, else a failure that may run again) and one not started
    yet is not started. Best effort: an executor that misses it lets the call finish,
    and the supervisor ignores the late result."""

    kind: Literal["tool_cancel"] = "tool_cancel"
    job_id: str
    step: int
    tool: str
    reason: str


class ToolResult(_Wire):
    """Tool executor to supervisor. `ledger` is `hit` when the result came from the ledger."""

    kind: Literal["tool_result"] = "tool_result"
    job_id: str
    step: int
    tool: str
    key: str
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None
    ledger: Literal["hit", "miss"] = "miss"
    tool_ms: float = Field(default=0.0, description="time the tool itself ran (0 on a ledger hit)")
    handled: Handled | None = None


class VerifyRequest(_Wire):
    """Supervisor to verifier: check what a tool returned."""

    kind: Literal["verify"] = "verify"
    job_id: str
    step: int
    verifier: str
    tool: str | None
    args: dict[str, Any]
    result: Any
    context: JobContext
    tool_result: ToolResult | None = Field(
        default=None, description="the tool's report, when the executor sent this request"
    )


class Verdict(_Wire):
    """Verifier to supervisor: pass or fail, with the reason (and the tool's report, if any)."""

    kind: Literal["verdict"] = "verdict"
    job_id: str
    step: int
    verifier: str
    passed: bool
    reason: str = ""
    tool_result: ToolResult | None = None
    handled: Handled | None = None


class ResolveJob(_Wire):
    """Supervisor (answering `rig.api.resolve`) to whichever supervisor takes it: carry out
    a person's resolve as a durable message, so its effects are published even if the
    supervisor dies half-way; the outcome goes to `reply_to` (core NATS)."""

    kind: Literal["resolve"] = "resolve"
    job_id: str
    command_id: str
    request: ResolveRequest
    reply_to: str = ""


class SignalJob(_Wire):
    """Like `ResolveJob`, for `rig.api.signal`."""

    kind: Literal["signal"] = "signal"
    job_id: str
    command_id: str
    request: SignalRequest
    reply_to: str = ""


class CancelJob(_Wire):
    """Like `ResolveJob`, for `rig.api.cancel`; or sent by a parent job's transition to
    the child it stops waiting for (`by_parent`: the child may not be stored yet, its
    start being on the way, so the cancel waits for it)."""

    kind: Literal["cancel"] = "cancel"
    job_id: str
    command_id: str
    request: CancelRequest
    reply_to: str = ""
    by_parent: bool = False


SupervisorMessage = Annotated[
    StartJob
    | Decision
    | ToolResult
    | Verdict
    | ResolveJob
    | CancelJob
    | SignalJob
    | ChildEnded
    | ThreadEnded
    | ThreadNext
    | FlowEnded
    | FlowNext,
    Field(discriminator="kind"),
]

EventType = Literal[
    "accepted",
    "started",
    "decision",
    "tool_result",
    "verdict",
    "transition",
    "budget",
    "escalated",
    "resolved",
    "resumed",
    "migrated",
    "child_started",
    "child_ended",
    "signal",
    "thread",
    "compacted",
    "queued",
    "status",
]


class Event(_Wire):
    """One entry of a job's journal, on `rig.events.<job_id>`."""

    job_id: str
    seq: int
    step: int
    type: EventType
    ts: float = Field(default_factory=now)
    data: dict[str, Any] = Field(default_factory=dict)


class WebhookDelivery(_Wire):
    """To a gateway, on `rig.work.webhook`: POST `event` (a job's end, or its wait for a
    person) to `url`. Published in the outbox of the transition that wrote the event."""

    kind: Literal["webhook"] = "webhook"
    job_id: str
    url: str = Field(description="the job's own webhook url; empty for a push-only job")
    event: Event
    push: bool = Field(
        default=False,
        description="the job takes push targets (`PUSH_LABEL`): POST the event to each the "
        "gateway keeps for it in `RIG_PUSH` too",
    )

    @property
    def webhook_id(self) -> str:
        """The `webhook-id`: the event's place in its job's journal, the same on every
        attempt (a receiver dedupes by it)."""
        return f"{self.job_id}.{self.event.seq}"


WebhookState = Literal["delivered", "retrying", "dead_letter"]


class WebhookRecord(_Wire):
    """What became of one webhook, the value of `<job_id>.<seq>` in `RIG_WEBHOOKS`."""

    webhook_id: str
    job_id: str
    url: str
    type: str = Field(description="`job.<status>`: the job's status when the event was written")
    state: WebhookState
    attempts: int = 0
    http_status: int | None = None
    error: str | None = None
    ts: float = Field(default_factory=now)


class DeadLetter(_Wire):
    """A message an actor could not accept, kept with the reason and its original bytes."""

    actor: str
    subject: str
    reason: str
    error: dict[str, Any]
    data: bytes
    headers: dict[str, str] = Field(default_factory=dict)
    deliveries: int = 1
    ts: float = Field(default_factory=now)


class AgentInfo(_Wire):
    """What an agent registers in `RIG_AGENTS` when it starts: how to run and check it."""

    name: str
    description: str = ""
    graph: Graph
    example_input: dict[str, Any] | None = Field(
        default=None, description="an input that runs the agent to `succeeded`, if it gave one"
    )
    input_schema: dict[str, Any] | None = Field(
        default=None,
        description="the JSON schema a job's input must fit (the agent's `input_model`); "
        "a submission that does not is refused with `schema_error`",
    )
    budget: Budget = Field(default_factory=Budget)
    on_exhausted: str | None = Field(
        default=None,
        description="state a job goes to when a budget runs out (a human or terminal "
        "state); without one the job ends step_limit, budget_exceeded or deadline_exceeded",
    )
    on_stuck: Literal["human", "fail"] = Field(
        default="human",
        description="what a stalled job, or one whose message was dead-lettered, does: "
        "wait for a person, or end `failed`",
    )
    thread_tokens: int = Field(
        default=2000,
        ge=0,
        description="how many tokens of a thread's earlier turns a job's context carries "
        "(the newest turns that fit; four characters a token)",
    )
    memory: Memory | None = Field(default=None, description="what it remembers across jobs")
    flow: Flow | None = Field(default=None, description="how many of its jobs run at once per key")
    renamed: dict[str, str] = Field(
        default_factory=dict,
        description="states renamed since earlier versions of the graph (old -> new name), "
        "so that running jobs in them move to this version",
    )


class ToolEntry(_Wire):
    """What a tool executor publishes of each tool it serves, in `RIG_TOOLS` under
    `<executor>.<tool>`: what agents offer the LLM for an edge's set of tools or a lookup,
    and what `rig graph` checks a graph's tools against."""

    executor: str
    tool: str
    description: str = ""
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON schema of the tool's arguments",
    )
    side_effects: bool = Field(description="calls go through the ledger (at most once)")
    untrusted_output: bool = False


class ActorReady(_Wire):
    """Published on `rig.actors.ready` (core NATS) once an actor consumes."""

    actor: str
    cls: str
    pid: int
    host: str
    subjects: list[str]


class Outgoing(_Wire):
    """A message a transition must publish; kept in the snapshot until it is sent."""

    subject: str
    msg_id: str
    data: bytes
    headers: dict[str, str] = Field(default_factory=dict)


class JobSnapshot(_Wire):
    """A job's current state, the value of `<job_id>` in `RIG_JOBS`.

    Written only with compare-and-set on the KV revision. `outbox` holds what the last
    transition must publish (journal events and the next command), and `cause` the
    message that made it: if a supervisor dies after writing the snapshot but before
    publishing, that message comes back (it was never acked) and whichever supervisor
    gets it publishes the outbox again, under the same `Nats-Msg-Id`s, so nothing is
    lost or doubled.
    """

    job_id: str
    agent: str
    status: JobStatusName
    graph_version: str | None = Field(
        default=None,
        description="the version of the agent's graph the job runs on (None: the newest)",
    )
    state: str | None = None
    step: int = 0
    phase: Literal["decide", "tool", "child", "signal", "verify"] | None = None
    input: dict[str, Any]
    results: dict[str, Any] = Field(default_factory=dict)
    path: list[str] = Field(default_factory=list)
    decisions: list[dict[str, Any]] = Field(
        default_factory=list, description="what `JobContext.decisions` gives the agent"
    )
    budget: Budget = Field(default_factory=Budget)
    deadline: float | None = None
    visits: dict[str, int] = Field(default_factory=dict)
    escalation: Escalation | None = None
    abandoned: ToolCancel | None = Field(
        default=None,
        description="the tool call the job stopped waiting for (a cancel, its deadline, a "
        "person's resolve): its result, if it comes, is journaled, not dropped",
    )
    signal: str | None = Field(default=None, description="the signal it waits for (phase `signal`)")
    signal_ids: list[str] = Field(
        default_factory=list,
        description="the ids of the latest signals delivered: one sent again is answered, "
        "not delivered again",
    )
    resolve_ids: list[str] = Field(
        default_factory=list,
        description="the ids of the latest resolves carried out (`ResolveRequest.resolve_id`"
        "): one asked again is answered, not applied again",
    )
    on_exhausted: str | None = None
    pending_edge: str | None = None
    pending_tool: str | None = Field(
        default=None, description="the tool the current step calls (phase `tool`/`verify`)"
    )
    pending_args: dict[str, Any] = Field(default_factory=dict)
    pending_result: Any = None
    stall_arm: int = Field(default=0, description="the current stall watchdog (0: none)")
    request_hash: str = ""
    webhook: str | None = None
    sampling: Sampling | None = None
    labels: dict[str, str] | None = None
    thread: str | None = Field(default=None, description="the thread it is a turn of")
    thread_busy: Literal["wait", "refuse"] = "wait"
    thread_context: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the thread's earlier turns its context carries (chosen when it starts)",
    )
    compaction: Compaction | None = Field(
        default=None, description="set while the turn summarises its thread's older turns"
    )
    thread_summary: ThreadSummary | None = Field(
        default=None, description="the summary the turn wrote, kept by the thread as it ends"
    )
    memory: MemoryScope | None = Field(
        default=None, description="whose memory it reads and writes (an agent with `memory`)"
    )
    flow_key: str | None = Field(
        default=None, description="its concurrency key (`<agent>.<value>`), if it has one"
    )
    flow_limit: int = 1
    flow_rate: float | None = None
    flow_debounce: float | None = None
    priority: int = 0
    trace: str | None = Field(
        default=None,
        description="the job's W3C traceparent: its trace, and the span id of its root span "
        "(sent when the job ends); None when traces are off",
    )
    trace_parent: str | None = Field(
        default=None, description="the caller's traceparent the job's trace continues"
    )
    usage: Usage = Field(default_factory=Usage)
    output: dict[str, Any] | None = Field(
        default=None, description="what the LLM gave on an output edge (`Edge.output`)"
    )
    parent: ParentLink | None = None
    children: list[str] = Field(default_factory=list, description="child jobs started")
    waiting: Children | None = Field(
        default=None, description="the child jobs of the current step, while it waits"
    )
    child_steps: int = Field(
        default=0, description="steps its ended children took, charged to its max_steps"
    )
    lookups: int = Field(default=0, description="lookups made in this visit of its state")
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created_at: float = Field(default_factory=now)
    updated_at: float = Field(default_factory=now)
    event_seq: int = 0
    outbox: list[Outgoing] = Field(default_factory=list)
    cause: str = Field(
        default="",
        description="the message whose transition wrote this snapshot: while that message "
        "is unacked, its redelivery publishes `outbox` again (nothing else does)",
    )

    # The events of the transition being made (not stored: the outbox has them encoded),
    # for what a supervisor counts once its write succeeded.
    _new_events: list[Event] = PrivateAttr(default_factory=list)
    # The calls the transition stopped waiting for, to tell their executors once it is
    # written (not stored: a notice is best effort, see `ToolCancel`).
    _cancels: list[ToolCancel] = PrivateAttr(default_factory=list)

    # Read from pydantic's store of private attributes directly: `self._new_events` goes
    # through `BaseModel.__getattr__`, a dozen times a step (scripts/bench profile).
    @property
    def new_events(self) -> list[Event]:
        return self.__pydantic_private__["_new_events"]  # type: ignore[index, no-any-return]

    @property
    def cancels(self) -> list[ToolCancel]:
        return self.__pydantic_private__["_cancels"]  # type: ignore[index, no-any-return]

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def timed(self) -> bool:
        """Whether it may wait for a timer: it runs or waits to start (one that ended, or
        that waits for a person, has none). Such a job has a key in `RIG_RUNNING`."""
        return self.status in ("accepted", "running")

    def entry(self) -> JobEntry:
        return JobEntry(
            job_id=self.job_id,
            agent=self.agent,
            status=self.status,
            created_at=self.created_at,
            updated_at=self.updated_at,
            parent=self.parent.job_id if self.parent is not None else None,
        )

    def info(self) -> JobInfo:
        return JobInfo(
            job_id=self.job_id,
            agent=self.agent,
            status=self.status,
            state=self.state,
            steps=self.step,
            max_steps=self.budget.max_steps,
            path=self.path,
            result=self.result,
            error=self.error,
            budget=self.budget,
            usage=self.usage,
            visits=self.visits,
            graph_version=self.graph_version,
            deadline=self.deadline,
            waiting=self.escalation,
            sampling=self.sampling,
            labels=self.labels,
            thread=self.thread,
            trace_id=self.trace.split("-")[1]
            if self.trace and self.trace.endswith("-01")
            else None,
            parent=self.parent,
            child_steps=self.child_steps,
            children=self.children,
            waiting_for=[s.job_id for s in self.waiting.slots if s.state == "running"]
            if self.phase == "child" and self.waiting is not None
            else [],
            waiting_signal=self.signal if self.phase == "signal" else None,
            handled=[*self.signal_ids, *self.resolve_ids],
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class BreakerState(_Wire):
    """A provider's circuit breaker, as `RIG_BREAKERS` keeps it (`breaker_key`)."""

    state: Literal["closed", "open", "half_open"] = "closed"
    failures: int = 0  # how many times it opened since it last closed
    until: float = 0.0  # open: when a probe may go; half_open: when the probe is given up
    owner: str = ""  # the process that made the last change
    changed_at: float = 0.0
