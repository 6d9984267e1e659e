"""A support conversation: the refund example's orders, talked about over many turns.

Each message of a customer is a turn of a thread (`rig submit --thread`): the first names
the order, the later ones ("what is the status?", "I dispute this") do not, and the agent
finds it in the thread's earlier turns, which its context carries. When the thread
outgrows the agent's `thread_tokens`, a turn first folds the older turns into a summary
(the `summarise` state, `Graph.compact`), which keeps the orders talked about.

    read --lookup--> answer --reply--> done
      |   (tool lookup_order)
      '--dispute / escalate--> person --close--> closed
    summarise --summarised / skip--> read        (a turn starts here to compact)

`SupportAgent` routes with `RuleLLM` (offline: the guide, the tests); `SupportLLMAgent`
is the same agent for a configured model (tests/integration/test_real_model.py runs it
on the local one). The tools are the refund example's (`RefundTools`).

    rig up --config support.toml   # Supervisor, SupportAgent, the refund's RefundTools
    rig submit support --thread cust-42 --wait --input '{"text": "...", "order_id": "A-1001"}'
    rig submit support --thread cust-42 --wait --input '{"text": "What is its status?"}'
    rig thread show cust-42

docs/guide/conversations.md walks a conversation to a twentieth, compacted turn.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

from actors import Agent, RoutePrompt, RuleLLM
from actors.examples.refund import ORDER_ID, LookupArgs
from protocols import Edge, Graph, State


class Reply(BaseModel):
    """What the agent tells the customer about their order."""

    order_id: str = Field(pattern=ORDER_ID)
    status: str = Field(pattern=r"^[a-z_]{1,20}$")  # as the lookup says it: `delivered`


class Dispute(BaseModel):
    """The order a customer disputes an answer about."""

    order_id: str = Field(pattern=ORDER_ID)


class Summary(BaseModel):
    """What the older turns established: the orders talked about, and what was said."""

    orders: list[str] = Field(max_length=20)
    notes: str = Field(max_length=400)


_ORDER = re.compile(r"\b[A-Z]-[0-9]{1,9}\b")
_DISPUTE = ("dispute", "not happy", "unacceptable", "complain")


def orders_in(thread: list[dict[str, Any]]) -> list[str]:
    """The orders a context's thread talked about, oldest first (a summary's first)."""
    found: list[str] = []
    for entry in thread:
        if "summary" in entry:
            found += [str(o) for o in entry["summary"].get("orders", [])]
        else:
            found += _ORDER.findall(str(entry.get("input", "")) + str(entry.get("output", "")))
    return list(dict.fromkeys(found))


def route(prompt: RoutePrompt) -> str | tuple[str, dict[str, Any]]:
    """What a careful support agent would do; stands in for the LLM."""
    context = prompt.context
    said = context.input
    text = str(said.get("text", ""))
    if prompt.state == "summarise":
        said_before = [str(e["summary"]["notes"]) for e in context.thread if "summary" in e]
        said_before += [str(e["input"].get("text")) for e in context.thread if "input" in e]
        notes = "; ".join(said_before)[-400:]
        return "summarised", {"orders": orders_in(context.thread), "notes": notes}
    order = said.get("order_id") or next(iter(_ORDER.findall(text)), None)
    if order is None and (earlier := orders_in(context.thread)):
        order = earlier[-1]  # the conversation's latest order: what "it" means
    if prompt.state == "read":
        if order is None:
            return "escalate"
        if any(word in text.lower() for word in _DISPUTE):
            return "dispute", {"order_id": order}
        return "lookup", {"order_id": order}
    if prompt.state == "answer":
        found = context.results.get("lookup_order", {})
        if not found.get("found"):
            return "escalate"
        return "reply", {"order_id": found["order_id"], "status": found["status"]}
    return "escalate"


# A customer asks for a refund, then about its status, then disputes it: only the first
# message names the order (the real-model test and tests/unit/test_local_threads.py).
CONVERSATION: list[dict[str, Any]] = [
    {"text": "Order A-4711 arrived damaged: I want a refund", "order_id": "A-4711"},
    {"text": "What is the status of my refund?"},
    {"text": "I dispute this: I want my money back now"},
]


class SupportAgent(Agent):
    """Talks with a customer about their orders, one message a turn."""

    name = "support"
    thread_tokens = 400  # a few turns: a long conversation is summarised
    graph = Graph(
        initial="read",
        compact="summarise",
        states={
            "read": State(
                description="A customer writes (input.text). The conversation's earlier "
                "turns are in the context's thread: an order named there is the one the "
                "customer means when this message names none.",
                edges=(
                    Edge(
                        name="lookup",
                        to="answer",
                        tool="lookup_order",
                        args=LookupArgs,
                        description="Look up the order the customer asks about.",
                    ),
                    Edge(
                        name="dispute",
                        to="person",
                        args=Dispute,
                        description="The customer disputes what they were told about an "
                        "order: a person takes it over.",
                    ),
                    Edge(
                        name="escalate",
                        to="person",
                        description="It is unclear which order: a person answers.",
                    ),
                ),
                safe_edge="escalate",
            ),
            "answer": State(
                description="Tell the customer their order's status, from the lookup.",
                edges=(
                    Edge(
                        name="reply",
                        to="done",
                        output=Reply,
                        description="Answer with the order and its status.",
                    ),
                    Edge(name="escalate", to="person", description="Something is off."),
                ),
                safe_edge="escalate",
            ),
            "summarise": State(
                description="Fold the summary so far and the older turns in the context's "
                "thread into one summary: every order talked about, and what was said.",
                edges=(
                    Edge(name="summarised", to="read", args=Summary, description="The summary."),
                    Edge(name="skip", to="read", description="Go on without one."),
                ),
                safe_edge="skip",
            ),
            "person": State(
                human=True,
                description="A person answers the customer.",
                edges=(Edge(name="close", to="closed", description="Answered."),),
            ),
            "done": State(terminal="succeeded", description="The customer was answered."),
            "closed": State(terminal="succeeded", description="A person answered."),
        },
    )
    example_input = {"text": "Order A-1001 arrived damaged: I want a refund", "order_id": "A-1001"}
    max_steps = 8
    llm = RuleLLM(route)


class SupportLLMAgent(SupportAgent):
    """The same agent, for routing through a configured model (see RIG_LLM_CONFIG)."""

    name = "support-llm"
    max_reasks = 2
