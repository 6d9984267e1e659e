"""A thread goes on when its supervisor dies between two turns: after a turn's end is
written but before its outbox (with `ThreadEnded`) went out, and after the thread's
record moved on but before the next turn was told (`ThreadNext`)."""

from __future__ import annotations

import asyncio

import pytest

from actors.runtime.client import RigClient
from actors.testing import Deployment
from protocols import RigConnectionError
from tests.chaos.test_production_timings import spawn_doomed

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.mark.parametrize("point", ["after_write_end:chatter", "after_thread_record"])
async def test_a_thread_goes_on_when_its_supervisor_dies_between_turns(
    rig: Deployment, point: str
) -> None:
    supervisor = await spawn_doomed(rig, "actors:Supervisor", point)
    await rig.spawn("tests.support.chat:Chatter")

    async def submit_all() -> list[str]:
        """The three turns, each asked again (the same id: the same job) while no
        supervisor answers."""
        client = RigClient(rig.nc, rig.client.config, request_timeout=2.0)
        ids = []
        for n in range(3):
            while True:
                try:
                    turn = {"text": f"t{n}"}
                    reply = await client.submit("chatter", turn, job_id=f"turn-{n}", thread="conv")
                    ids.append(reply.job_id)
                    break
                except (RigConnectionError, TimeoutError):
                    await asyncio.sleep(0.05)  # the supervisor is restarting: ask again
        return ids

    submitting = asyncio.create_task(submit_all())
    assert await asyncio.wait_for(supervisor.wait(), rig.within(30)) == 137
    await rig.spawn("actors:Supervisor")
    job_ids = await asyncio.wait_for(submitting, rig.within(60))
    infos = [await rig.client.wait(job_id, timeout=rig.within(60)) for job_id in job_ids]
    assert [info.status for info in infos] == ["succeeded"] * 3
    record = await rig.client.thread("conv")
    assert (record.active, record.waiting, len(record.turns)) == (None, [], 3)  # each once
    # Each turn saw the ones before it: none was lost or seen twice on the way.
    said = {info.job_id: info.result["output"]["seen"] for info in infos if info.result}
    texts = [turn.input["text"] for turn in record.turns]
    assert [said[turn.job_id] for turn in record.turns] == [texts[:n] for n in range(3)]
