"""At most once for an MCP tool with side effects while processes are SIGKILLed.

Jobs of `FileAgent` each write a file of their own through the filesystem server
(@modelcontextprotocol/server-filesystem, npm), served by two executor processes whose
server is behind a wire tap (tests/support/mcp_tap.py) that notes each `tools/call`
as it reaches a server. A killer SIGKILLs the executors (and their servers with them),
the agent and the supervisor at random; `rig up` restarts them. Every job ends or
waits for a person; each file's write reached a server at most once, exactly once for
a job that succeeded; a job whose write may have happened waits for a person, saying so.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from actors.testing import Deployment
from protocols import Event
from tests.conftest import submit_surely
from tests.support.killer import Killer, first_ready

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

JOBS = 30
ACTORS = {
    "actors:Supervisor": 1,
    "tests.support.mcp_agents:FileAgent": 1,
    "tests.support.mcp_agents:TappedFileTools": 2,
}


async def settled(rig: Deployment, jobs: list[str], timeout: float) -> dict[str, list[Event]]:
    """Each job's journal, read until it ended or waits for a person."""
    found: dict[str, list[Event]] = {}
    for job in jobs:
        found[job] = [
            event async for event in rig.client.events(job, timeout=timeout, until_parked=True)
        ]
    return found


async def test_mcp_writes_happen_at_most_once_while_processes_are_killed(
    rig: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, tap = rig.home / "files", rig.home / "tap.jsonl"
    files.mkdir()
    for name, value in (("RIG_TEST_FILES", str(files)), ("RIG_TEST_TAP", str(tap))):
        monkeypatch.setenv(name, value)
        rig.extra_env[name] = value
    ready = await rig.nc.subscribe(rig.names.actor_ready)
    up = await rig.rig_up(ACTORS)
    try:
        live = await first_ready(ready, sum(ACTORS.values()))
        killing = Killer(ready, live, random.Random(7), most=10, pause=(0.2, 0.8), every_kind=True)
        jobs = [f"write-{n}" for n in range(JOBS)]
        async with killing:
            for n, job in enumerate(jobs):
                body = {"path": str(files / f"{job}.txt"), "content": job}
                await submit_surely(rig, "filer", body, job)
                if n % 5 == 4:  # a kill mid-run, however fast the machine
                    killing.kill_one()
            stories = await settled(rig, jobs, timeout=rig.within(16 * (rig.ack_wait + 2), 120))
        assert len(killing.kills) >= 5, killing.kills
        writes = Counter(
            Path(call["arguments"]["path"]).stem
            for call in map(json.loads, tap.read_text().splitlines())
            if call["name"] == "write_file"
        )
        assert {job: n for job, n in writes.items() if n > 1} == {}  # none written twice
        ends: Counter[str] = Counter()
        for job, story in stories.items():
            status = [e for e in story if e.type == "status"][-1].data
            ends[status["status"]] += 1
            if status["status"] == "succeeded":
                assert writes[job] == 1 and (files / f"{job}.txt").read_text() == job
            else:  # its write may have happened: a person is told, not the write repeated
                assert status["status"] == "waiting_human", status
                assert status["kind"] == "effect_unknown", status
                assert "may or may not have run" in status["reason"]
        assert ends["succeeded"] >= JOBS // 2, ends
        print(f"\nmcp chaos: kills {dict(Counter(killing.kills))}, ends {dict(ends)}")
    finally:
        up.terminate()
        await up.wait()
