"""An agent that remembers (`Agent.memory`), for the memory tests: a job whose input
says `remember` writes that key (through the memory tools), then answers with what its
context's memory held; one without answers at once."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from actors import Agent, RoutePrompt, RuleLLM
from protocols import Edge, Graph, Memory, State


class Known(BaseModel):
    known: dict[str, Any]  # what its memory held, by key


def keep(prompt: RoutePrompt) -> tuple[str, dict[str, Any]]:
    said = prompt.context.input
    known = {entry["key"]: entry["value"] for entry in prompt.context.memory}
    if prompt.state == "start" and "remember" in said:
        args = {"key": said["remember"], "value": said.get("value")}
        args |= {name: said[name] for name in ("scope", "ttl_s") if name in said}
        return "note", args
    return "answer", {"known": known}


class Keeper(Agent):
    name = "keeper"
    memory = Memory(scopes=("thread", "user", "global"))
    graph = Graph(
        initial="start",
        states={
            "start": State(
                edges=(
                    Edge(name="note", to="noted", tool="remember"),
                    Edge(name="answer", to="done", output=Known),
                    Edge(name="give_up", to="failed"),
                ),
                safe_edge="give_up",
            ),
            "noted": State(
                edges=(
                    Edge(name="answer", to="done", output=Known),
                    Edge(name="give_up", to="failed"),
                ),
                safe_edge="give_up",
            ),
            "done": State(terminal="succeeded"),
            "failed": State(terminal="failed"),
        },
    )
    example_input = {"remember": "name", "value": "Ada"}
    llm = RuleLLM(keep)
