"""A hypothesis state machine over the ledger's decisions: at most one effect per key.

Executors claim one key, run (or crash during) a side-effecting tool, and record the
outcome, while time passes and leases run out. Whatever the interleaving, the effect
happens at most once, records only move along legal transitions, and epochs only grow.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors._ledger import (
    LedgerRecord,
    _ClaimOp,
    _FinishOp,
    _ResolveOp,
    decide_claim,
    decide_finish,
    decide_resolve,
)

KEY = "k"
LEGAL = {
    None: {"in_progress"},
    "in_progress": {"in_progress", "succeeded", "failed", "unknown"},
    "failed": {"in_progress", "failed"},  # only a retryable failure is claimed again
    # A side-effecting call in doubt is never run again blindly: only a reconcile settles it.
    "unknown": {"unknown", "succeeded", "in_progress"},
    "succeeded": {"succeeded"},
}


@dataclass
class Run:
    """An executor holding a claim: it may do the effect, then record it, or die."""

    epoch: int
    did_effect: bool = False


class LedgerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.record: LedgerRecord | None = None
        self.now = 1_000.0
        self.runs: list[Run] = []
        self.effects = 0
        self.epochs: list[int] = []

    def _apply(self, new: LedgerRecord | None) -> None:
        if new is None:
            return
        before = self.record.state if self.record else None
        assert new.state in LEGAL[before], f"{before} -> {new.state}"
        if self.record is not None:
            assert new.epoch >= self.record.epoch
            if before == "failed":
                assert self.record.retryable, "a final failure was claimed again"
        self.record = new

    @rule(lease=st.sampled_from([0.5, 5.0, 60.0]))
    def claim(self, lease: float) -> None:
        op = _ClaimOp(KEY, "job", "refund", "h", lease, side_effects=True)
        claim, new = decide_claim(self.record, op, owner="x", now=self.now)
        self._apply(new)
        if claim.outcome == "claimed":
            self.epochs.append(claim.epoch)
            self.runs.append(Run(claim.epoch))

    @precondition(lambda self: any(not r.did_effect for r in self.runs))
    @rule(data=st.data())
    def do_effect(self, data: st.DataObject) -> None:
        run = data.draw(st.sampled_from([r for r in self.runs if not r.did_effect]))
        run.did_effect = True
        self.effects += 1

    @precondition(lambda self: bool(self.runs))
    @rule(data=st.data(), outcome=st.sampled_from(["succeeded", "final", "retryable"]))
    def finish(self, data: st.DataObject, outcome: str) -> None:
        run = data.draw(st.sampled_from(self.runs))
        if outcome == "retryable" and run.did_effect:
            outcome = "final"  # a tool may only call a failure retryable if nothing happened
        state = "succeeded" if outcome == "succeeded" else "failed"
        op = _FinishOp(
            KEY,
            run.epoch,
            state,
            {"ok": 1} if state == "succeeded" else None,
            None if state == "succeeded" else {"code": "x"},
            outcome == "retryable",
        )
        _done, new = decide_finish(self.record, op, now=self.now)
        self._apply(new)
        self.runs.remove(run)

    @precondition(lambda self: not self.runs and self.record and self.record.state == "unknown")
    @rule()
    def reconcile(self) -> None:
        """Every executor that held the key is dead; the outside world says what happened."""
        assert self.record is not None
        op = _ResolveOp(KEY, self.record.epoch, self.effects > 0, {"ok": 1}, 5.0)
        claim, new = decide_resolve(self.record, op, owner="y", now=self.now)
        self._apply(new)
        if claim.outcome == "claimed":
            self.epochs.append(claim.epoch)
            self.runs.append(Run(claim.epoch))

    @precondition(lambda self: bool(self.runs))
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        self.runs.remove(data.draw(st.sampled_from(self.runs)))

    @rule(seconds=st.sampled_from([0.1, 1.0, 10.0, 100.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def the_effect_happens_at_most_once(self) -> None:
        assert self.effects <= 1

    @invariant()
    def epochs_grow(self) -> None:
        assert self.epochs == sorted(set(self.epochs))


LedgerModel.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestLedgerModel = LedgerModel.TestCase
