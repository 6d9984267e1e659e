"""Prometheus metrics: every actor process serves its own on `/metrics`.

Set `RIG_METRICS_PORT` (or `rig actor run --metrics-port N`) and a process serves them
on `RIG_METRICS_HOST` (default 127.0.0.1); `rig up` gives every process a port of its
own and writes `$RIG_HOME/prometheus-targets.json`, a file_sd list a Prometheus scrapes.
Names follow Prometheus's conventions: a `rig_` prefix, base units (seconds), `_total`
on counters; labels are kinds of things (agent, state, tool, consumer, provider,
model), never a job id.
"""

from __future__ import annotations

import importlib.metadata
import platform
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from protocols import TERMINAL_STATUSES, Event

if TYPE_CHECKING:
    from aiohttp import web

# A metric's child per label values, made once: `labels()` takes a lock and builds its
# key on every call, several times a message (scripts/bench profile).
_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}
_MAX_CHILDREN = 10_000  # label values are kinds of things; past this, no more are kept


def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, kept for the next message."""
    key = (id(metric), values)
    found = _CHILDREN.get(key)
    if found is None:
        found = metric.labels(*values)
        if len(_CHILDREN) < _MAX_CHILDREN:
            _CHILDREN[key] = found
    return found


# Latencies from a millisecond (a local hop) to ten minutes (a slow model, a person).
_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600)

BUILD = Info("rig_build", "The running Rig: its version and Python's")
BUILD.info(
    {
        "version": importlib.metadata.version("rig"),
        "python": platform.python_version(),
        "nats_py": importlib.metadata.version("nats-py"),
    }
)

# --- every actor: its consumers ------------------------------------------------------

MESSAGES = Counter(
    "rig_messages_total",
    "Messages an actor process finished handling, by consumer and outcome "
    "(ok, retried: nak'ed to come back, failed: raised, dead_lettered; outage: a run "
    "that failed because the servers were away, run again in place)",
    ["consumer", "outcome"],
)
REDELIVERIES = Counter(
    "rig_message_redeliveries_total",
    "Messages that arrived again (delivery count above 1), by consumer",
    ["consumer"],
)
HANDLER_SECONDS = Histogram(
    "rig_handler_duration_seconds",
    "How long a message's handler ran, by consumer",
    ["consumer"],
    buckets=_SECONDS,
)
SCHEDULE_TO_START = Histogram(
    "rig_schedule_to_start_seconds",
    "From a message's storing in its stream to a process beginning to handle it, by "
    "consumer (the wait in the inbox)",
    ["consumer"],
    buckets=_SECONDS,
)
PENDING = Gauge(
    "rig_consumer_pending_messages",
    "Messages waiting in a consumer's inbox, as the last one delivered said",
    ["consumer"],
)

# --- the supervisor: jobs ---------------------------------------------------------------

JOBS_STARTED = Counter("rig_jobs_started_total", "Jobs that started, by agent", ["agent"])
JOBS_FINISHED = Counter(
    "rig_jobs_finished_total", "Jobs that ended, by agent and status", ["agent", "status"]
)
JOB_SECONDS = Histogram(
    "rig_job_duration_seconds",
    "From a job's acceptance to its end, by agent and status",
    ["agent", "status"],
    buckets=_SECONDS,
)
QUEUED_SECONDS = Histogram(
    "rig_job_queued_seconds",
    "How long a job with a concurrency key waited for its place, by agent",
    ["agent"],
    buckets=_SECONDS,
)
JOBS_PARKED = Counter(
    "rig_jobs_parked_total",
    "Times a job began waiting for a person, by agent and why (human_state, budget, "
    "dead_letter, stalled, effect_unknown, config_error, ...)",
    ["agent", "kind"],
)
TRANSITIONS = Counter(
    "rig_transitions_total", "State transitions, by agent and target state", ["agent", "state"]
)
DECISIONS = Counter(
    "rig_decisions_total",
    "Steps decided, by agent, state, and how (llm, human, fallback: the safe edge)",
    ["agent", "state", "how"],
)
EXHAUSTED = Counter(
    "rig_budget_exhaustions_total",
    "Budgets spent, by agent and kind (steps, tokens, cost, deadline, visits)",
    ["agent", "kind"],
)
BUSY = Counter(
    "rig_submits_busy_total",
    "Submits refused as busy because the agent's backlog was past RIG_MAX_BACKLOG, by agent",
    ["agent"],
)
FORGED_REPORTS = Counter(
    "rig_forged_reports_total",
    "Reports the supervisor refused because their subject's sender is not the one the "
    "report claims or the job's step waits for, by sender (kind.name)",
    ["sender"],
)
TIMERS_RESENT = Counter(
    "rig_timers_resent_total",
    "Timers a supervisor's sweep sent again, overdue by more than RIG_TIMER_SWEEP_S (lost "
    "by the servers, or held by a process that stopped), by kind",
    ["kind"],
)
SNAPSHOTS_UNREADABLE = Counter(
    "rig_snapshots_unreadable_total",
    "Job snapshots that did not decode when a supervisor read them (something other than a "
    "supervisor wrote them): each is also an error line naming the job",
)
REPLIES_REFUSED = Counter(
    "rig_replies_refused_total",
    "Requests answered with silence because their reply subject is not an inbox (a "
    "request that names a stream's or a bucket's subject as its reply), by subject",
    ["subject"],
)
VERDICTS = Counter(
    "rig_verdicts_total", "Verifiers' verdicts, by verifier and outcome", ["verifier", "outcome"]
)
TOOL_RESULTS = Counter(
    "rig_tool_results_total",
    "Tool results the supervisor recorded, by tool, outcome and ledger (miss: it ran; hit: "
    "the ledger answered)",
    ["tool", "outcome", "ledger"],
)

# --- agents: steps and models -------------------------------------------------------------

STEP_SECONDS = Histogram(
    "rig_step_duration_seconds",
    "How long an agent took to decide a step, by agent and state",
    ["agent", "state"],
    buckets=_SECONDS,
)
LLM_REQUESTS = Counter(
    "rig_llm_requests_total",
    "Requests to model providers, by provider, model and outcome (ok, or the error's kind)",
    ["provider", "model", "outcome"],
)
LLM_SECONDS = Histogram(
    "rig_llm_request_duration_seconds",
    "How long a model request took, by provider and model",
    ["provider", "model"],
    buckets=_SECONDS,
)
LLM_TOKENS = Counter(
    "rig_llm_tokens_total",
    "Tokens spent, by provider, model and direction (input, output)",
    ["provider", "model", "direction"],
)
LLM_RETRIES = Counter(
    "rig_llm_retries_total",
    "Model requests after a failed one within a step, by provider and model",
    ["provider", "model"],
)
LLM_HEDGES = Counter(
    "rig_llm_hedges_total",
    "Hedged requests (a second request raced a slow first one), by provider",
    ["provider"],
)
LLM_CACHE_HITS = Counter(
    "rig_llm_cache_hits_total", "Steps answered from the response cache, by agent", ["agent"]
)
BREAKER_OPEN = Gauge(
    "rig_llm_breaker_open",
    "1 while this process found a provider's circuit breaker open, else 0",
    ["provider"],
)

# --- tool executors and verifiers -------------------------------------------------------

TOOL_CALLS = Counter(
    "rig_tool_calls_total",
    "Tool calls an executor handled, by tool and outcome (ok, failed)",
    ["tool", "outcome"],
)
TOOL_SECONDS = Histogram(
    "rig_tool_duration_seconds",
    "How long a tool itself ran (not on a ledger hit), by tool",
    ["tool"],
    buckets=_SECONDS,
)
LEDGER = Counter(
    "rig_ledger_outcomes_total",
    "The idempotency ledger's answers, by tool and outcome (miss: the tool runs; hit: it "
    "ran before; unknown: it may have, and cannot tell)",
    ["tool", "outcome"],
)
CHECKS = Counter(
    "rig_verifications_total",
    "Checks a verifier ran, by verifier and outcome",
    ["verifier", "outcome"],
)


def observe_events(agent: str, events: list[Event], *, created_at: float) -> None:
    """A supervisor's transition wrote `events` for a job of `agent`: count them."""
    for event in events:
        data = event.data
        match event.type:
            case "started":
                child(JOBS_STARTED, agent).inc()
            case "transition":
                child(TRANSITIONS, agent, str(data.get("target"))).inc()
            case "decision":
                how = (
                    "human"
                    if data.get("by") == "human"
                    else "fallback"
                    if data.get("fallback")
                    else "llm"
                )
                child(DECISIONS, agent, str(data.get("state")), how).inc()
            case "budget":
                child(EXHAUSTED, agent, str(data.get("kind"))).inc()
            case "verdict":
                outcome = "passed" if data.get("passed") else "failed"
                child(VERDICTS, str(data.get("verifier")), outcome).inc()
            case "tool_result":
                outcome = "ok" if data.get("ok") else "failed"
                child(TOOL_RESULTS, str(data.get("tool")), outcome, str(data.get("ledger"))).inc()
            case "status":
                status = str(data.get("status"))
                if status in TERMINAL_STATUSES:
                    child(JOBS_FINISHED, agent, status).inc()
                    child(JOB_SECONDS, agent, status).observe(max(0.0, event.ts - created_at))
                elif status == "waiting_human":
                    child(JOBS_PARKED, agent, str(data.get("kind") or "human_state")).inc()


