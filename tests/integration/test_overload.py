"""Overload without loss: past the bound of an agent's backlog, a submit answers `busy`
(HTTP 429 with Retry-After) instead of accepting work that cannot start; nothing that was
accepted is dropped, and every accepted job ends."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from actors.testing import Deployment
from protocols import BusyError
from tests.integration.test_gateway import start_gateway
from tests.integration.test_security import GATED
from tests.support.gated import GatedAgent

FLOOD = 200  # submits at most, one after the other, until one is refused


async def test_a_flood_gets_busy_answers_and_every_accepted_job_ends(
    rig: Deployment, http: aiohttp.ClientSession
) -> None:
    """The gated agent, one step at a time, holds its first job at the gate; more
    submits pile steps up behind it. Past RIG_MAX_BACKLOG (3) they are refused as `busy`
    over NATS and 429 over HTTP; then the gate opens for every step that reaches it, and
    every accepted job (and only those) ends `succeeded`."""
    rig.extra_env["RIG_MAX_BACKLOG"] = "3"
    thinking = await rig.nc.subscribe(f"{rig.prefix}.test.thinking")
    await rig.spawn(*(target for target in GATED if target != "tests.support.gated:GatedAgent"))
    gateway, _proc = await start_gateway(rig)
    rig.extra_env["RIG_CONCURRENCY"] = "1"  # the agent works one step at a time
    await rig.spawn("tests.support.gated:GatedAgent")
    job = GatedAgent.example_input
    accepted = [(await rig.client.submit("gated", job)).job_id]
    await thinking.next_msg(timeout=rig.within(30))  # its only slot waits at the gate

    # Submit until the backlog (which only grows while the gate is shut) passes the
    # bound, then some more: each of those is refused too.
    refused: list[BusyError] = []
    for _ in range(FLOOD):
        try:
            accepted.append((await rig.client.submit("gated", job)).job_id)
        except BusyError as exc:
            refused.append(exc)
            break
    assert refused, f"{len(accepted)} accepted and none refused"
    assert len(accepted) >= 4  # the bound's 3 steps waiting, behind the one at the gate
    for _ in range(5):
        with pytest.raises(BusyError) as busy:
            await rig.client.submit("gated", job)
        refused.append(busy.value)
    assert "past the bound of 3 (RIG_MAX_BACKLOG)" in refused[-1].message
    assert refused[-1].retry_after > 0
    async with http.post(f"{gateway}/v1/jobs", json={"agent": "gated", "input": job}) as r:
        assert r.status == 429, await r.text()
        assert int(r.headers["Retry-After"]) >= 1
        problem = await r.json()
        assert problem["code"] == "busy" and problem["status"] == 429

    async def open_the_gate() -> None:
        await rig.nc.publish(f"{rig.prefix}.test.gate", b"go")  # the first job's
        async for _msg in thinking.messages:  # and each step that reaches it next
            await rig.nc.publish(f"{rig.prefix}.test.gate", b"go")

    opener = asyncio.create_task(open_the_gate())
    try:
        for job_id in accepted:
            info = await rig.client.wait(job_id, timeout=rig.within(60))
            assert info.status == "succeeded", info
    finally:
        opener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await opener
    listed = {info.job_id for info in await rig.client.jobs(limit=100)}
    assert listed == set(accepted)  # none lost, none that was refused
