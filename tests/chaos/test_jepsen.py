"""The Jepsen harness's short run: Rig on three hosts (network namespaces), a few hundred
jobs under every kind of fault, the history checked against Rig's promises
(tests/jepsen, docs/design/jepsen.md). The long runs are `scripts/jepsen --time 30m`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.jepsen.checker import check_folder
from tests.jepsen.hosts import NETNS_DIR, PREFIX, can_make_hosts
from tests.jepsen.nemesis import KINDS
from tests.jepsen.run import Options, run

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SEED = 20261207  # the plan's; a failing run is replayed with `scripts/jepsen --replay DIR`


async def test_a_short_run_under_every_fault_keeps_every_promise(tmp_path: Path) -> None:
    why = can_make_hosts()
    assert why is None, why
    folder = tmp_path / "run"
    verdict = await run(Options(SEED, seconds=60.0, rate=4.0, settle_s=90.0), folder)
    print(f"\njepsen: {verdict.summary()}\nsaved in {folder}")
    assert verdict.valid, f"{verdict.summary()}; the run is in {folder}"
    counts = verdict.counts
    assert counts["faults"] >= len(KINDS)  # every kind at least once
    # Real work, however many of the submits the faults turned away (a loaded machine's
    # run made 156 jobs, an idle one's about 250).
    assert counts["jobs"] >= 50 and counts["payments"] >= 50, counts
    for done in ("resolve ok", "signal ok"):
        assert counts.get(done, 0) > 0, counts  # each kind of operation took effect
    assert sum(n for what, n in counts.items() if what.startswith("cancel ")) > 0, counts
    assert check_folder(folder).as_json() == verdict.as_json()  # the saved run says the same
    assert not list(NETNS_DIR.glob(f"{PREFIX}{os.getpid()}-*"))  # the hosts are gone