def observe_calls(agent: str, calls: list[dict[str, Any]], usage: Any) -> None:
    """An agent's step made these model calls (`Decision.calls`) and spent `usage`."""
    model = ("", "")
    failed: set[tuple[str, str]] = set()
    for call in calls:
        if call.get("cache") == "hit":
            child(LLM_CACHE_HITS, agent).inc()
            continue
        if "hedge" in call:
            child(LLM_HEDGES, str(call.get("provider"))).inc()
            continue
        if "provider" not in call:
            continue
        key = (str(call["provider"]), str(call.get("model")))
        if key in failed:
            child(LLM_RETRIES, *key).inc()
        if call.get("error") == "breaker_open":
            child(BREAKER_OPEN, key[0]).set(1)
            continue
        child(BREAKER_OPEN, key[0]).set(0)
        outcome = "ok" if call.get("ok") else str(call.get("error") or "error")
        child(LLM_REQUESTS, *key, outcome).inc()
        child(LLM_SECONDS, *key).observe(float(call.get("ms") or 0) / 1000)
        if call.get("ok"):
            model = key
        else:
            failed.add(key)
    if model != ("", "") and usage is not None:
        child(LLM_TOKENS, *model, "input").inc(usage.input_tokens)
        child(LLM_TOKENS, *model, "output").inc(usage.output_tokens)


async def serve_metrics(host: str, port: int) -> web.AppRunner:
    """Serve `/metrics` (the Prometheus text format) on `host:port`; returns the runner."""
    from aiohttp import (
        web,  # only a process that serves metrics loads aiohttp (actors.runtime.lazy)
    )

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
