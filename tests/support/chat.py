"""An agent that talks in turns of a thread (`rig submit --thread`), for
tests/integration/test_threads.py: each turn answers what it heard and which earlier
turns its context carried; a turn whose input says `ask` waits for a person first."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from actors import Agent, RoutePrompt, RuleLLM
from protocols import Edge, Graph, State


class Said(BaseModel):
    text: str
    seen: list[str]


def chat(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    heard = str(prompt.context.input.get("text", ""))
    answered = any(d.get("by") == "human" for d in prompt.context.decisions)
    if prompt.context.input.get("ask") and not answered:
        return "ask"  # once: then a person has said go on
    seen = [str(turn["input"].get("text")) for turn in prompt.context.thread]
    return "answer", {"text": f"heard {heard}", "seen": seen}


class Chatter(Agent):
    name = "chatter"
    thread_tokens = 150  # about two ended turns
    graph = Graph(
        initial="start",
        states={
            "start": State(
                edges=(
                    Edge(name="answer", to="done", output=Said),
                    Edge(name="ask", to="person"),
                    Edge(name="give_up", to="failed"),
                ),
                safe_edge="give_up",
            ),
            "person": State(human=True, edges=(Edge(name="go_on", to="start"),)),
            "done": State(terminal="succeeded"),
            "failed": State(terminal="failed"),
        },
    )
    example_input = {"text": "hello"}
    llm = RuleLLM(chat)
