"""Agents that wait for a signal, for the signal tests.

`Waiter` asks a question (the model routes it to `waiting`), then waits up to an hour
for the signal `customer_reply`, whose data (a `Reply`) is the arguments of its
`got_reply` edge; it answers with the reply's text. `Hasty` is the same agent waiting
one second, whose timeout edge closes the job; `Patient` waits eight.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from actors import Agent, RoutePrompt, RuleLLM
from protocols import Edge, Graph, State


class Reply(BaseModel):
    text: str


class Answer(BaseModel):
    text: str


def route(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    if prompt.state == "ask":
        return "wait"
    reply = prompt.context.results.get("customer_reply") or {}
    return "answer", {"text": f"the customer said: {reply.get('text')}"}


def waiting(timeout_s: float) -> Graph:
    return Graph(
        initial="ask",
        states={
            "ask": State(
                edges=(Edge(name="wait", to="waiting"), Edge(name="give_up", to="closed")),
                safe_edge="give_up",
            ),
            "waiting": State(
                wait_for="customer_reply",
                payload=Reply,
                timeout_s=timeout_s,
                on_signal="got_reply",
                on_timeout="no_reply",
                edges=(Edge(name="got_reply", to="answer"), Edge(name="no_reply", to="closed")),
            ),
            "answer": State(
                edges=(
                    Edge(name="answer", to="done", output=Answer),
                    Edge(name="give_up", to="closed"),
                ),
                safe_edge="give_up",
            ),
            "done": State(terminal="succeeded"),
            "closed": State(terminal="failed"),
        },
    )


class Waiter(Agent):
    name = "waiter"
    graph = waiting(3600.0)
    example_input = {"ticket": "T-1"}
    llm = RuleLLM(route)


class Hasty(Agent):
    name = "hasty"
    graph = waiting(1.0)
    example_input = {"ticket": "T-2"}
    llm = RuleLLM(route)


class Patient(Agent):
    name = "patient"
    graph = waiting(8.0)
    example_input = {"ticket": "T-3"}
    llm = RuleLLM(route)


WAITERS = ("actors:Supervisor", "tests.support.waiter:Waiter", "tests.support.waiter:Hasty")
