"""A job runs on the version of its agent's graph it started with, or moves to a newer
one by the migration rule (a state of the same name, or its new name in `renamed`)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from actors.testing import Deployment
from protocols import Graph
from tests.chaos.test_stuck import short_timings
from tests.integration.test_cli import rig_cli
from tests.integration.test_supervision import journal_until
from tests.support.versions import DeployV1, DeployV2, DeployV3

pytestmark = pytest.mark.integration


def test_a_graph_version_is_its_content() -> None:
    assert DeployV1.graph.version == Graph.model_validate(DeployV1.graph.model_dump()).version
    assert len({DeployV1.graph.version, DeployV2.graph.version, DeployV3.graph.version}) == 3
    renamed = DeployV2.renamed
    assert DeployV2.graph.migration_target("review", renamed) == "check"
    assert DeployV2.graph.migration_target("done", renamed) is None  # not decided by an LLM
    assert DeployV3.graph.migration_target("review", DeployV3.renamed) is None


async def deployed_mid_step(rig: Deployment, new: str) -> str:
    """Submit a job to v1 and, while its tool call waits (no executor runs yet), replace
    the v1 agent by `new`, as a rolling deploy does; then start the executor."""
    await rig.spawn("actors:Supervisor")
    [v1] = await rig.spawn("tests.support.versions:DeployV1")
    reply = await rig.client.submit("deploy", {})
    async for event in rig.client.events(reply.job_id, timeout=30):
        if event.type == "decision":
            assert event.data["edge"] == "go"
            break
    v1.terminate()
    await asyncio.wait_for(v1.wait(), 30)
    await rig.spawn(new)
    await rig.spawn("tests.support.versions:Gate")
    return reply.job_id


async def test_a_renamed_state_keeps_its_running_jobs(rig: Deployment) -> None:
    """v2 renames both states of the job's path. The tool's result is taken on v1's graph
    (the old code read v2's, where `start` is gone: a dead letter); at the next step the
    job moves to v2, from `review` to `check`, and v2's agent finishes it."""
    job_id = await deployed_mid_step(rig, "tests.support.versions:DeployV2")
    events = await journal_until(rig, job_id, "succeeded")
    [moved] = [e for e in events if e.type == "migrated"]
    assert moved.data == {
        "source": DeployV1.graph.version,
        "version": DeployV2.graph.version,
        "state": "review",
        "to": "check",
    }
    info = await rig.client.status(job_id)
    assert info.path == ["start", "review", "done"] and info.state == "done"
    assert info.graph_version == DeployV2.graph.version
    [approve] = [e for e in events if e.type == "decision" and e.data["edge"] == "approve"]
    assert not approve.data["fallback"]


async def test_a_job_no_version_can_move_waits_for_a_person_on_its_own(
    rig: Deployment,
) -> None:
    """v3 has no `review`, and no rename for it: the job stays on v1, v3's agent gives
    the step back until it is dead-lettered, and a person finishes the job on v1's edges."""
    short_timings(rig)
    job_id = await deployed_mid_step(rig, "tests.support.versions:DeployV3")
    events = await journal_until(rig, job_id, "waiting_human")
    assert not [e for e in events if e.type == "migrated"]
    status = events[-1].data
    assert status["kind"] == "dead_letter" and status["edges"] == ["approve", "reject"]
    assert (
        "cannot decide state 'review' of graph version " + DeployV1.graph.version
        in (status["reason"])
    )
    code, out, err = await rig_cli(rig, "resolve", job_id, "--edge", "approve", "--json")
    assert code == 0, err
    info: dict[str, Any] = json.loads(out)
    assert info["graph_version"] == DeployV1.graph.version
    await journal_until(rig, job_id, "succeeded")
