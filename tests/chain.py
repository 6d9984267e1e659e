"""A three-step agent for the LLM tests: its model is configured (RIG_LLM_CONFIG), and
every safe edge ends the job `failed`, so that a job always reaches a terminal status."""

from __future__ import annotations

from pydantic import BaseModel

from actors import Agent, RuleLLM
from protocols import Edge, Graph, State


class Tick(BaseModel):
    n: int


def _step(to: str) -> State:
    return State(
        edges=(
            Edge(name="next", to=to, tool="tick", args=Tick, description="Do the next tick."),
            Edge(name="give_up", to="gave_up", description="Stop here."),
        ),
        safe_edge="give_up",
    )


class Chain(Agent):
    """Three ticks, then done; or give up."""

    name = "chain"
    graph = Graph(
        initial="a",
        states={
            "a": _step("b"),
            "b": _step("c"),
            "c": State(
                edges=(Edge(name="finish", to="done"), Edge(name="give_up", to="gave_up")),
                safe_edge="give_up",
            ),
            "done": State(terminal="succeeded"),
            "gave_up": State(terminal="failed"),
        },
    )
    example_input = {"n": 1}
    max_reasks = 2
    llm = RuleLLM(lambda prompt: prompt.edges[0].name)  # used only without a configured model


CHAIN = ("actors:Supervisor", "tests.chain:Chain", "tests.looper:LooperTools")


class ImpatientChain(Chain):
    """The same chain with an LLM timeout shorter than its model's retry policy."""

    name = "impatient"
    llm_timeout = 1.0


IMPATIENT = ("actors:Supervisor", "tests.chain:ImpatientChain", "tests.looper:LooperTools")
