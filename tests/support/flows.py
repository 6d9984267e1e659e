"""An agent whose jobs run one at a time per customer (`Agent.flow`), for the flow tests:
a job `work`s for its input's `ms` (a tool), or, with `hold`, waits for the signal `go`."""

from __future__ import annotations

import asyncio
from typing import Any

from actors import Agent, RoutePrompt, RuleLLM, ToolExecutor, tool
from protocols import Edge, Flow, Graph, State

DEBOUNCE_S = 2.0  # the `debounced` agent's window


def serve(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    said = prompt.context.input
    if prompt.state == "start":
        return "hold" if said.get("hold") else ("work", {"ms": said.get("ms", 0)})
    return "done"


class Serial(Agent):
    name = "serial"
    flow = Flow(key="customer", limit=1)
    graph = Graph(
        initial="start",
        states={
            "start": State(
                edges=(
                    Edge(name="work", to="worked", tool="work"),
                    Edge(name="hold", to="held"),
                    Edge(name="give_up", to="failed"),
                ),
                safe_edge="give_up",
            ),
            "held": State(wait_for="go", on_signal="done", edges=(Edge(name="done", to="done"),)),
            "worked": State(edges=(Edge(name="done", to="done"),), safe_edge="done"),
            "done": State(terminal="succeeded"),
            "failed": State(terminal="failed"),
        },
    )
    example_input = {"customer": "c-1", "ms": 1}
    llm = RuleLLM(serve)


class SerialTools(ToolExecutor):
    name = "serial-tools"

    @tool(side_effects=False, timeout=30.0)
    async def work(self, ms: int) -> dict[str, Any]:
        await asyncio.sleep(ms / 1000)  # the job's work, as long as it asks
        return {"worked_ms": ms}


class Metered(Serial):
    """Two starts a second per customer at most, evenly spaced, however many could run."""

    name = "metered"
    flow = Flow(key="customer", limit=10, rate_per_min=120)


class Debounced(Serial):
    """Of the submits for one customer less than two seconds apart, only the last runs."""

    name = "debounced"
    flow = Flow(key="customer", limit=1, debounce_s=DEBOUNCE_S)
