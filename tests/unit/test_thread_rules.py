"""A thread's record as turns end (`actors.jobs.threads.thread_ended`) and what a turn's
context carries of it (`thread_context`), without NATS."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from actors.jobs.threads import THREAD_TURNS_KEPT, compaction, thread_context, thread_ended
from protocols import (
    Edge,
    Graph,
    GraphError,
    State,
    ThreadEnded,
    ThreadRecord,
    ThreadSummary,
    ThreadTurn,
)


def turn(n: int, text: str = "x") -> ThreadTurn:
    """A turn whose JSON is as long as any other's of the same text (a fixed end time)."""
    return ThreadTurn(job_id=f"j{n}", status="succeeded", input={"text": text}, ended_at=1.5)


def test_an_ended_turn_is_kept_once_and_the_next_waiting_job_runs() -> None:
    record = ThreadRecord(thread="t", agent="a", active="j1", waiting=["j2", "j3"])
    ended = ThreadEnded(job_id="j1", thread="t", turn=turn(1))
    assert thread_ended(record, ended)
    assert (record.active, record.waiting, [t.job_id for t in record.turns]) == (
        "j2",
        ["j3"],
        ["j1"],
    )
    assert not thread_ended(record, ended)  # the same message again changes nothing
    # A waiting job that ended without running (cancelled) leaves the queue, keeps no turn.
    assert thread_ended(record, ThreadEnded(job_id="j3", thread="t"))
    assert (record.active, record.waiting, len(record.turns)) == ("j2", [], 1)


def test_the_oldest_turns_are_dropped_and_counted() -> None:
    record = ThreadRecord(thread="t", agent="a")
    for n in range(THREAD_TURNS_KEPT + 3):
        thread_ended(record, ThreadEnded(job_id=f"j{n}", thread="t", turn=turn(n)))
    assert len(record.turns) == THREAD_TURNS_KEPT and record.dropped == 3
    assert record.turns[0].job_id == "j3"


def test_a_turn_s_context_holds_the_newest_turns_that_fit_its_tokens() -> None:
    record = ThreadRecord(thread="t", agent="a", turns=[turn(n, "y" * 100) for n in range(5)])
    one = len(json.dumps(record.turns[0].model_dump(mode="json")))  # characters of a turn
    assert [t["job_id"] for t in thread_context(record, 10_000)] == [f"j{n}" for n in range(5)]
    fits_two = thread_context(record, (2 * one + one // 2) // 4)  # two and a half turns
    assert [t["job_id"] for t in fits_two] == ["j3", "j4"]  # the newest, oldest first
    assert thread_context(record, 0) == []


def test_a_summary_stands_for_the_turns_it_covers_and_is_kept_once() -> None:
    record = ThreadRecord(thread="t", agent="a", turns=[turn(n, "y" * 100) for n in range(6)])
    one = len(json.dumps(record.turns[0].model_dump(mode="json")))
    assert compaction(record, 10_000) is None  # all of it fits: nothing to summarise
    planned = compaction(record, (3 * one + 3) // 4)  # three turns' worth
    assert planned is not None
    plan, context = planned
    # The newest that fit half the budget stay; the summary will cover the rest, of which
    # its step sees those that fit the budget.
    assert [t["job_id"] for t in plan.recent] == ["j5"] and plan.through == 5
    assert [t["job_id"] for t in context] == ["j2", "j3", "j4"]
    summary = ThreadSummary(summary={"gist": "j0-j4"}, through=5, job_id="j6")
    ended = ThreadEnded(job_id="j6", thread="t", turn=turn(6), summary=summary)
    assert thread_ended(record, ended) and not thread_ended(record, ended)
    assert (record.compactions, record.covered()) == (1, 5)
    # The context now: the summary, then the turns after it (never one it covers).
    assert [t.get("job_id", "summary") for t in thread_context(record, 10_000)] == [
        "summary",
        "j5",
        "j6",
    ]
    # An older summary arriving late does not replace a newer one.
    stale = ThreadSummary(summary={"gist": "old"}, through=3, job_id="j7")
    thread_ended(record, ThreadEnded(job_id="j7", thread="t", turn=turn(7), summary=stale))
    assert record.summary is not None and record.summary.job_id == "j6"


class Gist(BaseModel):
    gist: str


@pytest.mark.parametrize(
    ("compact", "edges", "words"),
    [
        ("nowhere", (), "compact names 'nowhere'"),
        ("sum", (Edge(name="go", to="start"),), "has no edge with args="),
        ("sum", (Edge(name="go", to="start", args=Gist, tool="t"),), "call no tool"),
        ("sum", (Edge(name="go", to="start", output=Gist),), "not output edges"),
    ],
)
def test_a_summarising_state_is_checked_when_the_graph_is_built(
    compact: str, edges: tuple[Edge, ...], words: str
) -> None:
    states = {
        "start": State(edges=(Edge(name="end", to="done"),), safe_edge="end"),
        "done": State(terminal="succeeded"),
    }
    if edges:
        states["sum"] = State(edges=edges, safe_edge=edges[0].name)
    with pytest.raises(GraphError, match=words):
        Graph(initial="start", compact=compact, states=states)
