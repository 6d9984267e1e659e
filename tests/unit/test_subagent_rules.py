"""The rules of a job tree, without NATS: a parent's edge that starts a child job, the
child's carved budget and first transition, its end moving the parent, a cancel going
down, and an output edge's answer in the result."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from actors.deploy.roles import check_sub_agents
from actors.jobs.rules import MAX_DEPTH, Rules
from protocols import (
    AgentInfo,
    Budget,
    CancelJob,
    CancelRequest,
    ChildEnded,
    ConfigError,
    Decision,
    Edge,
    Event,
    Graph,
    GraphError,
    JobSnapshot,
    Names,
    ParentLink,
    StallCheck,
    StartJob,
    State,
    Usage,
    Verdict,
    child_job_id,
    decode_as,
)
from tests.support.family import Answer, Asker, Question, Researcher

NAMES = Names("t")
NOW = 1000.0
RESEARCHER = AgentInfo(
    name="researcher",
    graph=Researcher.graph,
    input_schema=Question.model_json_schema(),
    budget=Budget(max_steps=10, max_tokens=5000),
)


def sent(job: JobSnapshot, model: type[BaseModel], subject: str) -> list[Any]:
    return [decode_as(model, out.data)[0] for out in job.outbox if out.subject == subject]


def events(job: JobSnapshot, type_: str) -> list[Event]:
    found = sent(job, Event, NAMES.events(job.job_id))
    return [e for e in found if e.type == type_]


def parent_job(budget: Budget | None = None) -> JobSnapshot:
    """An `asker` job that has just started (step 1, deciding in `ask`)."""
    budget = budget or Budget(max_steps=8, max_tokens=1000, deadline_s=60.0)
    rules = Rules(NAMES, NOW)
    start = StartJob(
        job_id="p",
        agent="asker",
        input={"question": "q"},
        budget=budget,
        deadline=NOW + budget.deadline_s if budget.deadline_s else None,
        accepted_at=NOW,
    )
    job = rules.start(rules.new_snapshot(start), Asker.graph)
    assert job is not None
    return job


def asking(budget: Budget | None = None, spent: int = 100) -> JobSnapshot:
    """The parent, having decided to ask the researcher (its decision cost `spent` tokens)."""
    usage = Usage(input_tokens=spent)
    decision = Decision(job_id="p", step=1, edge="research", args={"question": "why"}, usage=usage)
    job = Rules(NAMES, NOW + 1).report(parent_job(budget), decision, Asker.graph)
    assert job is not None
    return job


def the_start(parent: JobSnapshot) -> StartJob:
    [start] = sent(parent, StartJob, NAMES.supervisor_for(child_job_id("p", 1)))
    return start


def test_a_sub_agent_edge_starts_one_child_named_by_the_parent_and_step() -> None:
    parent = asking()
    assert (parent.phase, parent.status, parent.children) == ("child", "running", ["p-s1c0"])
    start = the_start(parent)
    assert (start.job_id, start.agent, start.input) == ("p-s1c0", "researcher", {"question": "why"})
    assert start.parent == ParentLink(job_id="p", agent="asker", step=1, edge="research", depth=1)
    # What the parent has left: 7 of its 8 steps, 900 of its 1000 tokens, its deadline.
    assert (start.budget.max_steps, start.budget.max_tokens) == (7, 900)
    assert start.deadline == NOW + 60.0
    [started] = events(parent, "child_started")
    assert started.data["child"] == "p-s1c0"
    # The same decision handled again (redelivered, replayed) names the same child, under
    # the same message id: one child.
    again = asking()
    assert [o.msg_id for o in again.outbox] == [o.msg_id for o in parent.outbox]
    assert "p-s1c0:0:start" in [o.msg_id for o in parent.outbox]
    assert parent.info().waiting_for == ["p-s1c0"]


def child_of(parent: JobSnapshot, now: float = NOW + 2) -> JobSnapshot:
    rules = Rules(NAMES, now)
    return rules.new_snapshot(the_start(parent))


def test_a_child_s_budget_is_its_agent_s_capped_by_what_its_parent_has_left() -> None:
    parent = asking()
    child = Rules(NAMES, NOW + 2).start_child(child_of(parent), RESEARCHER, parent)
    assert child is not None and child.status == "running" and child.phase == "decide"
    # steps: min(10 own, 7 left); tokens: min(5000 own, 900 left); the parent's deadline.
    assert (child.budget.max_steps, child.budget.max_tokens) == (7, 900)
    assert child.deadline == NOW + 60.0
    [step] = [o for o in child.outbox if o.subject == NAMES.agent("researcher")]
    assert step.msg_id == "p-s1c0:1:step"


def ended_notice(child: JobSnapshot) -> ChildEnded:
    [notice] = sent(child, ChildEnded, NAMES.supervisor_for("p"))
    return notice


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ("parent_gone", "cancelled", "cancelled"),
        ("parent_moved", "cancelled", "cancelled"),
        ("bad_input", "failed", "schema_error"),
        ("too_deep", "failed", "too_deep"),
    ],
)
def test_a_child_that_cannot_start_ends_at_once_and_tells_its_parent(
    change: str, status: str, code: str
) -> None:
    parent = asking()
    child = child_of(parent)
    seen: JobSnapshot | None = parent
    if change == "parent_gone":
        seen = None
    elif change == "parent_moved":
        seen = Rules(NAMES, NOW + 2).cancel(parent.model_copy(deep=True), CancelRequest(job_id="p"))
    elif change == "bad_input":
        child.input = {"question": 7}
    else:
        assert child.parent is not None
        child.parent = child.parent.model_copy(update={"depth": MAX_DEPTH + 1})
    ended = Rules(NAMES, NOW + 2).start_child(child, RESEARCHER, seen)
    assert ended is not None and ended.status == status
    assert (ended.error or {})["code"] == code
    notice = ended_notice(ended)
    assert (notice.job_id, notice.step, notice.child, notice.status) == ("p", 1, "p-s1c0", status)
    assert [o.msg_id for o in ended.outbox if o.subject == NAMES.supervisor_for("p")] == [
        "p:1:child-p-s1c0"
    ]


def child_end(status: Any, **more: Any) -> ChildEnded:
    """The notice of the parent's child ending `status`."""
    return ChildEnded(job_id="p", step=1, child="p-s1c0", agent="researcher", status=status, **more)


