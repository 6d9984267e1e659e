"""The supervisor's rules, without NATS: a job's transitions as pure functions.

A hypothesis walk drives one refund job through its graph with every kind of answer an
actor can give (any edge of the state or one it does not have, tool results that succeed,
fail or come back unknown, verdicts either way), interleaved with stale reports, deadline
checks and a person's resolve; after every transition the job is in a state that can
move: running with exactly one command out, waiting for a person who has been told, or
ended with its final status in the journal. The journal's numbering never skips.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from actors.examples.refund import RefundAgent
from actors.jobs.rules import Rules, forged
from protocols import (
    Budget,
    CancelRequest,
    DeadlineCheck,
    Decision,
    Event,
    ForgedReportError,
    JobSnapshot,
    Names,
    ResolveRequest,
    StartJob,
    ToolResult,
    Verdict,
    decode_as,
)

NAMES = Names("t")
GRAPH = RefundAgent.graph
COMMANDS = (NAMES.agent("refund"), "t.work.tool.", "t.work.verify.")


def new_job(budget: Budget, *, now: float = 1000.0) -> JobSnapshot:
    start = StartJob(
        job_id="j",
        agent="refund",
        input={"order_id": "A-1", "amount": 5.0},
        budget=budget,
        deadline=now + budget.deadline_s if budget.deadline_s else None,
        accepted_at=now,
    )
    rules = Rules(NAMES, now)
    job = rules.new_snapshot(start)
    after = rules.start(job, GRAPH)
    assert after is not None
    return after


def events(job: JobSnapshot) -> list[Event]:
    prefix = NAMES.events(job.job_id)
    return [decode_as(Event, out.data)[0] for out in job.outbox if out.subject == prefix]


def commands(job: JobSnapshot) -> list[str]:
    return [out.subject for out in job.outbox if out.subject.startswith(COMMANDS)]


def check_can_move(job: JobSnapshot, seq_before: int) -> None:
    """Nothing stuck: every job is moved by a command, waits for a person who was told,
    or has ended and said so; and the journal continues where it stopped."""
    seqs = [e.seq for e in events(job)]
    assert seqs == list(range(seq_before + 1, job.event_seq + 1))
    if job.terminal:
        assert events(job)[-1].type == "status" and events(job)[-1].data["status"] == job.status
        assert commands(job) == []
    elif job.status == "waiting_human":
        assert job.escalation is not None
        told = [out for out in job.outbox if out.subject == NAMES.escalations]
        assert told or job.outbox == [], "parked now, and nobody told"
    else:
        assert job.status == "running" and len(commands(job)) == 1, job.outbox


answers = st.lists(
    st.tuples(
        st.sampled_from(["answer", "stale", "deadline", "resolve", "cancel"]),
        st.integers(min_value=0, max_value=9),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(answers, st.sampled_from([Budget(max_steps=4), Budget(deadline_s=5.0), Budget()]))
def test_every_transition_leaves_a_job_that_can_move(
    script: list[tuple[str, int]], budget: Budget
) -> None:
    now = 1000.0
    job = new_job(budget, now=now)
    check_can_move(job, 0)
    resolved = 0  # a person's choice is a step too, and never refused for the step budget
    for what, n in script:
        now += 1.0
        rules = Rules(NAMES, now)
        before = job.model_copy(deep=True)
        after = step(rules, job, what, n)
        if after is None:  # not for this job as it is: nothing changes
            job = before
            continue
        check_can_move(after, before.event_seq)
        if before.terminal:
            raise AssertionError(f"an ended job moved: {what}")
        assert after.step >= before.step
        resolved += what == "resolve"
        assert after.step <= after.budget.max_steps + resolved
        job = after


def step(rules: Rules, job: JobSnapshot, what: str, n: int) -> JobSnapshot | None:
    """One event in the job's life: an actor's answer, a stale one, a timer, a person."""
    match what:
        case "answer":
            return rules.report(job, answer(job, n), GRAPH) if job.phase else None
        case "stale":
            report = Decision(job_id=job.job_id, step=job.step + 1 + n, edge="lookup")
            assert rules.report(job, report, GRAPH) is None
            return None
        case "deadline":
            if job.deadline is None:
                return None
            return rules.deadline(job, GRAPH, DeadlineCheck(job_id=job.job_id, at=job.deadline))
        case "resolve":
            if job.status != "waiting_human" or job.state is None:
                return None
            edges = [edge.name for edge in GRAPH.state(job.state).edges]
            request = ResolveRequest(job_id=job.job_id, edge=edges[n % len(edges)], by="t")
            try:
                return rules.resolve(job, GRAPH, request)
            except Exception as exc:  # a refusal is typed, and changes nothing
                # (no arguments are given: an edge that needs some refuses them)
                assert type(exc).__name__ in ("JobStateError", "SchemaError"), exc
                return None
        case "cancel":
            if job.terminal or n < 8:  # rarely: most walks should get somewhere
                return None
            return rules.cancel(job, CancelRequest(job_id=job.job_id))
    raise AssertionError(what)


def answer(job: JobSnapshot, n: int) -> Decision | ToolResult | Verdict:
    """What the actor of the job's current phase might say: right, wrong or unknown."""
    assert job.state is not None
    if job.phase == "decide":
        edges = [edge.name for edge in GRAPH.state(job.state).edges] + ["no_such_edge"]
        args: dict[str, Any] = {"order_id": "A-1", "amount": 5.0}
        return Decision(job_id=job.job_id, step=job.step, edge=edges[n % len(edges)], args=args)
    edge = GRAPH.state(job.state).edge(job.pending_edge or "")
    assert edge is not None
    if job.phase == "tool":
        assert edge.tool is not None
        error = [None, {"code": "tool_error", "message": "x"}, {"code": "effect_unknown"}][n % 3]
        result = ToolResult(
            job_id=job.job_id,
            step=job.step,
            tool=edge.tool,
            key="k",
            ok=error is None,
            result={"found": True, "total": 50.0} if error is None else None,
            error=error,
        )
        if edge.verifier is not None and result.ok and n % 2:  # through the verifier
            return Verdict(
                job_id=job.job_id,
                step=job.step,
                verifier=edge.verifier,
                passed=n > 4,
                tool_result=result,
            )
        return result
    assert edge.verifier is not None
    return Verdict(job_id=job.job_id, step=job.step, verifier=edge.verifier, passed=n > 4)


