"""Seeing inside a job: `rig trace`'s waterfall from the journal, on real processes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pty
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.examples.refund import RefundAgent
from actors.testing import Deployment
from tests.conftest import REFUND
from tests.integration.test_cli import RIG, rig_cli
from tests.integration.test_llm import llm_config, start_chaos

pytestmark = pytest.mark.integration


async def test_trace_draws_the_waterfall_the_journal_records(rig: Deployment) -> None:
    procs = await rig.spawn(*REFUND)
    pids = {str(proc.pid) for proc in procs}
    reply = await rig.client.submit("refund", RefundAgent.example_input)
    info = await rig.client.wait(reply.job_id, timeout=60)
    assert info.status == "succeeded"
    events = await rig.client.journal(reply.job_id)
    code, out, err = await rig_cli(rig, "trace", reply.job_id, "--json")
    assert code == 0, err
    fall = json.loads(out)
    spans = fall["spans"]
    origin = events[0].ts
    assert fall["status"] == "succeeded" and fall["steps"] == info.steps
    assert fall["seconds"] == pytest.approx(events[-1].ts - origin, abs=1e-5)
    # Every report's work is a span, done by the process that handled it (one of ours).
    decisions = [e for e in events if e.type == "decision"]
    tools = [e for e in events if e.type == "tool_result"]
    verdicts = [e for e in events if e.type == "verdict"]
    for kind, reports in (("decide", decisions), ("tool", tools), ("verify", verdicts)):
        work = [s for s in spans if s["kind"] == kind]
        assert len(work) == len(reports) > 0
        for span, event in zip(work, reports, strict=True):
            handled = event.data["handled"]
            assert span["by"] == handled["by"] and span["by"].rsplit(":", 1)[1] in pids
            assert span["start"] == pytest.approx(handled["at"] - origin, abs=1e-5)
            assert span["ms"] == pytest.approx(handled["ms"], abs=1e-2)
    for span, event in zip([s for s in spans if s["kind"] == "tool"], tools, strict=True):
        assert span["ms"] >= event.data["tool_ms"]  # the tool's run is inside its handling
        assert f"({event.data['tool_ms']:.0f} ms)" in span["what"]
    for span, event in zip([s for s in spans if s["kind"] == "decide"], decisions, strict=True):
        assert f"(model {event.data['llm_ms']:.0f} ms" in span["what"]
    # On one time axis: each span within the job, each work span after its queue wait
    # (within the trace's rounding: a start, a length and the job's seconds, each to 1 µs).
    for span in spans:
        assert 0 <= span["start"] and span["start"] + span["ms"] / 1000 <= fall["seconds"] + 2e-6
    for before, after in itertools.pairwise(spans):
        if before["kind"] == "queue":
            assert after["start"] == pytest.approx(before["start"] + before["ms"] / 1000, abs=1e-5)
    code, text, _ = await rig_cli(rig, "trace", reply.job_id)
    lines = text.splitlines()
    assert code == 0 and lines[0].startswith(f"job {reply.job_id}  agent refund  succeeded")
    assert any("tool issue_refund [miss]" in line and "|" in line for line in lines)
    assert lines[-1].startswith("in all: ")


async def test_trace_shows_a_persons_wait(rig: Deployment) -> None:
    await rig.spawn(*REFUND)
    over = RefundAgent.example_input | {"amount": 650}
    reply = await rig.client.submit("refund", over)
    info = await rig.client.wait(reply.job_id, timeout=60)
    assert info.status == "waiting_human" and info.waiting is not None
    code, out, _ = await rig_cli(rig, "trace", reply.job_id, "--json")
    assert code == 0 and json.loads(out)["status"] == "waiting_human"
    await rig.client.resolve(reply.job_id, info.waiting.edges[0], by="tester")
    await rig.client.wait(reply.job_id, timeout=60)
    events = await rig.client.journal(reply.job_id)
    code, out, _ = await rig_cli(rig, "trace", reply.job_id, "--json")
    [human] = [s for s in json.loads(out)["spans"] if s["kind"] == "human"]
    parked = next(e for e in events if e.type == "status" and e.data["status"] == "waiting_human")
    resolved = next(e for e in events if e.type == "resolved")
    assert human["ms"] == pytest.approx((resolved.ts - parked.ts) * 1000, abs=1e-2)
    code, _, err = await rig_cli(rig, "trace", "no-such-job")
    assert code != 0 and "no-such-job" in err and "Traceback" not in err


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A /metrics page as {(sample name, sorted labels): value}."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, have), value in samples.items()
        if sample == name and all((k, v) in have for k, v in labels.items())
    )


async def test_each_process_metrics_agree_with_the_journals(rig: Deployment) -> None:
    """100 jobs of the model-routed refund agent through a chaos model that fails one
    request in five: every process's /metrics (the ports `rig up` gave them, listed in its
    Prometheus targets file) counts what the journals say happened."""
    chaos = await start_chaos("--seed", "5", "--rate-5xx", "0.2", "--main-path", "0.9")
    # Eight attempts a step: four 5xx in a row would be an outage (the step tried again
    # later, its failed calls in no journal) one step in 400; eight, one in 400,000.
    llm_config(rig, chaos.url, section="refund-llm", max_attempts=8)
    actors = {
        "actors:Supervisor": 1,
        "actors.examples.refund:RefundLLMAgent": 1,
        "actors.examples.refund:RefundTools": 1,
        "actors.examples.refund:RefundChecks": 1,
    }
    ready = await rig.nc.subscribe(rig.names.actor_ready)
    up = await rig.rig_up(actors)
    try:
        for _ in range(4):
            await ready.next_msg(timeout=60)
        targets = json.loads((rig.home / "prometheus-targets.json").read_text())
        assert sorted(t["labels"]["rig_actor"] for t in targets) == sorted(actors)
        jobs = []
        for n in range(100):
            order = f"A-{1000 + n}"
            job_input = {"order_id": order, "amount": 20 + n % 7, "reason": "damaged"}
            jobs.append((await rig.client.submit("refund-llm", job_input)).job_id)
        for job in jobs:
            await rig.client.wait(job, timeout=120)
        journals = [await rig.client.journal(job) for job in jobs]
        scraped = {
            t["labels"]["rig_actor"].rsplit(":", 1)[1]: await scrape(
                f"http://{t['targets'][0]}/metrics"
            )
            for t in targets
        }
    finally:
        up.terminate()
        await up.wait()
        chaos.proc.terminate()
        await chaos.proc.wait()
    events = [event for journal in journals for event in journal]

    def count(type_: str, **data: Any) -> int:
        return sum(
            e.type == type_ and all(e.data.get(k) == v for k, v in data.items()) for e in events
        )

    supervisor, agent = scraped["Supervisor"], scraped["RefundLLMAgent"]
    tools, checks = scraped["RefundTools"], scraped["RefundChecks"]
    assert total(supervisor, "rig_jobs_started_total", agent="refund-llm") == 100
    for status in ("succeeded", "failed", "cancelled"):
        ended = count("status", status=status)
        assert total(supervisor, "rig_jobs_finished_total", status=status) == ended
    assert total(supervisor, "rig_job_duration_seconds_count") == sum(
        count("status", status=s) for s in ("succeeded", "failed", "cancelled")
    )
    assert total(supervisor, "rig_jobs_parked_total") == count("status", status="waiting_human")
    # Steps: one decision each; every transition.
    assert total(supervisor, "rig_decisions_total") == count("decision") > 100
    assert total(supervisor, "rig_transitions_total") == count("transition")
    # Tool calls, from the supervisor's records and from the executor itself.
    for tool in ("lookup_order", "issue_refund"):
        calls = count("tool_result", tool=tool)
        assert total(supervisor, "rig_tool_results_total", tool=tool) == calls
        assert total(tools, "rig_tool_calls_total", tool=tool) == calls
        assert total(tools, "rig_ledger_outcomes_total", tool=tool, outcome="miss") == calls
    assert total(checks, "rig_verifications_total") == count("verdict")
    assert total(supervisor, "rig_verdicts_total", outcome="passed") == count(
        "verdict", passed=True
    )
    # The model's requests, failed ones and retries included, as the decisions record them.
    attempts = [c for e in events if e.type == "decision" for c in e.data.get("calls", [])]
    failed = [c for c in attempts if c.get("provider") and not c.get("ok")]
    assert failed  # one request in five failed
    assert total(agent, "rig_llm_requests_total", outcome="ok") == sum(
        1 for c in attempts if c.get("ok")
    )
    assert total(agent, "rig_llm_requests_total", outcome="server_error") == len(failed)
    # A retry is a request after a failed one in the same step.
    retries = sum(
        1
        for e in events
        if e.type == "decision"
        for before, after in itertools.pairwise(e.data.get("calls", []))
        if not before.get("ok") and after.get("provider") == before.get("provider")
    )
    assert total(agent, "rig_llm_retries_total") == retries > 0
    tokens = sum(e.data["usage"]["input_tokens"] for e in events if e.type == "decision")
    assert total(agent, "rig_llm_tokens_total", direction="input") == tokens
    # The consumers: every message handled once, none came back.
    for samples in (supervisor, agent, tools, checks):
        assert total(samples, "rig_message_redeliveries_total") == 0
        assert total(samples, "rig_messages_total", outcome="ok") > 0
        assert total(samples, "rig_build_info", version="0.1.0") == 1


async def test_top_draws_live_frames_in_a_terminal(rig: Deployment) -> None:
    """`rig top` in a real terminal (a pty): it clears and redraws; its numbers are the
    deployment's: the jobs by status, the queues, one line per live process."""
    await rig.spawn(*REFUND)
    jobs = [(await rig.client.submit("refund", RefundAgent.example_input)).job_id for _ in range(5)]
    over = await rig.client.submit("refund", RefundAgent.example_input | {"amount": 650})
    for job in [*jobs, over.job_id]:
        await rig.client.wait(job, timeout=60)
    code, out, err = await rig_cli(rig, "top", "--frames", "1", "--json")
    assert code == 0, err
    frame = json.loads(out)
    assert frame["jobs"] == {"succeeded": 5, "waiting_human": 1}
    consumers = {q["consumer"] for q in frame["queues"]}
    assert rig.names.agent_durable("refund") in consumers
    assert all(q["pending"] == 0 for q in frame["queues"])  # all done
    assert sorted(p["kind"] for p in frame["processes"]) == [
        "agent",
        "supervisor",
        "tools",
        "verifier",
    ]
    # In a terminal: three frames, each clearing the screen first.
    primary, secondary = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        RIG, "top", "--frames", "3", "--interval", "0.5",
        env=rig.env, stdin=secondary, stdout=secondary, stderr=secondary,
    )  # fmt: skip
    os.close(secondary)
    screen = b""
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(asyncio.to_thread(os.read, primary, 65536), 30)
            except OSError:  # the terminal closed: the process is done
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(primary)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    text = screen.decode()
    assert text.count("\x1b[H\x1b[2J") == 3
    last = text.rsplit("\x1b[H\x1b[2J", 1)[1]
    assert "4 live process(es)" in last and "succeeded 5  waiting_human 1" in last
    assert "throughput  jobs ended" in last and rig.names.agent_durable("refund") in last
