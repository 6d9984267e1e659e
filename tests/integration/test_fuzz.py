"""Hostile input: a sample of scripts/fuzz (the full study, 120,000 inputs, is in
docs/design/security.md): every decoder and every subject of a live, secured deployment, with
no crash, every request answered, and every process still serving afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration]


def test_a_sample_of_hostile_inputs_crashes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    done = subprocess.run(
        [sys.executable, "scripts/fuzz.py", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={
            **{k: v for k, v in os.environ.items() if k != "RIG_NATS_URL"},
            "RIG_HOME": str(tmp_path / "home"),
        },
    )
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads(out.read_text())
    assert record["ok"] and record["inputs"] >= 1_000
    decoders, subjects = record["decoders"], record["subjects"]
    assert decoders["crashes"] == [] and decoders["decoders"] >= 17
    assert {"schema_error", "decode_error"} <= set(decoders["outcomes"])
    assert subjects["api_unanswered"] == 0 and subjects["api_requests"] > 50
    assert subjects["processes_before"] == subjects["processes_after"]
    assert len(subjects["processes_after"]) == 4
    assert subjects["refund_example_after"] == "succeeded"
