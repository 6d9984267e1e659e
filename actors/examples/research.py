"""The shipped example of agents working together: a brief researched, then written up.

    triage --research--> write --write--> done
      |   (a child job of    |  (a child job of `writer`,
      |    `research` per    |   verifier covers_findings)
      |    question, 3 at    |
      |    a time)           '--(fails)--> review (a person) --accept--> done
      '--(any fails)--> review                             '--drop--> dropped

`triage` takes a topic and a few questions. Its `research` edge starts one child job of
agent `research` per question (a fan-out, at most three at a time); each child looks its
question up (`look_up`, a tool with no side effects: a small reference table stands in
for a search engine) and answers on an output edge. When every child has answered,
`write` starts a child job of `writer`, which drafts the report from the findings on an
output edge; the verifier `covers_findings` checks that the draft cites every finding
before the job ends. A child that fails, or a draft that leaves a finding out, brings
the brief to a person.

The models are `RuleLLM` stand-ins, so the example runs offline; configure models for
`triage`, `research` and `writer` in an LLM config file to route with real ones.

    rig up --config research.toml     # the five classes below and a supervisor
    rig submit triage --input '{"topic": "tides", "questions": ["what causes tides"]}' --wait
    rig watch JOB --children
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from actors import Agent, RoutePrompt, RuleLLM, ToolExecutor, Verifier, tool, verifier
from protocols import Edge, Graph, State, VerifyRequest

# A few facts, as a search engine would find them; anything else is "no source found".
REFERENCE = {
    "tides": "the Moon's gravity, and the Sun's, pull the oceans into two bulges",
    "sky": "air scatters short (blue) wavelengths of sunlight more than long ones",
    "seasons": "Earth's axis is tilted 23.4 degrees to its orbit",
    "rainbow": "raindrops refract and reflect sunlight, splitting it by wavelength",
}


class Brief(BaseModel):
    """What a triage job's input must be."""

    topic: str = Field(min_length=1, max_length=200)
    questions: list[str] = Field(min_length=1, max_length=10)


class Question(BaseModel):
    """One question for a research child (its input)."""

    question: str = Field(min_length=1, max_length=500)


class Questions(BaseModel):
    """The research edge's arguments: one child job per question."""

    questions: list[Question] = Field(min_length=1, max_length=10)


class Finding(BaseModel):
    """A research child's answer (its output)."""

    question: str
    answer: str


class Draft(BaseModel):
    """The write edge's arguments: the writer's input."""

    topic: str
    findings: list[Finding]


class Report(BaseModel):
    """The writer's output."""

    title: str
    text: str


class LookUp(BaseModel):
    question: str


def plan(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    """Triage: research every question, then hand the findings to the writer."""
    brief = prompt.context.input
    if prompt.state == "triage":
        return "research", {"questions": [{"question": q} for q in brief.get("questions", [])]}
    ends = prompt.context.results.get("research") or []
    findings = [
        end["result"]["output"]
        for end in ends
        if end.get("status") == "succeeded" and (end.get("result") or {}).get("output")
    ]
    return "write", {"topic": brief.get("topic", ""), "findings": findings}


def look(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    """Research: look the question up, then answer with what was found."""
    question = str(prompt.context.input.get("question", ""))
    if prompt.state == "look":
        return "look_up", {"question": question}
    found = prompt.context.results.get("look_up") or {}
    return "answer", {"question": question, "answer": str(found.get("answer", ""))}


def draft(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    """Writer: a title, and each finding as a line."""
    job = prompt.context.input
    lines = [f"- {f['question']}: {f['answer']}" for f in job.get("findings", [])]
    return "report", {"title": f"On {job.get('topic', '')}", "text": "\n".join(lines)}


class TriageAgent(Agent):
    """Researches a brief's questions with child jobs, then has a writer report."""

    name = "triage"
    input_model = Brief
    example_input = {"topic": "tides", "questions": ["what causes tides", "why is the sky blue"]}
    graph = Graph(
        initial="triage",
        states={
            "triage": State(
                description="Research each question of the brief.",
                edges=(
                    Edge(
                        name="research",
                        to="write",
                        agent="research",
                        map="questions",
                        args=Questions,
                        at_once=3,
                        on_fail="review",
                        description="One research job per question.",
                    ),
                    Edge(name="escalate", to="review"),
                ),
                safe_edge="escalate",
            ),
            "write": State(
                description="Have the findings written up.",
                edges=(
                    Edge(
                        name="write",
                        to="done",
                        agent="writer",
                        args=Draft,
                        verifier="covers_findings",
                        on_fail="review",
                        description="A writer job drafts the report from the findings.",
                    ),
                    Edge(name="escalate", to="review"),
                ),
                safe_edge="escalate",
            ),
            "review": State(
                human=True,
                edges=(Edge(name="accept", to="done"), Edge(name="drop", to="dropped")),
            ),
            "done": State(terminal="succeeded"),
            "dropped": State(terminal="failed"),
        },
    )
    llm = RuleLLM(plan)


class ResearchAgent(Agent):
    """Answers one question from what `look_up` finds."""

    name = "research"
    input_model = Question
    example_input = {"question": "what causes tides"}
    graph = Graph(
        initial="look",
        states={
            "look": State(
                edges=(
                    Edge(name="look_up", to="answer", tool="look_up", args=LookUp),
                    Edge(name="give_up", to="gave_up"),
                ),
                safe_edge="give_up",
            ),
            "answer": State(
                edges=(
                    Edge(name="answer", to="answered", output=Finding),
                    Edge(name="give_up", to="gave_up"),
                ),
                safe_edge="give_up",
            ),
            "answered": State(terminal="succeeded"),
            "gave_up": State(terminal="failed"),
        },
    )
    llm = RuleLLM(look)


class WriterAgent(Agent):
    """Writes a report from a topic's findings."""

    name = "writer"
    input_model = Draft
    example_input = {"topic": "tides", "findings": [{"question": "q", "answer": "a"}]}
    graph = Graph(
        initial="draft",
        states={
            "draft": State(
                edges=(
                    Edge(name="report", to="written", output=Report),
                    Edge(name="give_up", to="gave_up"),
                ),
                safe_edge="give_up",
            ),
            "written": State(terminal="succeeded"),
            "gave_up": State(terminal="failed"),
        },
    )
    llm = RuleLLM(draft)


class ResearchTools(ToolExecutor):
    name = "research-tools"

    @tool(side_effects=False)
    async def look_up(self, question: str) -> dict[str, str]:
        """What the reference table says about the question's first known word."""
        for word, fact in REFERENCE.items():
            if word in question.lower():
                return {"answer": fact, "source": f"reference:{word}"}
        return {"answer": "no source found", "source": "none"}


class ResearchChecks(Verifier):
    name = "research-checks"

    @verifier
    async def covers_findings(self, request: VerifyRequest) -> tuple[bool, str]:
        """The writer's report cites every finding it was given."""
        report = ((request.result or {}).get("output") or {}).get("text", "")
        missing = [
            f["question"] for f in request.args.get("findings", []) if f["answer"] not in report
        ]
        if missing:
            return False, f"the report leaves out {len(missing)} finding(s): {missing}"
        return True, f"all {len(request.args.get('findings', []))} findings cited"


RESEARCH_ACTORS = (
    "actors.examples.research:TriageAgent",
    "actors.examples.research:ResearchAgent",
    "actors.examples.research:WriterAgent",
    "actors.examples.research:ResearchTools",
    "actors.examples.research:ResearchChecks",
)
