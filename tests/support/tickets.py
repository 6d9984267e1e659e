r"""Agents whose edge arguments carry a regex `pattern`, for the model server's grammar:
`\d` (which llama-cpp-python's grammar cannot take) and `[0-9]` (which it can)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from actors import Agent
from protocols import Edge, Graph, State


class Ticket(BaseModel):
    ticket: str = Field(pattern=r"^C-\d+$")


class PlainTicket(BaseModel):
    ticket: str = Field(pattern=r"^C-[0-9]+$")


def _graph(args: type[BaseModel]) -> Graph:
    return Graph(
        initial="triage",
        states={
            "triage": State(
                safe_edge="drop",
                edges=(
                    Edge(name="open_ticket", to="done", args=args, description="File it."),
                    Edge(name="drop", to="dropped", description="Nothing to file."),
                ),
            ),
            "done": State(terminal="succeeded"),
            "dropped": State(terminal="failed"),
        },
    )


class TicketAgent(Agent):
    name = "tickets"
    graph = _graph(Ticket)
    example_input = {"text": "the printer is on fire"}


class PlainTicketAgent(Agent):
    name = "tickets"
    graph = _graph(PlainTicket)
    example_input = {"text": "the printer is on fire"}
