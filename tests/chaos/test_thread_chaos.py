"""A thread goes on when its supervisor dies between two turns: after a turn's end is
written but before its outbox (with `ThreadEnded`) went out, and after the thread's
record moved on but before the next turn was told (`ThreadNext`); a summary of its
older turns is made once when the agent and the supervisor making it die; and a
concurrency key's queue goes on when its supervisor dies (`FlowEnded`)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from actors.runtime.client import RigClient
from actors.testing import Deployment
from protocols import JobInfo, RigConnectionError
from tests.chaos.test_production_timings import spawn_doomed
from tests.integration.test_cli import rig_cli
from tests.support.chat import Compactor

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


async def test_a_summary_is_made_once_when_its_agent_and_supervisor_die_making_it(
    rig: Deployment,
) -> None:
    """The fourth turn of a compacting thread starts in its summarising state: its agent
    dies with the model's summary not yet sent, then its supervisor with the summary's
    decision written but not yet acted on. The summary is one decision, journaled once,
    kept by the thread once; every turn still sees every earlier one."""
    [supervisor] = await rig.spawn("actors:Supervisor")
    [agent] = await rig.spawn("tests.support.chat:Compactor")

    async def turn(n: int) -> JobInfo:
        while True:
            try:
                reply = await rig.client.submit(
                    "compactor", {"text": f"t{n}"}, job_id=f"turn-{n}", thread="conv"
                )
                return await rig.client.wait(reply.job_id, timeout=rig.within(60))
            except (RigConnectionError, TimeoutError):
                await asyncio.sleep(0.05)  # the supervisor is restarting: ask again

    infos = [await turn(n) for n in range(3)]
    assert [info.result["output"]["summary"] for info in infos if info.result] == [[]] * 3
    # The next turn compacts: the processes that will die making its summary take over.
    supervisor.kill()
    agent.kill()
    await asyncio.gather(supervisor.wait(), agent.wait())
    supervisor = await spawn_doomed(rig, "actors:Supervisor", "after_write_decision:compactor")
    agent = await spawn_doomed(rig, "tests.support.chat:Compactor", "after_decide:summarise")
    compacting = asyncio.create_task(turn(3))
    assert await asyncio.wait_for(agent.wait(), rig.within(30)) == 137
    await rig.spawn("tests.support.chat:Compactor")
    assert await asyncio.wait_for(supervisor.wait(), rig.within(30)) == 137
    await rig.spawn("actors:Supervisor")
    infos.append(await asyncio.wait_for(compacting, rig.within(90)))
    infos += [await turn(n) for n in range(4, 8)]

    assert [info.status for info in infos] == ["succeeded"] * 8
    summaries = {}
    for n, info in enumerate(infos):
        assert info.result is not None
        said = info.result["output"]
        assert said["summary"] + said["seen"] == [f"t{k}" for k in range(n)]
        assert said["context_chars"] <= 4 * Compactor.thread_tokens
        journal = await rig.client.journal(info.job_id)
        made = [e for e in journal if e.type == "compacted"]
        steps = [e for e in journal if e.type == "decision" and e.data["state"] == "summarise"]
        assert len(made) == len(steps) <= 1  # one summarising step, journaled once
        if made:
            summaries[info.job_id] = made[0].data["summary"]["covers"]
    assert "turn-3" in summaries and len(summaries) >= 2
    record = await rig.client.thread("conv")
    assert record.compactions == len(summaries) and record.summary is not None
    assert record.summary.summary["covers"] == summaries[record.summary.job_id]
    code, out, _ = await rig_cli(rig, "thread", "show", "conv")
    assert code == 0 and f"summary of the first {record.summary.through} turns" in out


@pytest.mark.parametrize("point", ["after_write_end:serial", "after_write_start:serial"])
async def test_a_concurrency_key_goes_on_when_its_supervisor_dies(
    rig: Deployment, point: str
) -> None:
    """Limit 1 per customer: the supervisor dies right after a job's end is written (its
    `FlowEnded` not sent), or after a job's start; the queue behind it still runs, once
    each, one at a time."""
    supervisor = await spawn_doomed(rig, "actors:Supervisor", point)
    await rig.spawn("tests.support.flows:Serial", "tests.support.flows:SerialTools")

    async def submit(n: int) -> str:
        client = RigClient(rig.nc, rig.client.config, request_timeout=2.0)
        while True:
            try:
                said = {"customer": "c", "ms": 5, "n": n}
                return (await client.submit("serial", said, job_id=f"job-{n}")).job_id
            except (RigConnectionError, TimeoutError):
                await asyncio.sleep(0.05)  # the supervisor is restarting: ask again

    async def submit_all() -> list[str]:
        return [await submit(n) for n in range(4)]  # one after another: their order

    submitting = asyncio.create_task(submit_all())
    assert await asyncio.wait_for(supervisor.wait(), rig.within(30)) == 137
    await rig.spawn("actors:Supervisor")
    job_ids = await asyncio.wait_for(submitting, rig.within(60))
    infos = [await rig.client.wait(job_id, timeout=rig.within(60)) for job_id in job_ids]
    assert [info.status for info in infos] == ["succeeded"] * 4
    spans = []
    for job_id in job_ids:
        journal = await rig.client.journal(job_id)
        assert [e.type for e in journal].count("started") == 1
        started = next(e.ts for e in journal if e.type == "started")
        ended = next(e.ts for e in journal if e.type == "status" and e.data["status"] != "running")
        spans.append((started, ended))
    spans.sort()
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans))  # one at a time