def test_a_report_for_another_step_changes_nothing() -> None:
    job = new_job(Budget())
    rules = Rules(NAMES, 1001.0)
    assert rules.report(job, Decision(job_id="j", step=2, edge="lookup"), GRAPH) is None
    assert rules.report(job, Verdict(job_id="j", step=1, verifier="x", passed=True), GRAPH) is None


def test_the_deadline_ends_a_running_job_at_its_time() -> None:
    job = new_job(Budget(deadline_s=5.0))
    assert job.deadline == 1005.0
    ended = Rules(NAMES, 1006.0).deadline(job, GRAPH, DeadlineCheck(job_id="j", at=1005.0))
    assert ended is not None and ended.status == "deadline_exceeded"
    assert "passed (6.0 s after it started)" in (ended.error or {})["message"]


def refunding_job() -> JobSnapshot:
    """A refund job whose `issue_refund` call is out (phase `tool`, step 3)."""
    return JobSnapshot(
        job_id="j1",
        agent="refund",
        status="running",
        state="refunding",
        step=3,
        phase="tool",
        input=RefundAgent.example_input,
        path=["triage", "review", "refunding"],
        pending_edge="refund",
        pending_args={"order_id": "A-1001", "amount": 25.0},
    )


def failed(code: str, message: str) -> ToolResult:
    """The refund tool's report of a call that failed with `code`."""
    error = {"code": code, "message": message}
    return ToolResult(job_id="j1", step=3, tool="issue_refund", key="k", ok=False, error=error)


def test_an_unknown_effect_parks_the_job_for_a_person() -> None:
    """`effect_unknown` sends the job to waiting_human with the reason, and nothing runs."""
    rules = Rules(NAMES, 1000.0)
    job = rules.tool_done(refunding_job(), GRAPH, failed("effect_unknown", "died mid-call"))
    assert (job.status, job.state, job.phase) == ("waiting_human", "refunding", None)
    assert job.error is not None and job.error["code"] == "effect_unknown"
    [tool_result, status] = events(job)
    assert tool_result.type == "tool_result" and status.type == "status"
    assert "not run again" in status.data["reason"]
    assert commands(job) == []  # no next command


