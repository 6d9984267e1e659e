"""`run_job` runs a job tree in one process: the parent, its children (fan-outs too),
and a job that waits for a signal, on the supervisor's rules."""

from __future__ import annotations

import pytest

from actors.testing import ScriptedLLM, run_job
from protocols import JobStateError, child_job_id
from tests.support.family import Asker, Fanner, Researcher, ResearchTools
from tests.support.waiter import Waiter


async def test_a_parent_and_its_child_run_in_one_process() -> None:
    run = await run_job(Asker, agents=[Researcher], tools=[ResearchTools])
    assert run.status == "succeeded"
    assert run.result is not None
    assert run.result["output"] == {"text": "the researcher says researched: why is the sky blue"}
    [child] = run.children
    assert (child.job_id, child.status) == (child_job_id("job-1", 1), "succeeded")
    assert [e.type for e in run.events("child_ended")] == ["child_ended"]
    assert run.usage.tokens > child.usage.tokens > 0


async def test_a_fan_out_runs_every_child_and_joins_them() -> None:
    run = await run_job(Fanner, agents=[Researcher], tools=[ResearchTools])
    assert run.status == "succeeded" and len(run.children) == 5
    assert run.result is not None and run.result["output"] == {"text": "5 of 5 answered"}
    assert all(child.status == "succeeded" for child in run.children)


async def test_each_agent_may_have_its_own_scripted_model() -> None:
    """The researcher's model gives up: its child fails, and the parent with it."""
    scripted = {"researcher": ScriptedLLM(["give_up"])}
    run = await run_job(Asker, agents=[Researcher], tools=[ResearchTools], llm=scripted)
    assert (run.status, run.state) == ("failed", "gave_up")
    assert run.children[0].status == "failed"


async def test_a_graph_naming_an_agent_not_given_is_refused() -> None:
    with pytest.raises(TypeError, match="agent 'researcher'"):
        await run_job(Asker, tools=[ResearchTools])


async def test_a_job_waiting_for_a_signal_comes_back_and_goes_on_when_it_comes() -> None:
    run = await run_job(Waiter)
    assert (run.status, run.waiting_signal) == ("running", "customer_reply")
    with pytest.raises(JobStateError):
        await run.signal("other")
    await run.signal("customer_reply", {"text": "yes"})
    assert run.status == "succeeded"
    assert run.result is not None and run.result["output"] == {"text": "the customer said: yes"}


async def test_rig_trace_shows_each_child_job_s_life_in_its_parent() -> None:
    from actors.cli.trace import waterfall

    run = await run_job(Fanner, agents=[Researcher], tools=[ResearchTools])
    spans = [span for span in waterfall(run.journal).spans if span.kind == "child"]
    assert [span.what for span in spans] == [
        f"child {child.job_id} (researcher): succeeded" for child in run.children
    ]
    assert all(span.ms >= 0 and span.step == 1 for span in spans)
