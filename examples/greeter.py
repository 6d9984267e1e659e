"""A user's own agent, tool executor and verifier, written outside the `actors` package.

Run it beside a supervisor, from the repository root:

    rig actor run actors:Supervisor
    rig actor run examples.greeter:GreeterAgent
    rig actor run examples.greeter:GreeterTools
    rig actor run examples.greeter:GreeterChecks
    rig submit greeter --input '{"who": "Ada"}' --wait
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from actors import Agent, RoutePrompt, RuleLLM, ToolExecutor, Verifier, tool, verifier
from protocols import Edge, Graph, State, VerifyRequest


class Greeting(BaseModel):
    """What a job's input must be: checked at submission (`input_model` below)."""

    who: str


def route(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    who = prompt.context.input.get("who")
    return ("greet", {"who": who}) if isinstance(who, str) and who else "give_up"


class GreeterAgent(Agent):
    """Greets someone by name, and checks the greeting names them."""

    name = "greeter"
    graph = Graph(
        initial="start",
        states={
            "start": State(
                edges=(
                    Edge(
                        name="greet",
                        to="greeted",
                        tool="compose_greeting",
                        verifier="names_them",
                        on_fail="gave_up",
                        description="Write a greeting for the person named in the input.",
                    ),
                    Edge(name="give_up", to="gave_up", description="No name was given."),
                ),
                safe_edge="give_up",  # where invalid LLM output goes
            ),
            "greeted": State(terminal="succeeded"),
            "gave_up": State(terminal="failed"),
        },
    )
    input_model = Greeting  # a submission whose input does not fit is refused
    example_input = {"who": "Ada"}  # an input that runs it to `succeeded`
    llm = RuleLLM(route)  # a stand-in; a model from the LLM config file replaces it


class GreeterTools(ToolExecutor):
    name = "greeter-tools"

    @tool(side_effects=False)  # default True: never run again blindly
    async def compose_greeting(self, who: str) -> dict[str, str]:
        return {"text": f"Hello, {who}!"}


class GreeterChecks(Verifier):
    name = "greeter-checks"

    @verifier
    async def names_them(self, request: VerifyRequest) -> tuple[bool, str]:
        named = request.args["who"] in request.result["text"]
        return named, "the greeting names them" if named else "the greeting lacks the name"
