"""An agent whose jobs wait for a person twice in a row: a first review, then a second
sign-off, each a state for a person; what the model decides never matters."""

from __future__ import annotations

from pydantic import BaseModel

from actors import Agent, RuleLLM
from protocols import Edge, Graph, State


class Adjustment(BaseModel):
    """What a person gives when approving with a changed amount."""

    amount: float


class TwiceAgent(Agent):
    name = "twice"
    graph = Graph(
        initial="review",
        states={
            "review": State(
                human=True,
                edges=(
                    Edge(name="approve", to="sign_off", description="The first review."),
                    Edge(
                        name="adjust",
                        to="sign_off",
                        args=Adjustment,
                        description="Approved with another amount.",
                    ),
                    Edge(name="reject", to="rejected", description="Refused at review."),
                ),
            ),
            "sign_off": State(
                human=True,
                edges=(
                    Edge(name="approve", to="done", description="The second sign-off."),
                    Edge(name="reject", to="rejected", description="Refused at sign-off."),
                ),
            ),
            "done": State(terminal="succeeded"),
            "rejected": State(terminal="failed"),
        },
    )
    example_input: dict[str, object] = {}
    llm = RuleLLM(lambda prompt: "reject")
