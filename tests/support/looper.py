"""A runaway agent for the supervision tests: it loops until a budget stops it.

What the LLM stand-in answers is steered by the job's input, so one agent serves every
test: `edge` (default "again") is the edge it names until the job has been through the
human state, `then` (default "finish") the edge after that; `delay` seconds of latency
per call. Every call spends exactly 100 input and 10 output tokens and costs 0.25, and
says so in advance (`estimate`), so budgets can be checked to the token.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from actors import Agent, ToolExecutor, tool
from actors.models.llm import LLMReply, RoutePrompt
from protocols import Edge, Graph, State, Usage

CALL = Usage(input_tokens=100, output_tokens=10, cost=0.25)


class LoopLLM:
    def estimate(self, prompt: RoutePrompt) -> Usage:
        return CALL

    async def complete(self, prompt: RoutePrompt) -> LLMReply:
        job = prompt.context.input
        if job.get("delay"):
            await asyncio.sleep(float(job["delay"]))
        edge = job.get("then", "finish") if "human" in prompt.context.path else job.get("edge")
        edge = edge or "again"
        args = {"n": len(prompt.context.path)} if edge == "again" else {}
        return LLMReply(text=json.dumps({"edge": edge, "args": args}), usage=CALL)


class Looper(Agent):
    """Ticks forever unless told otherwise: a runaway for budgets to stop."""

    name = "looper"
    graph = Graph(
        initial="work",
        states={
            "work": State(
                edges=(
                    Edge(name="again", to="work", tool="tick"),
                    Edge(name="finish", to="done"),
                    Edge(name="escalate", to="human"),
                ),
                safe_edge="escalate",
            ),
            "human": State(
                human=True,
                edges=(Edge(name="finish", to="done"), Edge(name="retry", to="work")),
            ),
            "done": State(terminal="succeeded"),
        },
    )
    example_input: dict[str, Any] = {"edge": "finish"}
    max_steps = 1000
    llm = LoopLLM()


class CarefulLooper(Looper):
    """The same runaway, but a spent budget hands the job to a person."""

    name = "careful-looper"
    on_exhausted = "human"


class LooperTools(ToolExecutor):
    name = "looper-tools"

    @tool(side_effects=False, timeout=5.0)
    async def tick(self, n: int) -> dict[str, int]:
        return {"n": n}


LOOPER = ("actors:Supervisor", "tests.support.looper:Looper", "tests.support.looper:LooperTools")
