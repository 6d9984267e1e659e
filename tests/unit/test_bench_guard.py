"""The CPU guard (scripts/bench --quick --guard) fails past its recorded margin, and
passes within it."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.bench import guard


def test_the_guard_fails_past_the_recorded_margin(tmp_path: Path) -> None:
    recorded = tmp_path / "benchmarks.json"
    recorded.write_text(json.dumps({"guard": {"cpu_in_floor_messages": 40.0, "margin": 0.3}}))
    assert guard(40.0, recorded) == 0
    assert guard(52.0, recorded) == 0  # 30% over: the edge of the margin
    assert guard(52.5, recorded) == 1
    assert guard(10.0, tmp_path / "nothing.json") == 1  # no value recorded: say so


def test_the_recorded_value_is_in_docs() -> None:
    guard_of = json.loads((Path(__file__).parents[2] / "docs" / "benchmarks.json").read_text())
    assert guard_of["guard"]["cpu_in_floor_messages"] > 0 and guard_of["guard"]["margin"] > 0
