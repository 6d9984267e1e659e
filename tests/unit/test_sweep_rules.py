"""Which timers the timer sweep sends again (`Rules.overdue`), and that each one, applied,
does what the lost timer would have done; without NATS."""

from __future__ import annotations

from actors.jobs.rules import Rules
from protocols import (
    Budget,
    DeadlineCheck,
    Decision,
    FlowTick,
    Header,
    JobSnapshot,
    Names,
    SignalTimeout,
    StallCheck,
    StartJob,
    kv_subject,
)
from tests.support.waiter import waiting

NAMES = Names("t")
GRAPH = waiting(60.0)  # ask -> waiting (a signal, 60 s, then `no_reply`) -> answer
GRACE = 10.0


def started(budget: Budget, flow_key: str | None = None) -> JobSnapshot:
    """A waiter's job started at 1000, deciding in `ask` (step 1)."""
    rules = Rules(NAMES, 1000.0)
    deadline = 1000.0 + budget.deadline_s if budget.deadline_s else None
    start = StartJob(
        job_id="w", agent="waiter", input={}, budget=budget, deadline=deadline, accepted_at=1000.0
    )
    job = rules.new_snapshot(start)
    if flow_key is not None:
        job.flow_key, job.updated_at = flow_key, 1000.0  # waits for its key's place
        return job
    moved = rules.start(job, GRAPH)
    assert moved is not None
    return rules.settle(moved, cause="start", status_before="accepted", latest=None)


def settled(rules: Rules, job: JobSnapshot | None) -> JobSnapshot:
    """A transition's job as the supervisor writes it (`Rules.settle`)."""
    assert job is not None
    return rules.settle(job, cause="test", status_before="running", latest=None)


def running_key(job: JobSnapshot) -> list[tuple[bytes, dict[str, str]]]:
    subject = kv_subject(NAMES.running_bucket, NAMES.running_key(job.job_id))
    return [(o.data, o.headers) for o in job.outbox if o.subject == subject]


def test_a_signal_timeout_lost_is_sent_once_overdue_and_times_the_wait_out() -> None:
    job = started(Budget(stall_s=30))
    assert running_key(job) == [(b"1", {})]  # it runs: the sweep reads it
    rules = Rules(NAMES, 1001.0)
    job = settled(rules, rules.report(job, Decision(job_id="w", step=1, edge="wait"), GRAPH))
    assert job.phase == "signal"
    assert Rules(NAMES, 1061.0 + GRACE - 1).overdue(job, GRAPH, GRACE) == []  # not yet
    late = Rules(NAMES, 1061.0 + GRACE + 1)
    [timer] = late.overdue(job, GRAPH, GRACE)  # (no stall check: it waits for a signal)
    assert timer == SignalTimeout(job_id="w", step=job.step, at=1061.0)
    moved = settled(late, late.signal_timeout(job, GRAPH, timer))
    assert (moved.status, moved.state) == ("failed", "closed")
    [(data, headers)] = running_key(moved)  # ended: its key goes, and its tombstone expires
    assert data == b"" and headers[Header.KV_OPERATION] == "DEL" and Header.TTL in headers
    assert late.overdue(moved, GRAPH, GRACE) == []


def test_a_stall_check_lost_is_sent_and_a_job_that_did_not_move_goes_to_a_person() -> None:
    job = started(Budget(stall_s=30))
    assert Rules(NAMES, 1030.0 + GRACE - 1).overdue(job, GRAPH, GRACE) == []
    late = Rules(NAMES, 1030.0 + GRACE + 1)
    [timer] = late.overdue(job, GRAPH, GRACE)
    assert timer == StallCheck(job_id="w", at=1030.0, seq=job.event_seq, arm=job.stall_arm)
    parked, again = late.stall(job, GRAPH, timer, "human")
    assert again is None
    parked = settled(late, parked)
    assert parked.status == "waiting_human"
    assert late.overdue(parked, GRAPH, GRACE) == []  # on a person's time now: no timer,
    [(data, headers)] = running_key(parked)  # so no key either (a resume puts it back)
    assert data == b"" and headers == {Header.KV_OPERATION: "DEL"}


def test_a_deadline_lost_is_sent_and_ends_the_job() -> None:
    job = started(Budget(deadline_s=100))
    assert job.budget.stall_s is None and job.deadline == 1100.0
    late = Rules(NAMES, 1100.0 + GRACE + 1)
    [timer] = late.overdue(job, GRAPH, GRACE)
    assert timer == DeadlineCheck(job_id="w", at=1100.0)
    ended = late.deadline(job, GRAPH, timer)
    assert ended is not None and ended.status == "deadline_exceeded"


def test_a_job_waiting_for_its_keys_place_gets_its_key_woken() -> None:
    job = started(Budget(), flow_key="waiter.acme")
    assert job.status == "accepted"
    assert Rules(NAMES, 1000.0 + GRACE - 1).overdue(job, GRAPH, GRACE) == []
    now = 1000.0 + GRACE + 1
    assert Rules(NAMES, now).overdue(job, GRAPH, GRACE) == [FlowTick(key="waiter.acme", at=now)]
