"""The graphs and executors of `scripts/bench mcp`: the same five read-only steps, once
with a native tool and once with an MCP server's (the reference server's `get-sum`,
@modelcontextprotocol/server-everything from npm, installed into .venv/npm)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from actors import Agent, RoutePrompt, RuleLLM, ToolExecutor, tool
from actors.tools.mcp import McpTools, stdio
from protocols import Edge, Graph, State

STEPS = 5
SERVER = Path(__file__).resolve().parents[1] / ".venv" / "npm" / "node_modules" / ".bin"


class Sum(BaseModel):
    a: float
    b: float


def _graph(tool_name: str) -> Graph:
    states = {
        f"s{i}": State(
            edges=(
                Edge(name="add", to=f"s{i + 1}" if i < STEPS else "done", tool=tool_name, args=Sum),
                Edge(name="stop", to="stopped"),
            ),
            safe_edge="stop",
        )
        for i in range(1, STEPS + 1)
    }
    return Graph(
        initial="s1",
        states={
            **states,
            "done": State(terminal="succeeded"),
            "stopped": State(terminal="failed"),
        },
    )


def route(prompt: RoutePrompt) -> tuple[str, dict[str, Any]]:
    return "add", {"a": float(prompt.context.input.get("n", 0)), "b": 1.0}


class NativeSum(Agent):
    name = "sum-native"
    graph = _graph("add")
    max_steps = STEPS + 1
    llm = RuleLLM(route)


class McpSum(Agent):
    name = "sum-mcp"
    graph = _graph("get-sum")
    max_steps = STEPS + 1
    llm = RuleLLM(route)


class SumTools(ToolExecutor):
    name = "sum-tools"

    @tool(side_effects=False)
    async def add(self, a: float, b: float) -> dict[str, Any]:
        return {"text": f"The sum of {a} and {b} is {a + b}."}


class EverythingSum(McpTools):
    name = "everything-sum"
    server = stdio(str(SERVER / "mcp-server-everything"))
    allow = ("get-sum",)
