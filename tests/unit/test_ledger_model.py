"""A hypothesis state machine over the ledger's decisions: at most one effect per key.

Executors claim one key, run (or crash during, or pause in) a side-effecting tool, and
record the outcome, while time passes and leases run out. The bad interleavings are in:
a holder paused past its lease while another reconciles and runs the call again; a
failure reported before or after the effect, retryable or not; a completion arriving
after its record turned `unknown`. Whatever the interleaving, the effect happens at most
once, records only move along legal transitions, and epochs only grow.

What the model assumes of the executor, as `actors.tools.executor` does it: right before the
effect a run checks that its claim still holds (state, epoch, lease), and the check and
the effect are not separated by a pause longer than the lease (docs/design/ledger.md: a tool
whose downstream honours the idempotency key does not need even that); a side-effecting
tool's retryable failure makes the record `unknown`, never claimable again blindly.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors.tools.decisions import (
    ClaimOp,
    FinishOp,
    LedgerRecord,
    ResolveOp,
    decide_claim,
    decide_finish,
    decide_resolve,
)

KEY = "k"
LEGAL = {
    None: {"in_progress"},
    "in_progress": {"in_progress", "succeeded", "failed", "unknown"},
    "failed": {"in_progress", "failed"},  # only a retryable failure is claimed again
    # A side-effecting call in doubt is never run again blindly: a reconcile settles it, or
    # the late outcome of the run that was in doubt (success, or a final failure).
    "unknown": {"unknown", "succeeded", "in_progress", "failed"},
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
        op = ClaimOp(KEY, "job", "refund", "h", lease, side_effects=True)
        claim, new = decide_claim(self.record, op, owner="x", now=self.now)
        self._apply(new)
        if claim.outcome == "claimed":
            self.epochs.append(claim.epoch)
            self.runs.append(Run(claim.epoch))

    @precondition(lambda self: any(not r.did_effect for r in self.runs))
    @rule(data=st.data())
    def do_effect(self, data: st.DataObject) -> None:
        """A run about to act checks its claim first; a run whose claim is gone stops."""
        run = data.draw(st.sampled_from([r for r in self.runs if not r.did_effect]))
        record = self.record
        still_ours = (
            record is not None
            and record.state == "in_progress"
            and record.epoch == run.epoch
            and record.lease_until > self.now
        )
        if not still_ours:
            self.runs.remove(run)  # fenced before the effect: it reports nothing
            return
        run.did_effect = True
        self.effects += 1

    @precondition(lambda self: bool(self.runs))
    @rule(data=st.data(), outcome=st.sampled_from(["succeeded", "final", "retryable"]))
    def finish(self, data: st.DataObject, outcome: str) -> None:
        """The run reports, whether or not it acted, possibly long after its lease.

        A retryable failure of a side-effecting tool may come after the effect (a read
        timeout after the payment went through): the executor records it as `unknown`.
        """
        run = data.draw(st.sampled_from(self.runs))
        state = {"succeeded": "succeeded", "final": "failed", "retryable": "unknown"}[outcome]
        op = FinishOp(
            KEY,
            run.epoch,
            state,
            {"ok": 1} if state == "succeeded" else None,
            None if state == "succeeded" else {"code": "x"},
            False,
        )
        _done, new = decide_finish(self.record, op, now=self.now)
        self._apply(new)
        self.runs.remove(run)

    @precondition(lambda self: self.record is not None and self.record.state == "unknown")
    @rule()
    def reconcile(self) -> None:
        """The outside world says what happened, so far: holders may still be alive
        (paused), and may wake up after it."""
        assert self.record is not None
        op = ResolveOp(KEY, self.record.epoch, self.effects > 0, {"ok": 1}, 5.0)
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


def test_a_holder_paused_past_its_lease_does_not_act_after_a_reconcile() -> None:
    """Finding 8, step by step: run 1 claims and pauses; its lease runs out; a repeat finds
    the call `unknown`; reconcile finds no effect and starts run 2, which pays; run 1
    wakes up and must not pay too. (Without the check before the effect: two payments.)"""
    model = LedgerModel()
    model.claim(lease=0.5)
    model.time_passes(seconds=1.0)
    model.claim(lease=0.5)
    assert model.record is not None and model.record.state == "unknown"
    model.reconcile()
    first, second = model.runs
    assert (first.epoch, second.epoch) == (1, 2)
    model.do_effect(_Given(second))
    model.do_effect(_Given(first))
    assert model.effects == 1 and first not in model.runs


def test_a_retryable_failure_after_the_effect_is_not_run_again() -> None:
    """Finding 9, step by step: the run pays, then reports a retryable failure; the next
    claim finds the call `unknown`, and reconcile says it happened: one payment."""
    model = LedgerModel()
    model.claim(lease=60.0)
    [run] = model.runs
    model.do_effect(_Given(run))
    model.finish(_Given(run), outcome="retryable")
    model.claim(lease=60.0)
    assert model.runs == [] and model.record is not None and model.record.state == "unknown"
    model.reconcile()
    assert model.record.state == "succeeded" and model.effects == 1


class _Given:
    """Stands in for hypothesis's `data` in the step-by-step tests: draws `value`."""

    def __init__(self, value: object) -> None:
        self.value = value

    def draw(self, _strategy: object) -> object:
        return self.value
