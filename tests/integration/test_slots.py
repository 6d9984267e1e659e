"""A provider's concurrency slots: handed out first come first served across processes,
returned when a holder dies, and a call's timeout starts once it holds its slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client

from actors.models.limits import SharedLimits
from actors.runtime.nats import ensure_topology
from actors.testing import Deployment
from actors.testing.harness import harness
from tests.integration.test_llm import journal, limited_config, start_chaos
from tests.support.chain import CHAIN

pytestmark = pytest.mark.integration

KEY = "local.model.0123456789"


@pytest.fixture
async def connections(rig: Deployment) -> AsyncIterator[list[Client]]:
    """Four connections, as four agent processes would have."""
    conns = [await harness(rig) for _ in range(4)]
    await ensure_topology(conns[0].jetstream(), rig.names)
    yield conns
    for nc in conns:
        if not nc.is_closed:
            await nc.close()


async def limits_of(rig: Deployment, nc: Client) -> SharedLimits:
    js = nc.jetstream()
    kv = await js.key_value(rig.names.breakers_bucket)
    return SharedLimits(kv, owner=f"conn{id(nc)}", js=js, names=rig.names)


async def waiting(rig: Deployment, nc: Client) -> int:
    info = await nc.jetstream().consumer_info(rig.names.slots_stream, rig.names.slots_durable(KEY))
    return int(info.num_waiting or 0)


async def test_slots_are_handed_out_in_the_order_asked(
    rig: Deployment, connections: list[Client]
) -> None:
    limits = [await limits_of(rig, nc) for nc in connections]
    deadline = time.time() + 60
    held = await limits[0].slot("local", KEY, 1, deadline=deadline)
    served: list[int] = []

    async def wait_in_line(n: int) -> None:
        slot = await limits[n].slot("local", KEY, 1, deadline=deadline)
        served.append(n)
        await limits[n].release(slot)

    asked = [3, 1, 2]  # not the order the connections were made in
    lines = []
    for position, n in enumerate(asked, 1):
        lines.append(asyncio.create_task(wait_in_line(n)))
        while await waiting(rig, connections[0]) < position:  # the server has the request
            await asyncio.sleep(0.01)
    await limits[0].release(held)
    await asyncio.wait_for(asyncio.gather(*lines), 30)
    assert served == asked


async def test_a_dead_holders_slot_goes_to_the_next_in_line(
    rig: Deployment, connections: list[Client]
) -> None:
    holder, heir = await limits_of(rig, connections[0]), await limits_of(rig, connections[1])
    deadline = time.time() + 120
    await holder.slot("local", KEY, 1, deadline=deadline)
    # The holder's process dies: no release, no more "still alive".
    await connections[0].close()
    slot = await asyncio.wait_for(heir.slot("local", KEY, 1, deadline=deadline), 60)
    await heir.release(slot)


async def test_a_calls_timeout_starts_when_it_holds_its_slot(rig: Deployment) -> None:
    """One slot, calls of 1 s, a timeout of 1.5 s: twelve calls queue for up to many
    seconds, and none times out, because the wait in line is not the call's time."""
    server = await start_chaos("--main-path", "1", "--latency-p50", "1.0")
    try:
        agent = {"timeout": 1.5, "max_attempts": 1}
        limited_config(rig, server.url, agent=agent, max_concurrency=1)
        await rig.spawn(*CHAIN, "tests.support.chain:Chain")  # 2 agent processes
        jobs = [await rig.client.submit("chain", {"n": n}) for n in range(4)]
        finals = [await rig.client.wait(job.job_id, timeout=120) for job in jobs]
        stories = [await journal(rig, job.job_id) for job in jobs]
        stats = await server.stats()
    finally:
        server.proc.terminate()
        await server.proc.wait()
    assert {info.status for info in finals} == {"succeeded"}
    calls = [c for s in stories for e in s if e.type == "decision" for c in e.data["calls"]]
    assert all(call["ok"] for call in calls) and len(calls) == 12
    assert max(call.get("waited_ms", 0) for call in calls) > 1500  # queued past a timeout
    assert stats["max_in_flight"] == 1