def test_an_ordinary_tool_failure_takes_the_fail_edge() -> None:
    job = Rules(NAMES, 1000.0).tool_done(refunding_job(), GRAPH, failed("tool_error", "no"))
    assert (job.status, job.state) == ("waiting_human", "human")  # the state's safe edge


def test_a_job_that_stops_waiting_for_its_call_says_to_stop_it() -> None:
    """A cancel, the deadline or a person's resolve while a call is out: the transition
    carries a `ToolCancel` for its tool; one that waits for no call carries none."""
    cancelled = Rules(NAMES, 1000.0).cancel(refunding_job(), CancelRequest(job_id="j1"), GRAPH)
    [cancel] = cancelled.cancels
    assert (cancel.job_id, cancel.step, cancel.tool) == ("j1", 3, "issue_refund")
    assert cancel.reason == "the job was cancelled: cancelled by request"
    timed = refunding_job()
    timed.budget, timed.deadline = Budget(deadline_s=5.0), 1005.0
    ended = Rules(NAMES, 1006.0).deadline(timed, GRAPH, DeadlineCheck(job_id="j1", at=1005.0))
    assert ended is not None and [c.tool for c in ended.cancels] == ["issue_refund"]
    thinking = new_job(Budget())
    assert Rules(NAMES, 1001.0).cancel(thinking, CancelRequest(job_id="j"), GRAPH).cancels == []
    assert "cancels" not in cancelled.model_dump()  # told once, never stored


def test_a_call_the_executor_cut_at_the_deadline_ends_the_job_by_its_deadline() -> None:
    """The executor may see the deadline pass before the supervisor's timer fires: its
    `cancelled` result naming the job's deadline ends the job as the timer would, not by
    the edge's failure path; a `cancelled` result naming another deadline is a failure."""
    job = refunding_job()
    job.budget, job.deadline = Budget(deadline_s=5.0), 1005.0
    result = failed("cancelled", "the job's deadline passed while the call ran")
    assert result.error is not None
    result.error["deadline"] = 1005.0
    ended = Rules(NAMES, 1005.0).tool_done(job, GRAPH, result)
    assert ended.status == "deadline_exceeded"
    assert [e.type for e in events(ended)] == ["tool_result", "budget", "status"]
    other = refunding_job()
    other.deadline = 2000.0
    assert Rules(NAMES, 1005.0).tool_done(other, GRAPH, result).state == "human"


def test_a_report_from_anyone_but_the_step_s_actor_is_refused_as_forged() -> None:
    """The sender a report's subject names must be the one the current step waits for: the
    job's agent decides, the edge's tool (or its verifier) reports the call; a report for
    another step stays merely stale, whoever sent it."""
    rules = Rules(NAMES, 1000.0)
    deciding = new_job(Budget())
    decision = Decision(job_id="j", step=1, edge="lookup")
    with pytest.raises(
        ForgedReportError, match=r"from tool 'issue_refund', but that step waits for agent 'refund'"
    ):
        rules.report(deciding, decision, GRAPH, sender=("tool", "issue_refund"))
    with pytest.raises(ForgedReportError, match="from agent 'refund-llm'"):
        rules.report(deciding, decision, GRAPH, sender=("agent", "refund-llm"))
    assert rules.report(deciding, decision, GRAPH, sender=("agent", "refund")) is not None
    stale = Decision(job_id="j", step=7, edge="lookup")
    assert rules.report(deciding, stale, GRAPH, sender=("tool", "issue_refund")) is None

    result = failed("tool_error", "no")
    with pytest.raises(ForgedReportError, match="waits for tool 'issue_refund' or verify"):
        rules.report(refunding_job(), result, GRAPH, sender=("tool", "lookup_order"))
    assert rules.report(refunding_job(), result, GRAPH, sender=("tool", "issue_refund"))


