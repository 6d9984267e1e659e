"""Testing your agents, tools and verifiers: a whole job in one process, a scripted model,
and asserts that say what went wrong.

    from actors.testing import ScriptedLLM, assert_path, run_job

    async def test_an_order_that_qualifies_is_refunded():
        run = await run_job(RefundAgent, {"order_id": "A-1001", "amount": 25.0},
                            tools=[RefundTools], verifiers=[RefundChecks])
        assert_path(run, ["triage", "review", "refunding", "done"])
        assert run.status == "succeeded"

`run_job` needs no NATS server and no other process. It moves the job with the rules
the supervisor moves it with (`actors.jobs.rules.Rules`: the same functions, not a copy),
runs your classes' own handlers (the agent's step, each tool through the idempotency
ledger in a temporary SQLite file, each verifier), and carries every message between
them encoded and decoded as the wire would. A handler that raises `RetryableError` is
run again at once, up to `RIG_MAX_DELIVER` times (10), and then its message is dead-
lettered, as in production; so is one that raises `NonRetryableError`. What it leaves
out: time (a retry does not wait its delay; a deadline is checked between messages;
the stall watchdog never fires, since nothing in one process stalls), concurrency (one
message at a time), results stored by reference (every result travels inline), and
graph versions (the job runs on the class's graph).

A job that waits for a person comes back with `status == "waiting_human"`;
`await run.resolve("approve")` goes on from there, as `rig resolve` would.

For tests against real processes, Rig's pytest plugin has fixtures: `rig` is a
`Deployment` of the test's own on a real `nats-server` (`nats_server`, one per session),
and `await rig.up(MyAgent, MyTools)` runs `rig up` with your classes (see
actors/testing/harness.py and docs/guide/first-agent.md). They need the `testing` extra.

The package: `local` (run_job, LocalRig), `harness` (real servers and deployments for
tests), `plugin` (the pytest fixtures), `chaos_llm` (an OpenAI-compatible server that
fails on purpose).
"""

from __future__ import annotations

from actors.models.llm import RuleLLM, ScriptedLLM, ScriptExhausted, Text
from actors.testing.harness import Deployment, NatsServer, eventually
from actors.testing.local import (
    JobRun,
    LocalRig,
    assert_edges,
    assert_path,
    assert_status,
    call_tool,
    edges_of,
    path_of,
    run_check,
    run_job,
)

__all__ = [
    "Deployment",
    "JobRun",
    "LocalRig",
    "NatsServer",
    "RuleLLM",
    "ScriptExhausted",
    "ScriptedLLM",
    "Text",
    "assert_edges",
    "assert_path",
    "assert_status",
    "call_tool",
    "edges_of",
    "eventually",
    "path_of",
    "run_check",
    "run_job",
]
