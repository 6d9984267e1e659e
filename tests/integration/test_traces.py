"""One trace per job, across every process, in a real OpenTelemetry backend (Phoenix)."""

from __future__ import annotations

import json
import random
import time
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from actors.deploy.up import free_port
from actors.examples.refund import RefundAgent
from actors.testing import Deployment, eventually
from tests.integration.test_cli import run_rig
from tests.integration.test_llm import llm_config, start_chaos
from tests.support.phoenix import phoenix, spans

pytestmark = pytest.mark.integration

ACTORS = {
    "actors:Supervisor": 1,
    "actors.examples.refund:RefundLLMAgent": 1,
    "actors.examples.refund:RefundAgent": 1,  # rule-routed: parks a large refund
    "actors.examples.refund:RefundTools": 1,
    "actors.examples.refund:RefundChecks": 1,
    "actors:Gateway": 1,
}
MESSAGING = {"messaging.system": "nats", "messaging.destination.name": str}
# Name (its first word) -> Phoenix's kind, and attributes each span of it must have
# (a type: any value of it; else that value): the GenAI and messaging conventions.
GOLDEN: dict[str, tuple[str, dict[str, Any]]] = {
    "job": ("CHAIN", {"gen_ai.agent.name": str, "rig.job.status": "succeeded"}),
    "invoke_agent": (
        "AGENT",
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": str},
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
    "waiting_human": ("UNKNOWN", {"rig.job.id": str, "rig.escalation.kind": str}),
    "submit": ("UNKNOWN", {"gen_ai.agent.name": "refund-llm", "rig.job.id": str}),
    "POST": (
        "UNKNOWN",
        {"http.request.method": "POST", "http.route": "/v1/jobs", "http.response.status_code": 202},
    ),
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


async def trace_of(
    url: str, project: str, trace_id: str, *names: str, outside: str | None = None
) -> list[dict[str, Any]]:
    """The trace once spans of each of `names` arrived, every span's parent with them (but
    `outside`, the caller's span), and then nothing more arrives. Each process exports its
    own spans in batches, and the backend stores them as they come: a child may be stored
    long before its parent on a loaded machine, so no time alone says the trace is whole."""
    seen: list[dict[str, Any]] = []
    changed = time.monotonic()

    async def settled() -> list[dict[str, Any]]:
        nonlocal seen, changed
        now = await spans(url, project, trace_id)
        if len(now) != len(seen):
            seen, changed = now, time.monotonic()
        ids = {s["context"]["span_id"] for s in now} | {None, "", outside}
        closed = all(s["parent_id"] in ids for s in now)
        # No new span for a second: five times the exporters' 200 ms batches.
        quiet = time.monotonic() - changed >= 1.0
        return now if quiet and closed and set(names) <= {s["name"] for s in now} else []

    return await eventually(settled, timeout=60, message=f"trace {trace_id} with {names}")


def check_tree(found: list[dict[str, Any]], top: dict[str, Any]) -> None:
    """Every span's parent chain reaches `top`; names, kinds and attributes are golden."""
    by_id = {s["context"]["span_id"]: s for s in found}
    for span in found:
        chain = span
        while chain is not top:
            assert chain["parent_id"] in by_id, f"{span['name']}: a parent not in the trace"
            chain = by_id[chain["parent_id"]]
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


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


async def test_a_job_is_one_trace_across_processes_and_a_kill(rig: Deployment) -> None:
    """The model-routed refund agent under `rig up`, exporting to Phoenix; its tool
    executor dies (exit 137, as SIGKILLed) in the middle of its first call, once. The job
    is one trace: every span's parents lead to the job's root, spans come from four
    processes, the redelivered call continues the same trace, and names, kinds and
    attributes follow the conventions. Then the trace's other beginnings and parts: a
    `rig submit` (its span is the root's parent), an HTTP request with a `traceparent`
    (the gateway's span continues it, and the job continues the gateway's), an unsampled
    caller (no span at all), a person's wait (its own span); and the log lines of a job
    carry its trace id."""
    chaos = await start_chaos("--main-path", "1.0")
    llm_config(rig, chaos.url, section="refund-llm")
    project = rig.prefix
    gateway_port = free_port()
    gateway = f"http://127.0.0.1:{gateway_port}"
    job_input = {"order_id": "A-1001", "amount": 25, "reason": "arrived damaged"}
    caller_trace, caller_span = f"{random.getrandbits(128):032x}", f"{random.getrandbits(64):016x}"
    unsampled_trace = f"{random.getrandbits(128):032x}"
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
                "RIG_GATEWAY_PORT": str(gateway_port),
                "RIG_LOG_LEVEL": "debug",  # a line per message handled
            }
        )
        ready = await rig.nc.subscribe(rig.names.actor_ready)
        up = await rig.rig_up(ACTORS)
        try:
            for _ in ACTORS:
                await ready.next_msg(timeout=60)
            reply = await rig.client.submit("refund-llm", job_input)
            info = await rig.client.wait(reply.job_id, timeout=120)
            assert info.status == "succeeded" and info.trace_id is not None
            assert (rig.home / "crashed").exists()  # the executor did die mid-call
            events = await rig.client.journal(reply.job_id)
            found = await trace_of(
                url, project, info.trace_id, "job refund-llm", "verify refund_matches"
            )

            submit = ("submit", "refund-llm", "--input", json.dumps(job_input), "--wait", "--json")
            code, out, err = await run_rig(rig.env, *submit)
            assert code == 0, err
            by_cli = json.loads(out)
            from_cli = await trace_of(
                url, project, by_cli["trace_id"], "job refund-llm", "submit refund-llm"
            )

            async with aiohttp.ClientSession() as http:
                for flags, trace_id in (("00", unsampled_trace), ("01", caller_trace)):
                    headers = {"traceparent": f"00-{trace_id}-{caller_span}-{flags}"}
                    body = {"agent": "refund-llm", "input": job_input}
                    async with http.post(f"{gateway}/v1/jobs", json=body, headers=headers) as r:
                        assert r.status == 202, await r.text()
                        job_id = (await r.json())["job_id"]
                    by_http = await rig.client.wait(job_id, timeout=60)
                    assert by_http.status == "succeeded"
            assert by_http.trace_id == caller_trace
            from_http = await trace_of(
                url, project, caller_trace, "job refund-llm", "POST /v1/jobs", outside=caller_span
            )

            parked = await rig.client.submit("refund", RefundAgent.example_input | {"amount": 650})
            waiting = await rig.client.wait(parked.job_id, timeout=60)
            assert waiting.status == "waiting_human" and waiting.waiting is not None
            await rig.client.resolve(parked.job_id, waiting.waiting.edges[0], by="tester")
            resolved = await rig.client.wait(parked.job_id, timeout=60)
            assert resolved.status == "succeeded" and resolved.trace_id is not None
            human_events = await rig.client.journal(parked.job_id)
            with_person = await trace_of(
                url, project, resolved.trace_id, "job refund", "waiting_human refund"
            )
            # The unsampled job ended before the last two began, and every process
            # sends its spans in order: had it any, they would be there by now.
            assert await spans(url, project, unsampled_trace) == []
            code, logs, err = await run_rig(rig.env, "logs", reply.job_id, "--json")
            assert code == 0, err
        finally:
            up.terminate()
            await up.wait()
            chaos.proc.terminate()
            await chaos.proc.wait()

    [root] = [s for s in found if not s["parent_id"]]
    assert root["name"] == "job refund-llm" and root["attributes"]["rig.job.id"] == reply.job_id
    check_tree(found, root)
    processes = {s["attributes"]["rig.process"] for s in found if s["name"].startswith("process")}
    assert len({p.split("@")[0] for p in processes}) >= 4, processes
    # The call the dead executor took is delivered again and continues this trace.
    calls = [s for s in found if s["name"] == f"process {rig.names.tool('lookup_order')}"]
    assert max(s["attributes"]["rig.message.delivery_count"] for s in calls) >= 2
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

    # `rig submit`: its span is the trace's top, the job's root its child.
    [top] = [s for s in from_cli if not s["parent_id"]]
    [job] = [s for s in from_cli if s["name"] == "job refund-llm"]
    assert top["name"] == "submit refund-llm" and job["parent_id"] == top["context"]["span_id"]
    assert top["attributes"]["rig.job.id"] == by_cli["job_id"]
    check_tree(from_cli, top)

    # Over HTTP: the caller's span -> the gateway's POST -> the job.
    [post] = [s for s in from_http if s["name"] == "POST /v1/jobs"]
    [job] = [s for s in from_http if s["name"] == "job refund-llm"]
    assert post["parent_id"] == caller_span and job["parent_id"] == post["context"]["span_id"]
    check_tree(from_http, post)

    # A person's wait is a span under the job's root, from parking to the answer.
    [root] = [s for s in with_person if not s["parent_id"]]
    [wait] = [s for s in with_person if s["name"] == "waiting_human refund"]
    assert wait["parent_id"] == root["context"]["span_id"]
    check_tree(with_person, root)
    parked_at = next(
        e.ts for e in human_events if e.type == "status" and e.data["status"] == "waiting_human"
    )
    answered_at = next(e.ts for e in human_events if e.type == "resolved")
    assert seconds(wait["start_time"]) == pytest.approx(parked_at, abs=0.5)
    assert seconds(wait["end_time"]) == pytest.approx(answered_at, abs=0.5)

    # Log lines join the trace: a job's lines, from several processes, carry the ids of
    # its trace and of spans in it (the killed executor's unsent spans aside).
    lines = [json.loads(line) for line in logs.splitlines()]
    span_ids = {s["context"]["span_id"] for s in found}
    joined = [
        line
        for line in lines
        if line.get("trace_id") == info.trace_id and line.get("span_id") in span_ids
    ]
    assert len({line["file"] for line in joined}) >= 2, lines
