"""One trace per job, across every process, in a real OpenTelemetry backend (Phoenix)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import Deployment, eventually
from tests.phoenix import phoenix, spans
from tests.test_llm import llm_config, start_chaos

pytestmark = pytest.mark.integration

ACTORS = {
    "actors:Supervisor": 1,
    "actors.examples.refund:RefundLLMAgent": 1,
    "actors.examples.refund:RefundTools": 1,
    "actors.examples.refund:RefundChecks": 1,
}
MESSAGING = {"messaging.system": "nats", "messaging.destination.name": str}
# Name (its first word) -> Phoenix's kind, and attributes each span of it must have
# (a type: any value of it; else that value): the GenAI and messaging conventions.
GOLDEN: dict[str, tuple[str, dict[str, Any]]] = {
    "job": ("CHAIN", {"gen_ai.agent.name": "refund-llm", "rig.job.status": "succeeded"}),
    "invoke_agent": (
        "AGENT",
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "refund-llm"},
    ),
    "chat": (
        "LLM",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "chaos",
            "gen_ai.request.model": "chaos-1",
            "gen_ai.usage.input_tokens": int,
            "gen_ai.usage.output_tokens": int,
        },
    ),
    "execute_tool": (
        "TOOL",
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": str,
            "gen_ai.tool.call.id": str,
            "rig.ledger.outcome": str,
        },
    ),
    "verify": ("EVALUATOR", {"rig.job.id": str}),
    "send": ("UNKNOWN", MESSAGING | {"messaging.operation.name": "send"}),
    "process": (
        "UNKNOWN",
        MESSAGING
        | {
            "messaging.operation.name": "process",
            "rig.message.delivery_count": int,
            "rig.process": str,
        },
    ),
}


async def trace_of(url: str, project: str, trace_id: str, root: str) -> list[dict[str, Any]]:
    """The trace once its root arrived and nothing more arrives (spans are batched)."""
    seen: list[dict[str, Any]] = []
    changed = time.monotonic()

    async def settled() -> list[dict[str, Any]]:
        nonlocal seen, changed
        now = await spans(url, project, trace_id)
        if len(now) != len(seen):
            seen, changed = now, time.monotonic()
        # No new span for a second: five times the exporters' 200 ms batches.
        quiet = time.monotonic() - changed >= 1.0
        return now if quiet and any(s["name"] == root for s in now) else []

    return await eventually(settled, timeout=60, message=f"trace {trace_id} complete")


async def test_a_job_is_one_trace_across_processes_and_a_kill(rig: Deployment) -> None:
    """The model-routed refund agent under `rig up`, exporting to Phoenix; its tool
    executor dies (exit 137, as SIGKILLed) in the middle of its first call, once. The job
    is one trace: every span's parents lead to the job's root, spans come from four
    processes, the redelivered call continues the same trace, and names, kinds and
    attributes follow the conventions."""
    chaos = await start_chaos("--main-path", "1.0")
    llm_config(rig, chaos.url, section="refund-llm")
    project = rig.prefix
    async with phoenix(rig.home) as url:
        rig.extra_env.update(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": url,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
                # Its first call: a process SIGKILLed takes the spans it had not sent yet
                # with it, so the kill comes before it has any of this job's.
                "RIG_CRASH_AT": "before_claim:lookup_order",
                "RIG_CRASH_MARKER": str(rig.home / "crashed"),
            }
        )
        ready = await rig.nc.subscribe(rig.names.actor_ready)
        up = await rig.rig_up(ACTORS)
        try:
            for _ in ACTORS:
                await ready.next_msg(timeout=60)
            job_input = {"order_id": "A-1001", "amount": 25, "reason": "arrived damaged"}
            reply = await rig.client.submit("refund-llm", job_input)
            info = await rig.client.wait(reply.job_id, timeout=120)
            assert info.status == "succeeded" and info.trace_id is not None
            assert (rig.home / "crashed").exists()  # the executor did die mid-call
            events = await rig.client.journal(reply.job_id)
            found = await trace_of(url, project, info.trace_id, "job refund-llm")
        finally:
            up.terminate()
            await up.wait()
            chaos.proc.terminate()
            await chaos.proc.wait()
    by_id = {s["context"]["span_id"]: s for s in found}
    [root] = [s for s in found if not s["parent_id"]]
    assert root["name"] == "job refund-llm" and root["attributes"]["rig.job.id"] == reply.job_id
    for span in found:  # every span's parent chain reaches the root
        chain = span
        while chain["parent_id"]:
            assert chain["parent_id"] in by_id, f"{span['name']}: a parent not in the trace"
            chain = by_id[chain["parent_id"]]
        assert chain is root
    processes = {s["attributes"]["rig.process"] for s in found if s["name"].startswith("process")}
    assert len({p.split("@")[0] for p in processes}) >= 4, processes
    # The call the dead executor took is delivered again and continues this trace.
    calls = [s for s in found if s["name"] == f"process {rig.names.tool('lookup_order')}"]
    assert max(s["attributes"]["rig.message.delivery_count"] for s in calls) >= 2
    # Golden: names, kinds, attributes.
    for span in found:
        kind, required = GOLDEN[span["name"].split(" ", 1)[0]]
        assert span["span_kind"] == kind, span["name"]
        for key, want in required.items():
            have = span["attributes"].get(key)
            assert isinstance(have, want) if isinstance(want, type) else have == want, (
                span["name"],
                key,
                have,
            )
    names = {s["name"] for s in found}
    assert {"invoke_agent refund-llm", "chat chaos-1", "execute_tool lookup_order"} <= names
    assert {"execute_tool issue_refund", "verify refund_matches"} <= names
    # The tool call id is the ledger's idempotency key; the verdict is an evaluation event.
    keys = {e.data["key"] for e in events if e.type == "tool_result"}
    tool_ids = {
        s["attributes"]["gen_ai.tool.call.id"]
        for s in found
        if s["name"].startswith("execute_tool")
    }
    assert keys <= tool_ids
    [verify] = [s for s in found if s["name"] == "verify refund_matches"]
    [evaluation] = [e for e in verify["events"] if e["name"] == "gen_ai.evaluation.result"]
    assert evaluation["attributes"]["gen_ai.evaluation.score.label"] == "pass"
    steps = [s for s in found if s["name"] == "invoke_agent refund-llm"]
    assert len(steps) == info.steps
