"""The eval statistics against values computed by hand, and their defining properties."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings, strategies as st

from actors.evals.stats import (
    fisher_exact,
    gate,
    pass_hat_curve,
    pass_hat_k,
    sign_test,
    trials_to_decide,
    wilson,
)


def test_wilson_by_hand() -> None:
    # 20/20: center (1 + z²/40) / (1 + z²/20) = 0.91944, half-width 0.08058.
    low, high = wilson(20, 20)
    assert round(low, 3) == 0.839 and high == 1.0
    low, high = wilson(19, 20)
    assert (round(low, 3), round(high, 3)) == (0.764, 0.991)
    low, high = wilson(0, 10)
    assert low == 0.0 and round(high, 3) == 0.278
    assert wilson(0, 0) == (0.0, 1.0)


def test_pass_hat_k_by_hand() -> None:
    # 3 of 5: pass^1 = 3/5, pass^2 = C(3,2)/C(5,2) = 3/10, pass^3 = 1/10, then 0.
    assert pass_hat_curve(3, 5) == [0.6, 0.3, 0.1, 0.0, 0.0]
    assert pass_hat_k(5, 5, 5) == 1.0
    with pytest.raises(ValueError):
        pass_hat_k(6, 5, 1)
    with pytest.raises(ValueError):
        pass_hat_k(3, 5, 6)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=40),
    k=st.integers(min_value=1, max_value=40),
    p=st.floats(min_value=0.0, max_value=1.0),
)
def test_pass_hat_k_is_unbiased_exactly(n: int, k: int, p: float) -> None:
    """Its expectation over Binomial(n, p) successes is p^k, for every n, k <= n, p."""
    k = min(k, n)
    expected = sum(
        math.comb(n, c) * p**c * (1 - p) ** (n - c) * pass_hat_k(c, n, k) for c in range(n + 1)
    )
    assert math.isclose(expected, p**k, rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), p=st.floats(0.05, 0.95))
def test_pass_hat_k_is_unbiased_on_simulated_trials(seed: int, p: float) -> None:
    """Averaged over many simulated evals of 10 Bernoulli trials, pass^3's estimate is
    p^3 within what 20,000 evals allow (five standard errors; the estimate is in [0, 1])."""
    rng = random.Random(seed)
    evals = 20_000
    total = 0.0
    for _ in range(evals):
        c = sum(rng.random() < p for _ in range(10))
        total += pass_hat_k(c, 10, 3)
    assert abs(total / evals - p**3) < 5 * 0.5 / math.sqrt(evals)


@given(n=st.integers(1, 500), data=st.data())
def test_wilson_contains_the_observed_rate_and_stays_in_0_1(n: int, data: st.DataObject) -> None:
    c = data.draw(st.integers(0, n))
    low, high = wilson(c, n)
    assert 0.0 <= low <= c / n <= high <= 1.0


def test_the_gate_passes_fails_and_says_inconclusive_by_the_bound() -> None:
    assert gate(20, 20, 0.8).verdict == "pass"  # lower bound 0.839
    assert gate(20, 20, 0.8).exit_code() == 0
    assert gate(5, 20, 0.8).verdict == "fail"  # upper bound 0.47
    assert gate(5, 20, 0.8).exit_code() == 1
    undecided = gate(9, 10, 0.8)  # [0.596, 0.982] straddles 0.8
    assert undecided.verdict == "inconclusive" and undecided.exit_code() == 3
    # At a rate of 0.9, this many trials put the lower bound at or above 0.8; one fewer not.
    needed = undecided.trials_to_decide
    assert needed is not None and needed > 10
    assert gate(round(0.9 * needed), needed, 0.8).verdict == "pass"
    assert trials_to_decide(8, 10, 0.8) is None  # the rate is the target: nothing decides


def test_fisher_and_sign_by_hand() -> None:
    # 10/10 against 0/10: one table as extreme each side, 2 / C(20, 10).
    assert math.isclose(fisher_exact(10, 10, 0, 10), 2 / math.comb(20, 10))
    assert fisher_exact(5, 10, 5, 10) == 1.0
    # 8 cases better, 0 worse: 2 * (1/2)^8.
    assert math.isclose(sign_test(8, 0), 2 / 256)
    assert sign_test(3, 3) == 1.0 and sign_test(0, 0) == 1.0
