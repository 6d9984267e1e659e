"""pytest integration of `rig eval` (registered as the `rig` pytest plugin).

A test marked `rig_eval` runs an eval suite against the Rig the environment names
(`RIG_NATS_URL`, `RIG_PREFIX`) and fails unless the gate passes:

    @pytest.mark.rig_eval(suite="evals/refund.toml", trials=20, target=0.9)
    def test_refunds(rig_eval):  # the fixture is optional: the report, if wanted
        assert rig_eval.reports[0].infra == 0

or asks for the `rig_eval` fixture to run suites itself and look at the report:

    def test_refunds(rig_eval):
        report = rig_eval.run("evals/refund.toml", trials=20, target=0.9)
        assert report.cases[0].passed >= 18

Either way an inconclusive gate fails the test too: it is not a pass.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from actors._client import RigClient
from actors._config import RigConfig
from actors._evals import Report, load_suite, render, report, run_seed, run_trials


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "rig_eval(suite, trials=None, target=None, concurrency=None, seed=None): run a Rig "
        "eval suite "
        "and fail unless its gate passes",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:  # a marked test runs its suite even if it asks for no fixture
        if item.get_closest_marker("rig_eval") and "rig_eval" not in getattr(
            item, "fixturenames", ["rig_eval"]
        ):
            item.fixturenames.append("rig_eval")  # type: ignore[attr-defined]


class RigEval:
    """Runs suites against the Rig of the environment; fails the test on the gate."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    def run(
        self,
        suite: str,
        *,
        trials: int | None = None,
        target: float | None = None,
        concurrency: int | None = None,
        seed: int | None = None,
    ) -> Report:
        loaded = load_suite(str(suite))
        goal = target if target is not None else loaded.target
        seed = run_seed(loaded, seed)

        async def go() -> Report:
            rig = await RigClient.connect(RigConfig.from_env())
            try:
                done = await run_trials(
                    rig,
                    loaded,
                    trials=trials or loaded.trials,
                    concurrency=concurrency or loaded.concurrency,
                    seed=seed,
                )
            finally:
                await rig.close()
            return report(loaded, done, goal, seed=seed)

        # In a thread of its own: the test may be running an event loop already.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            result = pool.submit(asyncio.run, go()).result()
        self.reports.append(result)
        if result.gate is not None and result.gate.verdict != "pass":
            pytest.fail(f"rig eval {suite}: {result.gate.verdict}\n{render(result)}", False)
        return result


@pytest.fixture
def rig_eval() -> RigEval:
    """Runs suites against the Rig of the environment (`.run(suite, ...)`); for a test
    marked `rig_eval(...)`, `.reports[0]` is that suite's report."""
    return RigEval()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """A marked test's suite runs as the test itself runs (a failed gate is a failed
    test, not an error in its set-up), before the test's own body."""
    marker = item.get_closest_marker("rig_eval")
    if marker is None:
        return
    options = dict(marker.kwargs)
    suite = options.pop("suite", marker.args[0] if marker.args else None)
    if suite is None:
        pytest.fail("@pytest.mark.rig_eval needs suite=PATH (a TOML file or MODULE[:ATTR])")
    runner = item.funcargs["rig_eval"]  # type: ignore[attr-defined]
    runner.run(suite, **options)
