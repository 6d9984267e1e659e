"""The statistics of an eval: an agent's success rate is estimated from repeated trials,
with a confidence bound, and a gate decides on the bound, not on the sample.

Pure functions, no I/O:

- `pass_hat_k(c, n, k)`: the unbiased estimator of pass^k, the chance that k independent
  trials all succeed, from c successes in n trials: C(c, k) / C(n, k) (tau-bench's).
- `wilson(c, n)`: the Wilson score interval of the success rate (95% by default), which
  keeps its coverage at 0 and n successes, where the normal approximation collapses.
- `gate(c, n, target)`: `pass` when the interval's lower bound is at or above the target,
  `fail` when its upper bound is below it, `inconclusive` when it straddles it, with the
  number of trials that would decide at the observed rate.
- `fisher_exact(...)` for one case against its baseline, `sign_test(...)` for a suite of
  cases against theirs (paired by case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Z_95 = 1.959963984540054  # the 97.5th percentile of the standard normal
MAX_TRIALS = 1_000_000  # beyond this, "trials to decide" is reported as None

Verdict = Literal["pass", "fail", "inconclusive"]


def pass_hat_k(c: int, n: int, k: int) -> float:
    """The unbiased estimate of pass^k from `c` successes in `n` trials (1 <= k <= n)."""
    _check(c, n)
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and n={n}, not {k}")
    return math.comb(c, k) / math.comb(n, k)


def pass_hat_curve(c: int, n: int) -> list[float]:
    """pass^k for k = 1..n."""
    return [pass_hat_k(c, n, k) for k in range(1, n + 1)]


def wilson(c: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of the success rate, from `c` successes in `n` trials."""
    _check(c, n)
    if n == 0:
        return 0.0, 1.0
    low, high = wilson_at(c / n, n, z)
    # Exact at the ends (rounding could leave 1e-17 or 0.9999999999999999 there).
    return (0.0 if c == 0 else low), (1.0 if c == n else high)


def wilson_at(rate: float, n: float, z: float = Z_95) -> tuple[float, float]:
    """The Wilson interval of a rate observed over `n` trials."""
    z2 = z * z
    denominator = 1 + z2 / n
    center = (rate + z2 / (2 * n)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True, slots=True)
class Gate:
    verdict: Verdict
    low: float
    high: float
    trials_to_decide: int | None  # at the observed rate; None when it never would

    def exit_code(self) -> int:
        """0 pass, 1 fail, 3 inconclusive (2 is the CLI's usage error)."""
        return {"pass": 0, "fail": 1, "inconclusive": 3}[self.verdict]


def gate(c: int, n: int, target: float, z: float = Z_95) -> Gate:
    """Pass when the lower bound reaches `target`, fail when the upper bound is below it,
    else inconclusive, saying how many trials would decide if the rate stays as seen."""
    if not 0 < target < 1:
        raise ValueError(f"target must be between 0 and 1, not {target}")
    low, high = wilson(c, n, z)
    if low >= target:
        return Gate("pass", low, high, None)
    if high < target:
        return Gate("fail", low, high, None)
    return Gate("inconclusive", low, high, trials_to_decide(c, n, target, z))


def trials_to_decide(c: int, n: int, target: float, z: float = Z_95) -> int | None:
    """The fewest trials whose interval would exclude `target`, were the success rate
    c/n exactly; None if none would (the rate is the target, or no trials yet)."""
    if n == 0:
        return None
    rate = c / n

    def decides(trials: int) -> bool:
        low, high = wilson_at(rate, trials, z)
        return low >= target or high < target

    if not decides(MAX_TRIALS):
        return None
    low_n, high_n = n, MAX_TRIALS  # decides(high_n) holds; find the first that does
    while low_n < high_n:
        middle = (low_n + high_n) // 2
        if decides(middle):
            high_n = middle
        else:
            low_n = middle + 1
    return low_n


def fisher_exact(c1: int, n1: int, c2: int, n2: int) -> float:
    """The two-sided p-value of Fisher's exact test that two success rates are equal
    (c1 of n1 against c2 of n2): the probability, with the margins fixed, of a table at
    most as likely as the one seen."""
    _check(c1, n1)
    _check(c2, n2)
    successes, total = c1 + c2, n1 + n2

    def probability(a: int) -> float:
        return math.comb(n1, a) * math.comb(n2, successes - a) / math.comb(total, successes)

    seen = probability(c1)
    lowest, highest = max(0, successes - n2), min(successes, n1)
    p = sum(
        probability(a) for a in range(lowest, highest + 1) if probability(a) <= seen * (1 + 1e-9)
    )
    return min(1.0, p)


def sign_test(better: int, worse: int) -> float:
    """The two-sided exact sign test (a binomial test at 1/2) of `better` cases against
    `worse` ones; ties are left out before calling."""
    n = better + worse
    if n == 0:
        return 1.0
    k = min(better, worse)
    tail: float = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2 * tail)


def _check(c: int, n: int) -> None:
    if n < 0 or not 0 <= c <= n:
        raise ValueError(f"successes must be between 0 and trials, not {c} of {n}")
