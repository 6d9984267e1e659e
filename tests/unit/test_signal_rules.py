"""The rules of a state that waits for a signal, without NATS."""

from __future__ import annotations

import pytest

from actors.jobs.rules import Rules
from protocols import (
    Budget,
    Decision,
    Edge,
    Event,
    Graph,
    GraphError,
    JobSnapshot,
    JobStateError,
    Names,
    SchemaError,
    SignalRequest,
    SignalTimeout,
    StallCheck,
    StartJob,
    State,
    decode_as,
)
from tests.support.waiter import Reply, waiting

NAMES = Names("t")
GRAPH = waiting(60.0)


def waiting_job() -> JobSnapshot:
    """A waiter's job that took `wait` and now waits for `customer_reply` (step 2)."""
    rules = Rules(NAMES, 1000.0)
    start = StartJob(
        job_id="w", agent="waiter", input={}, budget=Budget(stall_s=30), accepted_at=1000.0
    )
    job = rules.start(rules.new_snapshot(start), GRAPH)
    assert job is not None
    job = rules.report(job, Decision(job_id="w", step=1, edge="wait"), GRAPH)
    assert job is not None
    return job


def events(job: JobSnapshot) -> list[Event]:
    subject = NAMES.events(job.job_id)
    return [decode_as(Event, o.data)[0] for o in job.outbox if o.subject == subject]


def test_a_waiting_state_asks_no_model_and_sets_its_timeout() -> None:
    job = waiting_job()
    assert (job.state, job.phase, job.signal, job.step) == (
        "waiting",
        "signal",
        "customer_reply",
        2,
    )
    assert not [o for o in job.outbox if o.subject == NAMES.agent("waiter")]  # no step request
    [timer] = [
        decode_as(SignalTimeout, o.data)[0]
        for o in job.outbox
        if o.subject == NAMES.timer and b"signal_timeout" in o.data
    ]
    assert (timer.step, timer.at) == (2, 1060.0)
    assert job.info().waiting_signal == "customer_reply"
    # The stall watchdog leaves it be: it waits as long as its state says.
    check = StallCheck(job_id="w", at=1040.0, seq=job.event_seq, arm=job.stall_arm)
    after, again = Rules(NAMES, 1040.0).stall(job, GRAPH, check, "human")
    assert after is None and again is not None


def test_a_signal_takes_on_signal_with_its_data_and_is_kept_once() -> None:
    rules = Rules(NAMES, 1001.0)
    request = SignalRequest(job_id="w", name="customer_reply", data={"text": "hi"}, signal_id="s")
    moved = rules.signal(waiting_job(), GRAPH, request)
    assert (moved.state, moved.phase, moved.step) == ("answer", "decide", 3)
    assert moved.results["customer_reply"] == {"text": "hi"} and moved.signal_ids == ["s"]
    assert rules.signalled_already(moved, request)
    [decision] = [e for e in events(moved) if e.type == "decision"]
    assert (decision.data["edge"], decision.data["by"], decision.data["args"]) == (
        "got_reply",
        "signal",
        {"text": "hi"},
    )
    with pytest.raises(
        JobStateError, match="not waiting for signal 'customer_reply': it is running in 'answer'"
    ):
        rules.check_signal(moved, GRAPH, request)


def test_a_signal_that_does_not_fit_or_is_not_awaited_is_refused() -> None:
    rules = Rules(NAMES, 1001.0)
    with pytest.raises(SchemaError, match="does not fit signal 'customer_reply'"):
        rules.check_signal(
            waiting_job(), GRAPH, SignalRequest(job_id="w", name="customer_reply", data={"text": 1})
        )
    with pytest.raises(JobStateError, match="waits for signal 'customer_reply'"):
        rules.check_signal(waiting_job(), GRAPH, SignalRequest(job_id="w", name="other"))


def test_the_timeout_takes_on_timeout_unless_the_job_moved() -> None:
    check = SignalTimeout(job_id="w", step=2, at=1060.0)
    timed = Rules(NAMES, 1060.0).signal_timeout(waiting_job(), GRAPH, check)
    assert timed is not None and (timed.status, timed.state) == ("failed", "closed")
    moved = Rules(NAMES, 1001.0).signal(
        waiting_job(), GRAPH, SignalRequest(job_id="w", name="customer_reply", data={"text": "x"})
    )
    assert Rules(NAMES, 1060.0).signal_timeout(moved, GRAPH, check) is None


def test_the_graph_refuses_a_wait_it_cannot_keep() -> None:
    edges = (Edge(name="a", to="end"), Edge(name="b", to="end"))

    def graph(**wait: object) -> Graph:
        return Graph(
            initial="w",
            states={"w": State(edges=edges, **wait), "end": State(terminal="succeeded")},
        )  # type: ignore[arg-type]

    assert graph(wait_for="go", on_signal="a", payload=Reply).state("w").payload is not None
    refused = {
        "names no on_signal edge": {"wait_for": "go"},
        "on_signal 'c' is not one of its edges": {"wait_for": "go", "on_signal": "c"},
        "timeout_s and on_timeout go together": {
            "wait_for": "go",
            "on_signal": "a",
            "timeout_s": 5.0,
        },
        "need wait_for=": {"on_signal": "a", "safe_edge": "a"},
        "signal name": {"wait_for": "no.dots", "on_signal": "a"},
    }
    for words, wait in refused.items():
        with pytest.raises(GraphError, match=words):
            graph(**wait)