def test_a_verdict_relaying_another_call_s_result_is_refused_as_forged() -> None:
    """A verifier checks whatever an executor hands it: the tool result a verdict relays
    must be of the job's current step and the tool its edge calls, else the verdict is
    forged (another job's result, another tool's, another step's)."""
    rules = Rules(NAMES, 1000.0)
    good = ToolResult(job_id="j1", step=3, tool="issue_refund", key="k", ok=True, result={})
    relays = [
        good.model_copy(update={"job_id": "j2"}),  # another job's
        good.model_copy(update={"tool": "lookup_order"}),  # another tool's
        good.model_copy(update={"step": 2}),  # another step's
    ]
    for result in relays:
        verdict = Verdict(
            job_id="j1", step=3, verifier="refund_matches", passed=True, tool_result=result
        )
        with pytest.raises(ForgedReportError, match="relays a result of tool"):
            rules.report(refunding_job(), verdict, GRAPH, sender=("verify", "refund_matches"))
    verdict = Verdict(job_id="j1", step=3, verifier="refund_matches", passed=True, tool_result=good)
    done = rules.report(refunding_job(), verdict, GRAPH, sender=("verify", "refund_matches"))
    assert done is not None and done.state == "done"


def test_a_message_must_come_from_whom_it_claims() -> None:
    """Before any job is read: a command only on the supervisor's own subject, a report
    only on a subject naming the actor the report says made it."""
    start = StartJob(job_id="j", agent="refund", input={}, budget=Budget(), accepted_at=1.0)
    assert forged(start, None) is None
    assert "only a supervisor" in (forged(start, ("agent", "refund")) or "")
    decision = Decision(job_id="j", step=1, edge="lookup")
    assert forged(decision, ("agent", "refund")) is None
    assert "names its sender" in (forged(decision, None) or "")
    assert "sent as tool" in (forged(decision, ("tool", "refund")) or "")
    result = failed("tool_error", "no")
    assert forged(result, ("tool", "issue_refund")) is None
    assert "sent as tool 'lookup_order'" in (forged(result, ("tool", "lookup_order")) or "")
    verdict = Verdict(job_id="j", step=1, verifier="refund_matches", passed=True)
    assert "sent as verify 'other'" in (forged(verdict, ("verify", "other")) or "")


def test_a_result_that_comes_after_a_cancel_is_journaled_not_dropped() -> None:
    """A job cancelled while its call is out stays cancelled, but the call's result, when
    it comes (the money moved), is journaled once, marked late; a result saying the call
    never started is not (nothing happened), and neither is a repeat."""
    rules = Rules(NAMES, 1000.0)
    cancelled = rules.cancel(refunding_job(), CancelRequest(job_id="j1"), GRAPH)
    assert cancelled.status == "cancelled" and cancelled.abandoned is not None
    never = failed("cancelled", "told to stop first")
    assert never.error is not None
    never.error["started"] = False
    assert rules.report(cancelled.model_copy(deep=True), never, GRAPH) is None
    ran = ToolResult(job_id="j1", step=3, tool="issue_refund", key="k", ok=True, result={"id": 1})
    later = rules.report(cancelled, ran, GRAPH, sender=("tool", "issue_refund"))
    assert later is not None and later.status == "cancelled"
    [event] = events(later)
    assert (event.type, event.data["late"], event.data["result"]) == (
        "tool_result",
        True,
        {"id": 1},
    )
    assert rules.report(later, ran, GRAPH) is None  # once


def test_a_safe_edge_taken_because_no_provider_answered_tells_the_person_so() -> None:
    """An outage's safe edge that leads to a state for a person parks the job as
    `provider_down`, with the providers' words, not as a routine hand-off; a wrong
    answer's safe edge to the same state stays a `human_state` hand-off."""
    words = "no provider answered: local: ClientConnectorError: Cannot connect to host"
    down = Decision(job_id="j", step=1, edge="escalate", fallback=True, outage=True, reason=words)
    parked = Rules(NAMES, 1001.0).report(new_job(Budget()), down, GRAPH)
    assert parked is not None and parked.escalation is not None
    assert (parked.status, parked.escalation.kind) == ("waiting_human", "provider_down")
    assert words in parked.escalation.reason and "'escalate'" in parked.escalation.reason

    wrong = down.model_copy(update={"outage": False, "reason": "not an edge: 'fly'"})
    handed = Rules(NAMES, 1001.0).report(new_job(Budget()), wrong, GRAPH)
    assert handed is not None and handed.escalation is not None
    assert handed.escalation.kind == "human_state"
