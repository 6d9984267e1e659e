"""A Rig agent that delegates to a remote A2A agent (another deployment's, reached at
`$RIG_TEST_REMOTE` with the key `$RIG_TEST_REMOTE_KEY`), for
tests/integration/test_a2a_delegation.py.

The delegator hands its input (a refund request) to the remote `gated` agent (a refund
agent whose model waits at a gate the test opens: tests/support/gated.py) and answers
with what the remote task returned; a remote task that asks for input takes the edge's
failure path, to a person.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from actors import Agent, RoutePrompt, RuleLLM
from actors.tools.a2a import A2aAgents, remote
from protocols import Edge, Graph, State


class Order(BaseModel):
    order_id: str
    amount: float
    reason: str


class Partners(A2aAgents):
    name = "partners"
    agents = {
        "partner_refund": remote(
            "${RIG_TEST_REMOTE}/a2a/gated", key="$RIG_TEST_REMOTE_KEY", timeout=60.0
        ),
    }


def delegate(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    return "delegate", dict(prompt.context.input)


class Delegator(Agent):
    name = "delegator"
    graph = Graph(
        initial="start",
        states={
            "start": State(
                edges=(
                    Edge(
                        name="delegate",
                        to="done",
                        tool="partner_refund",
                        args=Order,
                        on_fail="person",
                    ),
                    Edge(name="give_up", to="failed"),
                ),
                safe_edge="give_up",
            ),
            "person": State(human=True, edges=(Edge(name="close", to="failed"),)),
            "done": State(terminal="succeeded"),
            "failed": State(terminal="failed"),
        },
    )
    example_input = {"order_id": "A-1001", "amount": 25.0, "reason": "arrived damaged"}
    llm = RuleLLM(delegate)
