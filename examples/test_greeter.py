"""The greeter's tests: all but the last run a whole job in this process
(`actors.testing.run_job`), with no NATS server, in milliseconds; the last runs one as
processes on a real nats-server (the `rig` fixture of Rig's pytest plugin)."""

from __future__ import annotations

import pytest

from actors.testing import Deployment, ScriptedLLM, Text, assert_path, run_job
from examples.greeter import GreeterAgent, GreeterChecks, GreeterTools

pytestmark = pytest.mark.asyncio  # with pytest-asyncio's default (strict) mode

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


async def test_it_greets_as_processes_on_a_real_server(rig: Deployment) -> None:
    await rig.up(GreeterAgent, GreeterTools, GreeterChecks)  # and a supervisor
    job = await rig.client.submit("greeter", {"who": "Ada"})
    assert (await rig.client.wait(job.job_id, timeout=60)).status == "succeeded"
    assert_path(await rig.client.journal(job.job_id), ["start", "greeted"])
