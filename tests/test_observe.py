"""Seeing inside a job: `rig trace`'s waterfall from the journal, on real processes."""

from __future__ import annotations

import itertools
import json

import pytest

from actors.examples.refund import RefundAgent
from tests.conftest import REFUND, Deployment
from tests.test_cli import rig_cli

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
    # On one time axis: each span within the job, each work span after its queue wait.
    for span in spans:
        assert 0 <= span["start"] and span["start"] + span["ms"] / 1000 <= fall["seconds"] + 1e-6
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
