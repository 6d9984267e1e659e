"""A concurrency key's record as jobs come and go (`actors.jobs.flows`), without NATS."""

from __future__ import annotations

from actors.jobs.flows import admit, pump, released
from protocols import FlowRecord, JobSnapshot


def job(
    job_id: str, *, at: float, priority: int = 0, limit: int = 1, **flow: float | None
) -> JobSnapshot:
    return JobSnapshot(
        job_id=job_id,
        agent="a",
        status="accepted",
        input={},
        created_at=at,
        flow_key="a.k",
        flow_limit=limit,
        priority=priority,
        flow_debounce=flow.get("debounce"),
        flow_rate=flow.get("rate"),
    )


def test_a_place_is_taken_once_and_the_queue_starts_by_priority_then_arrival() -> None:
    record = FlowRecord(key="a.k")
    first, low, high = job("j1", at=1), job("j2", at=2), job("j3", at=3, priority=5)
    assert admit(record, first, 10.0) == (True, None)
    assert admit(record, first, 11.0) == (True, None)  # asked again: the same answer
    assert admit(record, low, 12.0) == (False, None)
    assert admit(record, high, 13.0) == (False, None)
    assert [w.job_id for w in record.waiting] == ["j3", "j2"]
    assert released(record, "j1", 14.0) == (True, ["j3"])
    assert released(record, "j1", 15.0) == (False, [])  # the same end again: nothing


def test_a_debounced_submit_replaces_the_one_before_and_never_an_older_the_newer() -> None:
    record = FlowRecord(key="a.k")
    older, newer = job("j1", at=1, debounce=1.0), job("j2", at=2, debounce=1.0)
    assert admit(record, older, 10.0) == (False, None)
    assert admit(record, newer, 10.2) == (False, "j1")  # the earlier is replaced
    # The earlier's start handled after the later's submission: it is the one replaced.
    assert admit(record, older, 10.3) == (False, "j1")
    assert record.debouncing is not None and record.debouncing.job_id == "j2"
    assert pump(record, 11.0) == []  # its window (from 10.2) has not ended
    assert pump(record, 11.3) == ["j2"]
    assert admit(record, older, 11.4) == (False, "j1")  # and never after it ran


def test_a_rate_spaces_starts() -> None:
    record = FlowRecord(key="a.k")
    jobs = [job(f"j{n}", at=n, limit=10, rate=120.0) for n in range(3)]  # one each half s
    assert admit(record, jobs[0], 10.0) == (True, None)
    assert admit(record, jobs[1], 10.1) == (False, None)
    assert admit(record, jobs[2], 10.2) == (False, None)
    assert pump(record, 10.4) == []
    assert pump(record, 10.5) == ["j1"]
    assert pump(record, 10.9) == [] and pump(record, 11.0) == ["j2"]