def test_a_child_s_end_is_the_edge_s_result_and_its_spending_the_parent_s() -> None:
    parent = asking()
    result = {"state": "done", "results": {}, "output": {"text": "because"}}
    usage = Usage(input_tokens=300, output_tokens=20)
    notice = child_end("succeeded", result=result, usage=usage, steps=2)
    moved = Rules(NAMES, NOW + 3).child_ended(parent.model_copy(deep=True), Asker.graph, notice)
    assert moved is not None
    assert (moved.state, moved.phase, moved.step) == ("reply", "decide", 2)
    assert moved.results["researcher"] == result
    assert moved.usage.tokens == 100 + 320 and moved.child_steps == 2
    [ended] = events(moved, "child_ended")
    assert ended.data["spent"]["steps"] == 3  # its own step and the child's two
    # A notice for another step, or another child, is old: nothing changes.
    for stale in (notice.model_copy(update={"step": 2}), notice.model_copy(update={"child": "x"})):
        assert (
            Rules(NAMES, NOW + 3).child_ended(parent.model_copy(deep=True), Asker.graph, stale)
            is None
        )


def test_a_child_that_did_not_succeed_takes_the_failure_path() -> None:
    notice = child_end("failed", error={"code": "tool_error", "message": "no money"})
    moved = Rules(NAMES, NOW + 3).child_ended(asking(), Asker.graph, notice)
    assert moved is not None and (moved.status, moved.state) == ("failed", "gave_up")
    [transition] = events(moved, "transition")
    assert "ended failed: tool_error: no money" in transition.data["reason"]


def test_a_child_that_spent_the_parent_s_budget_stops_the_parent_at_its_limit() -> None:
    """The child was given the 900 tokens the parent had left and spent them all: the
    parent is over its own limit, and ends by it, not by the edge's failure path."""
    error = {"code": "budget_exceeded", "exhausted": "tokens"}
    notice = child_end("budget_exceeded", usage=Usage(input_tokens=900), error=error)
    moved = Rules(NAMES, NOW + 3).child_ended(asking(), Asker.graph, notice)
    assert moved is not None and moved.status == "budget_exceeded"
    assert (moved.error or {})["exhausted"] == "tokens"


