"""A three-step agent for the LLM tests: its model is configured (RIG_LLM_CONFIG), and
every safe edge ends the job `failed`, so that a job always reaches a terminal status."""

from __future__ import annotations

import os

from pydantic import BaseModel

from actors import LLM, Agent, RuleLLM
from actors.models.breaker import BreakerPolicy
from actors.models.dialects import OpenAICompatible
from actors.models.router import RetryPolicy
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


CHAIN = ("actors:Supervisor", "tests.support.chain:Chain", "tests.support.looper:LooperTools")


class ImpatientChain(Chain):
    """The same chain with an LLM timeout shorter than its model's retry policy."""

    name = "impatient"
    llm_timeout = 1.0


IMPATIENT = (
    "actors:Supervisor",
    "tests.support.chain:ImpatientChain",
    "tests.support.looper:LooperTools",
)


class CodedChain(Chain):
    """The chain with its model built in code (`create_llm`), not by a config file: the
    server at RIG_TEST_LLM_URL, through `router`, which keeps breakers, the cache and
    streaming."""

    name = "coded-chain"

    def create_llm(self) -> LLM:
        server = OpenAICompatible(
            name="coded", base_url=os.environ["RIG_TEST_LLM_URL"], model="chaos-1"
        )
        policy = RetryPolicy(timeout=5.0, max_attempts=2, backoff=0.01, max_backoff=0.2)
        breaker = BreakerPolicy(min_calls=4, window=4, cooldown=60.0)
        return self.router([server], policy=policy, breaker=breaker, cache_ttl=600.0, stream=True)
