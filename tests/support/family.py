"""Agents that start one another, for the sub-agent tests.

`Asker` (the parent) hands its question to `Researcher` (a child job), then answers with
what the child answered. The researcher pays for its research through the crash tools'
`pay` (tests/support/crash_tools.py), whose sink counts each payment that really
happened, then writes its answer on an output edge. The question's words steer the
rule-routed models (whose tokens are counted at four characters each): `slow` makes
the researcher wait in its tool, `refuse` makes it give up, `person` makes it ask one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from actors import Agent, RoutePrompt, RuleLLM, tool
from protocols import Edge, Graph, State
from tests.support.crash_tools import CrashTools


class Question(BaseModel):
    question: str


class Answer(BaseModel):
    text: str


class Payment(BaseModel):
    account: str
    amount: float


def _two_steps(
    first: str, edges: tuple[Edge, ...], answer: str, more: dict[str, State] | None = None
) -> Graph:
    """A graph of two decisions: in `first` take one of `edges` (each leads to `answer`,
    or to a state of `more`), then answer there (an output edge); or give up in either."""
    give_up = Edge(name="give_up", to="gave_up")
    return Graph(
        initial=first,
        states={
            first: State(edges=(*edges, give_up), safe_edge="give_up"),
            answer: State(
                edges=(Edge(name=answer, to="done", output=Answer), give_up),
                safe_edge="give_up",
            ),
            "done": State(terminal="succeeded"),
            "gave_up": State(terminal="failed"),
            **(more or {}),
        },
    )


def research(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    question = str(prompt.context.input.get("question", ""))
    if "refuse" in question:
        return "give_up"
    if "person" in question and prompt.state == "look":
        return "ask_person"
    if prompt.state == "look":
        tool_name = "pay_slowly" if "slow" in question else "pay"
        if "reconciled" in question:
            tool_name = "pay_reconciled"
        return tool_name, {"account": question[:40], "amount": 1.0}
    return "answer", {"text": f"researched: {question}"}


def ask(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    if prompt.state == "ask":
        return "research", {"question": str(prompt.context.input.get("question", ""))}
    found = prompt.context.results.get("researcher") or {}
    text = (found.get("output") or {}).get("text")
    return ("reply", {"text": f"the researcher says {text}"}) if text else "give_up"


class Researcher(Agent):
    """A child agent: pays for its research (a side effect), then answers."""

    name = "researcher"
    input_model = Question
    example_input = {"question": "why is the sky blue"}
    graph = _two_steps(
        "look",
        (
            Edge(name="pay", to="answer", tool="pay", args=Payment),
            Edge(name="pay_slowly", to="answer", tool="pay_slowly", args=Payment),
            Edge(name="pay_reconciled", to="answer", tool="pay_reconciled", args=Payment),
            Edge(name="ask_person", to="person"),
        ),
        "answer",
        {"person": State(human=True, edges=(Edge(name="go_on", to="answer"),))},
    )
    llm = RuleLLM(research)


class Asker(Agent):
    """A parent agent: asks the researcher, then replies with its answer."""

    name = "asker"
    input_model = Question
    example_input = {"question": "why is the sky blue"}
    graph = _two_steps(
        "ask", (Edge(name="research", to="reply", agent="researcher", args=Question),), "reply"
    )
    llm = RuleLLM(ask)


class Questions(BaseModel):
    questions: list[Question]


def fan(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    topic = str(prompt.context.input.get("question", ""))
    if prompt.state == "fan":
        asked = [{"question": f"reconciled {i}: {topic}"} for i in range(5)]
        return "each", {"questions": asked}
    ends = prompt.context.results.get("each") or []
    done = sum(end["status"] == "succeeded" for end in ends)
    return "reply", {"text": f"{done} of {len(ends)} answered"}


class Fanner(Agent):
    """A parent that asks five researchers at once (three at a time), then replies."""

    name = "fanner"
    input_model = Question
    example_input = {"question": "tides"}
    graph = _two_steps(
        "fan",
        (
            Edge(
                name="each",
                to="reply",
                agent="researcher",
                map="questions",
                args=Questions,
                at_once=3,
            ),
        ),
        "reply",
    )
    llm = RuleLLM(fan)


class ResearchTools(CrashTools):
    """The crash tools' `pay`, and `pay_slowly`, which holds its call for a minute
    (a cancel stops it) before paying."""

    name = "research-tools"

    @tool(side_effects=True, timeout=90.0, lease=120.0)
    async def pay_slowly(self, account: str, amount: float) -> dict[str, Any]:
        await asyncio.sleep(60)
        return await self._pay(account, amount)


FAMILY = (
    "actors:Supervisor",
    "tests.support.family:Asker",
    "tests.support.family:Researcher",
    "tests.support.family:ResearchTools",
)
