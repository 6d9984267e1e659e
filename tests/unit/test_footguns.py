"""Mistakes in an actor class are caught when the class loads (or by the type checker),
with an error that says what to write instead; a check or a tool that misbehaves at run
time gets the same treatment as everywhere else in Rig."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from actors import Agent, RuleLLM, ToolExecutor, Verifier, tool, verifier
from actors.testing import run_job
from examples.greeter import GreeterAgent, GreeterChecks, GreeterTools
from protocols import (
    Edge,
    Graph,
    InvalidNameError,
    RetryableError,
    SchemaError,
    State,
    VerifyRequest,
)

ROOT = Path(__file__).resolve().parents[2]


def test_a_misspelt_edge_keyword_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"too\n  Extra inputs are not permitted"):
        Edge(name="greet", too="done")  # type: ignore[call-arg]
    # ... and the type checker says so before anything runs, as for a dict as `args`.
    module = tmp_path / "typo.py"
    module.write_text(
        textwrap.dedent(
            """
            from protocols import Edge

            edge = Edge(name="greet", too="done")
            other = Edge(name="greet", to="done", args={"who": "string"})
            """
        )
    )
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent", str(module)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert checked.returncode == 1, checked.stdout
    assert 'Unexpected keyword argument "too" for "Edge"' in checked.stdout
    assert 'Argument "args" to "Edge" has incompatible type' in checked.stdout


def test_edge_args_must_be_a_model_class() -> None:
    @dataclass
    class WhoData:  # a dataclass, not a pydantic model
        who: str

    with pytest.raises(TypeError, match="args= takes a pydantic model class"):
        Edge(name="greet", to="done", args=WhoData)  # type: ignore[arg-type]

    class Who(BaseModel):
        who: str

    edge = Edge(name="greet", to="done", args=Who)
    assert edge.args_model is Who and edge.args is not None
    assert edge.args["properties"]["who"]["type"] == "string"


def test_a_tool_a_verifier_and_a_reconcile_must_be_async() -> None:
    with pytest.raises(TypeError, match=r"@tool .*greet must be `async def`"):

        class SyncTools(ToolExecutor):
            name = "sync-tools"

            @tool  # type: ignore[type-var]
            def greet(self, who: str) -> dict[str, str]:
                return {"text": who}

    with pytest.raises(TypeError, match=r"@verifier .*check must be `async def`"):

        class SyncChecks(Verifier):
            name = "sync-checks"

            @verifier  # type: ignore[type-var]
            def check(self, request: VerifyRequest) -> bool:
                return True

    with pytest.raises(TypeError, match="reconcile method 'find' must be `async def`"):

        class SyncReconcile(ToolExecutor):
            name = "sync-reconcile"

            @tool(reconcile="find")
            async def pay(self, account: str, amount: float) -> dict[str, Any]:
                return {}

            def find(self, account: str, amount: float) -> dict[str, Any] | None:
                return None


def test_a_reconcile_takes_the_tools_arguments() -> None:
    with pytest.raises(TypeError) as error:

        class WrongReconcile(ToolExecutor):
            name = "wrong-reconcile"

            @tool(reconcile="find")
            async def pay(self, account: str, amount: float) -> dict[str, Any]:
                return {}

            async def find(self, account: str) -> dict[str, Any] | None:
                return None

    assert str(error.value).endswith(
        "WrongReconcile: tool 'pay': its reconcile method 'find' takes (account), but is "
        "called with the tool's arguments (account, amount)"
    )


class NoExample(Agent):
    """An agent without an example input: allowed."""

    name = "no-example"
    graph = GreeterAgent.graph
    llm = GreeterAgent.llm


async def test_example_input_is_optional() -> None:
    assert NoExample.example_input is None and NoExample.info is not None
    run = await run_job(NoExample, {"who": "Ada"}, tools=[GreeterTools], verifiers=[GreeterChecks])
    assert run.status == "succeeded"
    with pytest.raises(TypeError, match="declares no example_input: give the job's input"):
        await run_job(NoExample, tools=[GreeterTools], verifiers=[GreeterChecks])
    with pytest.raises(TypeError, match="example_input must be a dict"):

        class BadExample(Agent):
            name = "bad-example"
            graph = GreeterAgent.graph
            llm = GreeterAgent.llm
            example_input = ["Ada"]  # type: ignore[assignment]


class BusyChecks(GreeterChecks):
    """`names_them`, whose service is down for its first two calls."""

    name = "busy-checks"
    calls = 0

    @verifier
    async def names_them(self, request: VerifyRequest) -> tuple[bool, str]:
        BusyChecks.calls += 1
        if BusyChecks.calls <= 2:
            raise RetryableError("the checking service is busy")
        return True, "the greeting names them"


async def test_a_verifiers_retryable_error_means_retry_not_fail() -> None:
    BusyChecks.calls = 0
    run = await run_job(GreeterAgent, {"who": "Ada"}, tools=[GreeterTools], verifiers=[BusyChecks])
    assert run.status == "succeeded" and BusyChecks.calls == 3
    [verdict] = run.events("verdict")
    assert verdict.data["passed"]


class NotJSON(ToolExecutor):
    """`compose_greeting` whose result holds NaN: not JSON, so never recorded or sent."""

    name = "not-json"

    @tool(side_effects=False)
    async def compose_greeting(self, who: str) -> dict[str, Any]:
        return {"text": f"Hello, {who}!", "score": float("nan")}


async def test_a_tool_result_that_is_not_finite_json_is_refused() -> None:
    run = await run_job(GreeterAgent, {"who": "Ada"}, tools=[NotJSON], verifiers=[GreeterChecks])
    [result] = run.events("tool_result")
    assert result.data["ok"] is False and result.data["error"]["code"] == "bad_result"
    assert "a result must be JSON: no NaN or Infinity" in result.data["error"]["message"]
    assert run.path == ["start", "gave_up"]  # the edge's on_fail


class Route(Agent):
    """A graph built with the typed edges, as a user writes it."""

    name = "route"
    graph = Graph(
        initial="start",
        states={
            "start": State(edges=(Edge(name="go", to="done"),), safe_edge="go"),
            "done": State(terminal="succeeded"),
        },
    )
    llm = RuleLLM(lambda prompt: "go")


async def test_a_plain_graph_runs() -> None:
    run = await run_job(Route, {})
    assert run.path == ["start", "done"] and run.status == "succeeded"


async def test_an_input_model_is_checked_at_class_load_and_at_submission() -> None:
    with pytest.raises(TypeError, match="input_model must be a pydantic model class"):

        class NotAModel(Agent):
            name = "not-a-model"
            graph = GreeterAgent.graph
            llm = GreeterAgent.llm
            input_model = dict  # type: ignore[assignment]

    with pytest.raises(TypeError, match=r"example_input does not fit its input_model: who"):

        class WrongExample(Agent):
            name = "wrong-example"
            graph = GreeterAgent.graph
            llm = GreeterAgent.llm
            input_model = GreeterAgent.input_model
            example_input = {"name": "Ada"}

    with pytest.raises(SchemaError) as refused:
        await run_job(
            GreeterAgent, {"name": "Ada"}, tools=[GreeterTools], verifiers=[GreeterChecks]
        )
    assert refused.value.message == (
        "the input does not fit agent 'greeter''s input schema: input must contain ['who'] "
        "properties"
    )


def test_an_agent_may_not_take_a_name_other_roles_keys_start_with() -> None:
    """`supervisor` and `ledger` begin other roles' keys in the shared presence bucket:
    an agent of either name would be allowed to write them, so the class does not load."""
    for reserved in ("supervisor", "ledger"):
        with pytest.raises(InvalidNameError, match=f"'{reserved}' is reserved"):
            type(
                "Impostor",
                (Agent,),
                {"name": reserved, "graph": GreeterAgent.graph, "__module__": __name__},
            )
