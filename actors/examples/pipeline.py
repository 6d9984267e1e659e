"""A five-step pipeline: decide -> tool -> verify, five times. The benchmark's graph.

    s1 --next(work, check)--> s2 --> ... --> s5 --next(work, check)--> done
    every state: --stop--> stopped (the safe edge)

The model is a zero-latency `RuleLLM` unless `RIG_PIPELINE_LATENCY="P50,P99"` (seconds)
asks for a lognormal latency with that median and 99th percentile, which is how
`scripts/bench latency` imitates a slow, jittery model. `PipelineFan` starts one
pipeline child job per item (`scripts/bench tree`: what a child costs against a lone job).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
from typing import Any

from pydantic import BaseModel

from actors import (
    LLM,
    Agent,
    LLMReply,
    RoutePrompt,
    RuleLLM,
    ToolExecutor,
    Verifier,
    tool,
    verifier,
)
from protocols import Edge, Graph, State, VerifyRequest

STEPS = 5


def _graph() -> Graph:
    states: dict[str, State] = {}
    for i in range(1, STEPS + 1):
        target = f"s{i + 1}" if i < STEPS else "done"
        states[f"s{i}"] = State(
            description=f"Step {i} of {STEPS}.",
            edges=(
                Edge(
                    name="next",
                    to=target,
                    tool="work",
                    verifier="check",
                    description="Do this step's work.",
                ),
                Edge(name="stop", to="stopped", description="Give up."),
            ),
            safe_edge="stop",
        )
    states["done"] = State(terminal="succeeded")
    states["stopped"] = State(terminal="failed")
    return Graph(initial="s1", states=states)


def route(prompt: RoutePrompt) -> tuple[str, dict[str, Any]]:
    return "next", {"state": prompt.state, "n": prompt.context.input.get("n", 0)}


class LognormalLatency:
    """Wraps an LLM and waits a lognormal time first, with the given median and p99."""

    def __init__(self, inner: LLM, *, p50: float, p99: float, seed: int | None = None) -> None:
        self._inner = inner
        self._mu = math.log(p50)
        self._sigma = math.log(p99 / p50) / 2.3263  # z of the 99th percentile
        self._random = random.Random(seed)

    async def complete(self, prompt: RoutePrompt) -> LLMReply:
        await asyncio.sleep(self._random.lognormvariate(self._mu, self._sigma))
        return await self._inner.complete(prompt)


class PipelineAgent(Agent):
    """Five steps, each a decision, a side-effecting tool call and a verification."""

    name = "pipeline"
    graph = _graph()
    example_input = {"n": 1}
    max_steps = STEPS + 1
    llm = RuleLLM(route)

    def create_llm(self) -> LLM:
        latency = os.environ.get("RIG_PIPELINE_LATENCY")
        if not latency:
            return self.llm
        p50, p99 = (float(x) for x in latency.split(","))
        return LognormalLatency(self.llm, p50=p50, p99=p99)


class PipelineTools(ToolExecutor):
    name = "pipeline-tools"

    @tool(side_effects=True)
    async def work(self, state: str, n: int) -> dict[str, Any]:
        return {"state": state, "n": n, "done": True}


class PipelineChecks(Verifier):
    name = "pipeline-checks"

    @verifier
    async def check(self, request: VerifyRequest) -> tuple[bool, str]:
        return bool(request.result and request.result.get("done")), "work done"


# The most children a fan's job may start: its step budget is one step and theirs.
MAX_CHILDREN = 64


class Item(BaseModel):
    n: int


class Items(BaseModel):
    items: list[Item]


def fan_route(prompt: RoutePrompt) -> tuple[str, dict[str, Any]]:
    count = int(prompt.context.input.get("children", 1))
    return "each", {"items": [{"n": i} for i in range(count)]}


class PipelineFan(Agent):
    """One step: a pipeline child job per item of its input's `children` count, all at
    once, joined when every one ended."""

    name = "pipeline-fan"
    graph = Graph(
        initial="fan",
        states={
            "fan": State(
                edges=(
                    Edge(name="each", to="done", agent="pipeline", map="items", args=Items),
                    Edge(name="stop", to="stopped"),
                ),
                safe_edge="stop",
            ),
            "done": State(terminal="succeeded"),
            "stopped": State(terminal="failed"),
        },
    )
    example_input = {"children": 3}
    max_steps = 1 + MAX_CHILDREN * (STEPS + 1)
    llm = RuleLLM(fan_route)
