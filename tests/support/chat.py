"""Agents that talk in turns of a thread (`rig submit --thread`), for the thread tests:
each turn answers what it heard, which earlier turns its context carried, and what the
summary of older ones covers; a turn whose input says `ask` waits for a person first.
`Chatter` drops its oldest turns; `Compactor` summarises them (`Graph.compact`)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from actors import Agent, RoutePrompt, RuleLLM
from protocols import Edge, Graph, State


class Said(BaseModel):
    text: str
    seen: list[str]
    summary: list[str] = []  # the turns the summary in its context covers
    context_chars: int = 0  # how much of the thread its context carried


class Summary(BaseModel):
    covers: list[str]  # what each turn it stands for heard, oldest first


def _covered(thread: list[dict[str, Any]]) -> list[str]:
    """What the turns in a context heard: a summary's, then each turn's own."""
    heard: list[str] = []
    for entry in thread:
        if "summary" in entry:
            heard += entry["summary"]["covers"]
        else:
            heard.append(str(entry["input"].get("text")))
    return heard


def chat(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    thread = prompt.context.thread
    if prompt.state == "summarise":  # fold the summary so far and the older turns
        return "summarised", {"covers": _covered(thread)}
    heard = str(prompt.context.input.get("text", ""))
    answered = any(d.get("by") == "human" for d in prompt.context.decisions)
    if prompt.context.input.get("ask") and not answered:
        return "ask"  # once: then a person has said go on
    seen = [str(turn["input"].get("text")) for turn in thread if "summary" not in turn]
    summary = [text for entry in thread if "summary" in entry for text in _covered([entry])]
    chars = len(json.dumps(thread))
    return "answer", {
        "text": f"heard {heard}",
        "seen": seen,
        "summary": summary,
        "context_chars": chars,
    }


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


class Compactor(Chatter):
    """A chatter whose older turns are summarised, not dropped."""

    name = "compactor"
    graph = Graph(
        initial="start",
        compact="summarise",
        states={
            **Chatter.graph.states,
            "summarise": State(
                description="fold the summary so far and the older turns into one summary",
                edges=(
                    Edge(name="summarised", to="start", args=Summary),
                    Edge(name="skip", to="start"),
                ),
                safe_edge="skip",
            ),
        },
    )
