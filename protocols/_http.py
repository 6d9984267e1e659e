"""The bodies of Rig's HTTP API (`rig gateway`), beside the NATS API they map onto."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocols._graph import Graph
from protocols._messages import (
    Budget,
    BudgetOverride,
    Escalation,
    JobId,
    JobInfo,
    Labels,
    Name,
    PlainObject,
    Sampling,
    WebhookTarget,
    _Api,
    _Wire,
)


class HttpSubmit(_Api):
    """`POST /v1/jobs`: start a job of `agent` on `input` (a `SubmitRequest`)."""

    agent: Name
    input: PlainObject
    job_id: JobId | None = Field(
        default=None,
        description="choose the id (or send an Idempotency-Key header) to make the POST "
        "idempotent: the same body again is the same job; another body is `job_conflict`",
    )
    limits: BudgetOverride | None = None
    webhook: WebhookTarget | None = Field(
        default=None,
        description="a signed POST (Standard Webhooks) when the job ends or waits for a "
        "person; delivered at least once, deduplicate by the `webhook-id` header",
    )
    sampling: Sampling | None = Field(
        default=None,
        description="the job's model sampling: a seed sent with every model call, and "
        "whether the response cache may answer them",
    )
    labels: Labels | None = Field(
        default=None, description="up to 16 short strings kept with the job (its status shows them)"
    )
    thread: JobId | None = Field(
        default=None,
        description="the conversation the job is a turn of: one turn runs at a time, and its "
        "context carries the earlier turns (`GET /v1/threads/{id}`)",
    )
    thread_busy: Literal["wait", "refuse"] | None = Field(
        default=None, description="while another turn runs: `wait` (the default) or `refuse`"
    )
    concurrency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="jobs of the agent with this key run `concurrency_limit` at a time; the "
        "others wait in order",
    )
    concurrency_limit: int | None = Field(default=None, ge=1, le=10_000)
    priority: int = Field(
        default=0, ge=-1000, le=1000, description="among jobs waiting for one key, higher first"
    )


class HttpSignal(_Api):
    """`POST /v1/jobs/{id}/signals/{name}`: deliver a signal (a `SignalRequest`)."""

    data: PlainObject = Field(default_factory=dict)
    by: str = Field(default="", max_length=200)


class HttpResolve(_Api):
    """`POST /v1/jobs/{id}/resolve`: a person takes `edge` (a `ResolveRequest`)."""

    edge: Name
    args: PlainObject = Field(default_factory=dict)
    note: str = Field(default="", max_length=4000)
    by: str = Field(default="", max_length=200)
    step: int | None = Field(
        default=None,
        ge=0,
        description="the step of the wait the person was shown (an inbox entry's `step`): "
        "refused with 409 `job_moved` once the job has left it",
    )
    limits: BudgetOverride | None = None


class HttpCancel(_Api):
    """`POST /v1/jobs/{id}/cancel` (the body may be empty)."""

    reason: str = Field(default="", max_length=2000)


def limits_of(body: HttpSubmit | HttpResolve) -> dict[str, Any]:
    return body.limits.model_dump(exclude_none=True) if body.limits else {}


# --- what the gateway answers ---------------------------------------------------------


class HttpAccepted(_Wire):
    """`202 Accepted` to `POST /v1/jobs`: the job is stored; follow its links."""

    job_id: str
    status: Literal["accepted"] = "accepted"
    warning: str | None = Field(default=None, description="why the job may not run soon")
    links: dict[str, str] = Field(description="`self`, `events` (SSE) and `wait` (long poll)")


class HttpJobs(_Wire):
    """`GET /v1/jobs`: newest first; `next` continues after the last one (None: no more)."""

    jobs: list[JobInfo]
    next: str | None = Field(
        default=None, description="the url of the next page (`cursor=`), if there may be one"
    )
    counts: dict[str, int] = Field(
        default_factory=dict,
        description="every job kept (of `agent`, if given) by status, whatever the page",
    )


class HttpInbox(_Wire):
    """`GET /v1/inbox`: the jobs waiting for a person, oldest first."""

    jobs: list[Escalation]


class HttpAgent(_Wire):
    name: str
    description: str
    example_input: dict[str, Any] | None = None
    input_schema: dict[str, Any] | None = Field(
        default=None, description="the JSON schema a job's input must fit, if the agent has one"
    )
    graph_version: str
    live: int = Field(description="live processes of the agent")


class HttpAgentDetail(HttpAgent):
    """`GET /v1/agents/{name}`: one agent, its state machine as JSON and as Mermaid."""

    graph: Graph
    mermaid: str = Field(description="the graph as a Mermaid state diagram")
    budget: Budget
    on_exhausted: str | None = None
    on_stuck: str


class HttpAgents(_Wire):
    """`GET /v1/agents`: the registered agents, with their live processes."""

    agents: list[HttpAgent]


class HttpProvider(_Wire):
    """One model provider and model, as the agents using it see it."""

    provider: str
    model: str
    breaker: Literal["closed", "open", "half_open"] = Field(
        description="its circuit breaker, shared by every agent (closed: calls go through)"
    )
    opened: int = Field(description="times the breaker opened since it last closed")
    calls: int = Field(description="calls by the live agent processes since they started")
    failed: int = Field(description="of those, the ones that got no answer")
    ms: int = Field(description="the calls' milliseconds in all")
    agents: int = Field(description="live agent processes that called it")


class HttpProviders(_Wire):
    """`GET /v1/providers`: counters since each process started; a client compares two
    readings for a recent error rate and latency."""

    providers: list[HttpProvider]


class HttpOk(_Wire):
    ok: bool = True


class HttpProblem(BaseModel):
    """An RFC 9457 problem document (`application/problem+json`); `code` is the error code
    the NATS API replies with, and the error's details are further members."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