def test_cancelling_a_parent_cancels_the_child_it_waits_for() -> None:
    cancelled = Rules(NAMES, NOW + 3).cancel(asking(), CancelRequest(job_id="p", reason="stop"))
    assert cancelled.status == "cancelled"
    [command] = sent(cancelled, CancelJob, NAMES.supervisor_for("p-s1c0"))
    assert command.by_parent and command.job_id == "p-s1c0"
    assert command.request.reason == "its parent p: the job was cancelled: stop"


def test_a_parent_waiting_for_a_child_is_not_stalled_its_child_is_watched() -> None:
    parent = asking(Budget(max_steps=8, stall_s=30.0))
    check = StallCheck(job_id="p", at=NOW + 40, seq=parent.event_seq, arm=parent.stall_arm)
    after, again = Rules(NAMES, NOW + 40).stall(parent, Asker.graph, check, "human")
    assert after is None and again is not None and again.at > NOW + 40


class Checked(BaseModel):
    text: str


GRAPH = Graph(
    initial="a",
    states={
        "a": State(
            edges=(
                Edge(name="answer", to="done", output=Checked, verifier="sound"),
                Edge(name="give_up", to="failed"),
            ),
            safe_edge="give_up",
        ),
        "done": State(terminal="succeeded"),
        "failed": State(terminal="failed"),
    },
)


def test_an_output_edge_s_arguments_are_the_job_s_output_once_checked() -> None:
    rules = Rules(NAMES, NOW)
    start = StartJob(job_id="o", agent="x", input={}, budget=Budget(), accepted_at=NOW)
    job = rules.start(rules.new_snapshot(start), GRAPH)
    assert job is not None
    decided = rules.report(
        job, Decision(job_id="o", step=1, edge="answer", args={"text": "hi"}), GRAPH
    )
    assert decided is not None and decided.phase == "verify" and decided.output is None
    verdict = Verdict(job_id="o", step=1, verifier="sound", passed=True)
    done = rules.report(decided.model_copy(deep=True), verdict, GRAPH)
    assert done is not None and done.status == "succeeded"
    assert done.result == {"state": "done", "results": {}, "output": {"text": "hi"}}
    rejected = rules.report(decided, verdict.model_copy(update={"passed": False}), GRAPH)
    assert rejected is not None and rejected.status == "failed"
    assert "output" not in (rejected.result or {})


def test_the_graph_refuses_what_an_edge_cannot_be() -> None:
    def one(edge: Edge) -> Graph:
        states = {
            "a": State(edges=(edge, Edge(name="no", to="b")), safe_edge="no"),
            "b": State(terminal="succeeded"),
        }
        return Graph(initial="a", states=states)

    assert one(Edge(name="ask", to="b", agent="researcher")).sub_agents() == {"researcher"}
    assert one(Edge(name="say", to="b", output=Answer)).state("a").edges[0].output
    refused = {
        "it calls a tool or starts children": Edge(name="e", to="b", tool="t", agent="x"),
        "give one agent, or a list": Edge(name="e", to="b", agent="x", agents=["y"]),
        "map= without agent=": Edge(name="e", to="b", agents=["x"], map="items"),
        "starts no fan-out": Edge(name="e", to="b", agent="x", join="first"),
        "lists an agent twice": Edge(name="e", to="b", agents=["x", "x"]),
        "an output edge and also calls tool": Edge(name="e", to="b", tool="t", output=True),
        "an output edge without a model": Edge(name="e", to="b", output=True),
        "must be letters": Edge(name="e", to="b", agent="no.dots"),
        "is reserved": Edge(name="e", to="b", agent="supervisor"),
    }
    for words, edge in refused.items():
        with pytest.raises(GraphError, match=words):
            one(edge)
    with pytest.raises(TypeError, match="give output= or args=, not both"):
        Edge(name="e", to="b", args=Answer, output=Answer)


def test_a_deployment_must_list_every_agent_its_agents_start() -> None:
    check_sub_agents([Asker, Researcher])
    with pytest.raises(ConfigError, match="starts child jobs of 'researcher'"):
        check_sub_agents([Asker])


class Many(BaseModel):
    questions: list[Question]


FAN = Graph(
    initial="ask",
    states={
        "ask": State(
            edges=(
                Edge(
                    name="each",
                    to="done",
                    agent="researcher",
                    map="questions",
                    args=Many,
                    at_once=2,
                ),
                Edge(
                    name="race",
                    to="done",
                    agents=["researcher", "writer"],
                    args=Question,
                    join="first",
                ),
                Edge(name="give_up", to="failed"),
            ),
            safe_edge="give_up",
        ),
        "done": State(terminal="succeeded"),
        "failed": State(terminal="failed"),
    },
)


