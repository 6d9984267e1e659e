"""Three versions of one agent, `deploy`, for the graph-version tests.

v1: start --go [gate]--> review --approve--> done. v2 renames `start` to `begin` and
`review` to `check`, and says so in `renamed`. v3 drops `review` for `audit` without a
word: a job of v1 in `review` cannot move to it.
"""

from __future__ import annotations

from typing import Any

from actors import Agent, RuleLLM, ToolExecutor, tool
from protocols import Edge, Graph, State


def _graph(first: str, second: str) -> Graph:
    return Graph(
        initial=first,
        states={
            first: State(
                edges=(Edge(name="go", to=second, tool="gate"), Edge(name="stop", to="failed")),
                safe_edge="stop",
            ),
            second: State(
                edges=(Edge(name="approve", to="done"), Edge(name="reject", to="failed")),
                safe_edge="reject",
            ),
            "done": State(terminal="succeeded"),
            "failed": State(terminal="failed"),
        },
    )


def _route(prompt: Any) -> tuple[str, dict[str, Any]]:
    return ("go" if prompt.state in ("start", "begin") else "approve"), {}


class DeployV1(Agent):
    name = "deploy"
    graph = _graph("start", "review")
    example_input: dict[str, Any] = {}
    llm = RuleLLM(_route)


class DeployV2(DeployV1):
    graph = _graph("begin", "check")
    renamed = {"start": "begin", "review": "check"}


class DeployV3(DeployV1):
    graph = _graph("start", "audit")


class Gate(ToolExecutor):
    name = "gate"

    @tool(side_effects=False)
    async def gate(self) -> dict[str, Any]:
        return {"open": True}
