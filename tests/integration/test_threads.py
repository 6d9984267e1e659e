"""Conversations: jobs that are turns of a thread (`rig submit --thread`), one at a time,
each with the thread's earlier turns in its context (tests/support/chat.py)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from actors.testing import Deployment, eventually
from protocols import UnknownThreadError
from tests.integration.test_cli import rig_cli
from tests.integration.test_gateway import start_gateway

pytestmark = pytest.mark.integration

CHAT = ("actors:Supervisor", "tests.support.chat:Chatter")


async def test_concurrent_turns_of_a_thread_run_one_at_a_time_in_order(rig: Deployment) -> None:
    await rig.spawn(*CHAT)
    replies = await asyncio.gather(
        *(rig.client.submit("chatter", {"text": f"t{n}"}, thread="conv-1") for n in range(6))
    )
    infos = [await rig.client.wait(r.job_id, timeout=rig.within()) for r in replies]
    assert all(info.status == "succeeded" and info.thread == "conv-1" for info in infos)
    record = await rig.client.thread("conv-1")
    assert (record.active, record.waiting) == (None, [])
    ran = [turn.job_id for turn in record.turns]
    assert sorted(ran) == sorted(r.job_id for r in replies)
    # Each turn saw the turns before it (as many of the newest as its budget holds), and
    # none ran while another did.
    said = {info.job_id: info.result["output"] for info in infos if info.result}
    spans = {}
    for job_id in ran:
        journal = await rig.client.journal(job_id)
        [started] = [e.ts for e in journal if e.type == "started"]
        spans[job_id] = (started, journal[-1].ts)  # started .. ended
        waited = [e for e in journal if e.type == "thread"]  # a turn that found one running
        assert all(e.data["thread"] == "conv-1" and e.data["waits_for"] for e in waited)
    for n, job_id in enumerate(ran):
        before = [record.turns[k].input["text"] for k in range(n)]
        seen = said[job_id]["seen"]
        assert seen == before[len(before) - len(seen) :] and len(seen) <= 2
        if n:
            assert spans[ran[n - 1]][1] <= spans[job_id][0]  # the previous ended first
    assert [len(said[j]["seen"]) for j in ran] == [0, 1, 2, 2, 2, 2]  # the budget holds two


async def test_a_turn_waits_for_a_person_s_turn_or_is_refused(
    rig: Deployment, http: aiohttp.ClientSession
) -> None:
    await rig.spawn(*CHAT)
    first = await rig.client.submit("chatter", {"text": "help", "ask": True}, thread="conv-2")
    parked = await rig.client.wait(first.job_id, timeout=rig.within())
    assert parked.status == "waiting_human"
    refused = await rig.client.submit(
        "chatter", {"text": "now?"}, thread="conv-2", thread_busy="refuse"
    )
    ended = await rig.client.wait(refused.job_id, timeout=rig.within())
    assert ended.status == "failed" and ended.error is not None
    assert ended.error["code"] == "thread_busy" and first.job_id in ended.error["message"]
    waiting = await rig.client.submit("chatter", {"text": "later"}, thread="conv-2")

    async def queued() -> bool:  # its start found the thread busy, and it waits its turn
        record = await rig.client.thread("conv-2")
        return (record.active, record.waiting) == (first.job_id, [waiting.job_id])

    await eventually(queued, timeout=rig.within(), message="the turn waits")
    assert (await rig.client.status(waiting.job_id)).status == "accepted"
    listed = {job.job_id: job.status for job in await rig.client.jobs()}
    assert listed[waiting.job_id] == "accepted"  # `rig jobs` shows the turn that waits
    await rig.client.resolve(first.job_id, "go_on", note="all good")
    done = await rig.client.wait(waiting.job_id, timeout=rig.within())
    assert done.status == "succeeded" and done.result is not None
    assert done.result["output"]["seen"] == ["help"]  # the person's turn came first
    record = await rig.client.thread("conv-2")
    assert [t.job_id for t in record.turns] == [first.job_id, waiting.job_id]
    assert "all good" in record.turns[0].said  # what the person said is kept
    # The thread over HTTP and the command line.
    base, _ = await start_gateway(rig)
    async with http.get(f"{base}/v1/threads/conv-2") as response:
        assert response.status == 200
        assert [t["job_id"] for t in (await response.json())["turns"]] == [
            first.job_id,
            waiting.job_id,
        ]
    async with http.get(f"{base}/v1/threads/nope") as response:
        assert response.status == 404 and (await response.json())["code"] == "unknown_thread"
    code, out, _ = await rig_cli(rig, "thread", "show", "conv-2")
    assert code == 0 and "running none" in out and "turns: 2" in out and "heard later" in out
    code, out, _ = await rig_cli(rig, "thread", "conv-2", "--json")
    assert code == 0 and json.loads(out)["thread"] == "conv-2"
    with pytest.raises(UnknownThreadError):
        await rig.client.thread("nope")
