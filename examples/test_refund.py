"""The refund example's tests (actors/examples/refund.py), each a whole job in this
process: `actors.testing.run_job` runs the agent, the tools through the idempotency
ledger (in a temporary file) and the verifier, with the supervisor's own rules."""

from __future__ import annotations

import sqlite3

from actors.examples.refund import RefundAgent, RefundChecks, RefundTools
from actors.testing import JobRun, ScriptedLLM, assert_path, run_job

ACTORS = {"tools": [RefundTools], "verifiers": [RefundChecks]}


def refunds(run: JobRun) -> list[tuple[str, float]]:
    """What the example's bank (a file in the run's home) paid out."""
    with sqlite3.connect(run.home / "refunds.sqlite3") as bank:
        return bank.execute("SELECT order_id, amount FROM refunds").fetchall()


async def test_a_refund_that_qualifies_is_paid_once_and_checked() -> None:
    run = await run_job(
        RefundAgent, {"order_id": "A-1001", "amount": 25.0, "reason": "x"}, **ACTORS
    )
    assert_path(run, ["triage", "review", "refunding", "done"])
    assert run.status == "succeeded"
    assert refunds(run) == [("A-1001", 25.0)]
    [verdict] = run.events("verdict")
    assert verdict.data["passed"]


async def test_more_than_the_order_total_is_denied_and_nothing_moves() -> None:
    run = await run_job(
        RefundAgent, {"order_id": "A-1004", "amount": 5000.0, "reason": "x"}, **ACTORS
    )
    assert_path(run, ["triage", "review", "denied"])
    assert not (run.home / "refunds.sqlite3").exists()


async def test_a_large_refund_waits_for_a_person_who_approves_it() -> None:
    run = await run_job(
        RefundAgent, {"order_id": "A-1001", "amount": 650.0, "reason": "x"}, **ACTORS
    )
    assert run.status == "waiting_human"
    assert run.escalation is not None and run.escalation.edges == ["approve", "close"]
    await run.resolve("approve", note="a loyal customer", by="support lead")
    assert_path(run, ["triage", "review", "human", "refunding", "done"])
    assert refunds(run) == [("A-1001", 650.0)]


async def test_a_model_that_invents_an_amount_is_refused_before_money_moves() -> None:
    model = ScriptedLLM(
        [
            ("lookup", {"order_id": "A-1001"}),
            "approve",
            ("refund", {"order_id": "A-1001", "amount": 99.0}),
        ]
    )
    run = await run_job(
        RefundAgent, {"order_id": "A-1001", "amount": 25.0, "reason": "x"}, llm=model, **ACTORS
    )
    assert run.status == "waiting_human"  # the tool refused: a person looks
    [result] = [e for e in run.events("tool_result") if e.data["tool"] == "issue_refund"]
    assert "more than the 25 the customer asked for" in str(result.data["error"])
    assert not (run.home / "refunds.sqlite3").exists()
