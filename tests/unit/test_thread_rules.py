"""A thread's record as turns end (`actors.jobs.rules.thread_ended`) and what a turn's
context carries of it (`thread_context`), without NATS."""

from __future__ import annotations

import json

from actors.jobs.rules import THREAD_TURNS_KEPT, thread_context, thread_ended
from protocols import ThreadEnded, ThreadRecord, ThreadTurn


def turn(n: int, text: str = "x") -> ThreadTurn:
    return ThreadTurn(job_id=f"j{n}", status="succeeded", input={"text": text})


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
