"""Actors for the bounded-snapshot tests: a tool whose result is larger than a message.

`fetch(size, pad)` returns `{"blob": "y" * size}`; the `read` state's rule routes
`done` only if the blob it sees in the job's context is whole. The input's `pad`
makes the LLM's arguments that many bytes long.
"""

from __future__ import annotations

from typing import Any

from actors import Agent, RuleLLM, ToolExecutor, Verifier, tool, verifier
from protocols import Edge, Graph, State, VerifyRequest


def _route(prompt: Any) -> tuple[str, dict[str, Any]]:
    job = prompt.context.input
    if prompt.state == "start":
        return "fetch", {"size": job["size"], "pad": "p" * job.get("pad", 0)}
    blob = prompt.context.results["fetch"]["blob"]
    return ("done" if len(blob) == job["size"] else "wrong"), {}


class Hoarder(Agent):
    name = "hoarder"
    graph = Graph(
        initial="start",
        states={
            "start": State(
                edges=(
                    Edge(name="fetch", to="read", tool="fetch", verifier="whole"),
                    Edge(name="give_up", to="failed"),
                ),
                safe_edge="give_up",
            ),
            "read": State(
                edges=(Edge(name="done", to="done"), Edge(name="wrong", to="failed")),
                safe_edge="wrong",
            ),
            "done": State(terminal="succeeded"),
            "failed": State(terminal="failed"),
        },
    )
    example_input = {"size": 10}
    llm = RuleLLM(_route)


class HoardTools(ToolExecutor):
    name = "hoard-tools"

    @tool(side_effects=False)
    async def fetch(self, size: int, pad: str = "") -> dict[str, Any]:
        return {"blob": "y" * size}


class HoardChecks(Verifier):
    name = "hoard-checks"

    @verifier
    async def whole(self, request: VerifyRequest) -> tuple[bool, str]:
        size = len(request.result["blob"])
        return size == request.args["size"], f"{size} bytes"
