"""The research example's tests (actors/examples/research.py): a brief fanned out to a
research job per question, then written up by a writer job, all in this process
(`run_job` with the child agents given as `agents=`)."""

from __future__ import annotations

from actors.examples.research import (
    ResearchAgent,
    ResearchChecks,
    ResearchTools,
    TriageAgent,
    WriterAgent,
)
from actors.testing import ScriptedLLM, assert_path, run_job

ACTORS = {
    "agents": [ResearchAgent, WriterAgent],
    "tools": [ResearchTools],
    "verifiers": [ResearchChecks],
}


async def test_each_question_is_researched_by_a_child_and_the_report_cites_them_all() -> None:
    brief = {"topic": "the sky", "questions": ["why is the sky blue", "what makes a rainbow"]}
    run = await run_job(TriageAgent, brief, **ACTORS)
    assert_path(run, ["triage", "write", "done"])
    research = [child for child in run.children if child.snapshot.agent == "research"]
    assert [child.status for child in research] == ["succeeded", "succeeded"]
    [writer] = [child for child in run.children if child.snapshot.agent == "writer"]
    assert run.result is not None
    report = run.result["results"]["writer"]["output"]
    assert report["title"] == "On the sky"
    assert "air scatters short (blue) wavelengths" in report["text"]
    [verdict] = run.events("verdict")
    assert verdict.data["passed"] and verdict.data["reason"] == "all 2 findings cited"
    assert writer.usage.tokens > 0 and run.usage.tokens > writer.usage.tokens


async def test_a_report_that_leaves_a_finding_out_goes_to_a_person() -> None:
    brief = {"topic": "tides", "questions": ["what causes tides"]}
    sloppy = ScriptedLLM([("report", {"title": "On tides", "text": "Tides happen."})])
    run = await run_job(TriageAgent, brief, llm={"writer": sloppy}, **ACTORS)
    assert (run.status, run.state) == ("waiting_human", "review")
    [verdict] = run.events("verdict")
    assert "leaves out 1 finding" in verdict.data["reason"]
    await run.resolve("accept", note="good enough")
    assert run.status == "succeeded"


async def test_a_question_whose_research_fails_brings_the_brief_to_a_person() -> None:
    brief = {"topic": "x", "questions": ["what causes tides", "anything"]}
    stuck = ScriptedLLM(["give_up", "give_up"])
    run = await run_job(TriageAgent, brief, llm={"research": stuck}, **ACTORS)
    assert (run.status, run.state) == ("waiting_human", "review")
    assert [child.status for child in run.children] == ["failed", "failed"]
    assert run.escalation is not None and "ended failed" in run.escalation.reason