def fanning(edge: str, args: dict[str, Any], budget: Budget | None = None) -> JobSnapshot:
    rules = Rules(NAMES, NOW)
    start = StartJob(
        job_id="f", agent="fan", input={}, budget=budget or Budget(max_steps=21), accepted_at=NOW
    )
    job = rules.start(rules.new_snapshot(start), FAN)
    assert job is not None
    moved = rules.report(job, Decision(job_id="f", step=1, edge=edge, args=args), FAN)
    assert moved is not None
    return moved


def starts(job: JobSnapshot) -> list[StartJob]:
    prefix = f"{NAMES.prefix}.work.supervisor.api."
    return [
        decode_as(StartJob, o.data)[0]
        for o in job.outbox
        if o.subject.startswith(prefix) and o.msg_id.endswith(":0:start")
    ]


def end_of(job: JobSnapshot, child: str, status: Any, **more: Any) -> JobSnapshot:
    notice = ChildEnded(job_id="f", step=1, child=child, agent="researcher", status=status, **more)
    moved = Rules(NAMES, NOW + 1).child_ended(job, FAN, notice)
    assert moved is not None
    return moved


def test_a_map_starts_one_child_per_item_at_most_at_once_and_joins_them_in_order() -> None:
    questions = [{"question": "a"}, {"question": "b"}, {"question": "c"}]
    job = fanning("each", {"questions": questions}, Budget(max_steps=22, max_tokens=3001))
    first = starts(job)
    assert [s.job_id for s in first] == ["f-s1c0", "f-s1c1"]  # two at once
    assert [s.input for s in first] == questions[:2]
    # Each child's share: (22 - 1) // 3 steps, 3001 // 3 tokens.
    assert {(s.budget.max_steps, s.budget.max_tokens) for s in first} == {(7, 1000)}
    job = end_of(job, "f-s1c1", "failed", error={"code": "x", "message": "no"})
    assert [s.job_id for s in starts(job)] == ["f-s1c2"]  # the room it left
    job = end_of(job, "f-s1c0", "succeeded", result={"output": 1})
    assert job.phase == "child" and starts(job) == []
    again = ChildEnded(job_id="f", step=1, child="f-s1c0", agent="researcher", status="succeeded")
    assert Rules(NAMES, NOW + 1).child_ended(job.model_copy(deep=True), FAN, again) is None
    job = end_of(job, "f-s1c2", "succeeded", result={"output": 3})
    # Done: one of three failed, so the edge fails; the ends are kept, in order.
    assert (job.status, job.state) == ("failed", "failed")
    listed = job.results["each"]
    assert [(e["job_id"], e["status"]) for e in listed] == [
        ("f-s1c0", "succeeded"),
        ("f-s1c1", "failed"),
        ("f-s1c2", "succeeded"),
    ]
    [moved] = [e for e in events(job, "transition") if e.data["edge"] == "each"]
    assert "child job f-s1c1 of agent 'researcher' ended failed: x: no" in moved.data["reason"]


def test_join_first_takes_the_first_success_and_cancels_the_rest() -> None:
    job = fanning("race", {"question": "q"})
    assert [(s.job_id, s.agent) for s in starts(job)] == [
        ("f-s1c0", "researcher"),
        ("f-s1c1", "writer"),
    ]
    job = end_of(job, "f-s1c1", "succeeded", result={"output": "w"})
    assert (job.status, job.state) == ("succeeded", "done")
    [cancel] = sent(job, CancelJob, NAMES.supervisor_for("f-s1c0"))
    assert cancel.by_parent and "f-s1c1 succeeded first" in cancel.request.reason
    assert [e["status"] for e in job.results["race"]] == [None, "succeeded"]


def test_an_item_that_is_no_object_fails_its_child_which_never_starts() -> None:
    job = fanning("each", {"questions": [{"question": "a"}, "b"]})
    assert [s.job_id for s in starts(job)] == ["f-s1c0"]
    job = end_of(job, "f-s1c0", "succeeded")
    assert job.state == "failed"
    assert job.results["each"][1]["error"]["code"] == "schema_error"
