"""Actors for the tests of stopping tool calls (tests/integration/test_cancel.py).

The agent `holder` takes one edge: `hold` (a tool with side effects) or, with
`{"pure": true}`, `look` (one without); either holds for the input's `seconds`. Each
call leaves a file in `$RIG_HOME/holds` when it starts, when it is cancelled (its
`asyncio.CancelledError`) and when it finishes, so a test sees what the tool saw.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from actors import Agent, RigConfig, RoutePrompt, RuleLLM, ToolExecutor, tool, tool_context
from protocols import Edge, Graph, State


def _route(prompt: RoutePrompt) -> tuple[str, dict[str, Any]]:
    job = prompt.context.input
    return ("look" if job.get("pure") else "hold"), {"seconds": job.get("seconds", 3600)}


class Holder(Agent):
    name = "holder"
    graph = Graph(
        initial="start",
        states={
            "start": State(
                edges=(
                    Edge(name="hold", to="done", tool="hold"),
                    Edge(name="look", to="done", tool="look"),
                    Edge(name="give_up", to="failed"),
                ),
                safe_edge="give_up",
            ),
            "done": State(terminal="succeeded"),
            "failed": State(terminal="failed"),
        },
    )
    example_input = {"seconds": 0}
    llm = RuleLLM(_route)


def holds(home: Path, job_id: str) -> set[str]:
    """What the tool saw of the job's call: `started`, `cancelled`, `finished`."""
    folder = home / "holds"
    return {p.suffix[1:] for p in folder.glob(f"{job_id}.*")} if folder.exists() else set()


async def _hold(seconds: float) -> dict[str, Any]:
    folder = RigConfig.from_env().home / "holds"
    job_id = tool_context().job_id

    async def mark(what: str) -> None:
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread((folder / f"{job_id}.{what}").touch)

    await mark("started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        await mark("cancelled")
        raise
    await mark("finished")
    return {"held": seconds}


class HoldTools(ToolExecutor):
    name = "hold-tools"

    @tool(timeout=600)
    async def hold(self, seconds: float) -> dict[str, Any]:
        return await _hold(seconds)

    @tool(side_effects=False, timeout=600)
    async def look(self, seconds: float) -> dict[str, Any]:
        return await _hold(seconds)
