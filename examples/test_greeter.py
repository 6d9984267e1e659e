"""The greeter's tests: each runs a whole job in this process (`actors.testing.run_job`),
with no NATS server, in milliseconds."""

from __future__ import annotations

from actors.testing import ScriptedLLM, Text, assert_path, run_job
from examples.greeter import GreeterAgent, GreeterChecks, GreeterTools

ACTORS = {"tools": [GreeterTools], "verifiers": [GreeterChecks]}


async def test_it_greets_by_name() -> None:
    run = await run_job(GreeterAgent, {"who": "Ada"}, **ACTORS)
    assert_path(run, ["start", "greeted"])
    assert run.status == "succeeded"
    assert run.result is not None
    assert run.result["results"]["compose_greeting"] == {"text": "Hello, Ada!"}


async def test_without_a_name_it_gives_up() -> None:
    run = await run_job(GreeterAgent, {"who": ""}, **ACTORS)
    assert_path(run, ["start", "gave_up"])
    assert run.status == "failed"


async def test_a_model_that_answers_badly_twice_takes_the_safe_edge() -> None:
    model = ScriptedLLM([Text("Hello there!"), "wave"])  # not JSON; no such edge
    run = await run_job(GreeterAgent, {"who": "Ada"}, llm=model, **ACTORS)
    assert_path(run, ["start", "gave_up"])  # `give_up`, the state's safe edge
    [decision] = run.events("decision")
    assert decision.data["fallback"] and decision.data["reasks"] == 1
    assert "not JSON" in model.prompts[1].feedback[0]  # the re-ask said what was wrong
    assert "'wave' is not one of greet, give_up" in decision.data["reason"]
