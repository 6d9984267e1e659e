"""This suite's own helpers and fixtures, beside the `rig` plugin's (a real nats-server,
a deployment per test, actors as real OS processes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from actors import RigConfig, Supervisor
from actors.gateway.keys import add_key
from actors.runtime.actor import Delivery
from actors.runtime.client import RigClient
from actors.runtime.nats import Publisher, ensure_topology
from actors.testing import Deployment
from actors.testing.harness import harness
from protocols import Encoding, Names, RigConnectionError, encode

# The fixtures `nats_server`, `rig`, `private_nats` and `private_rig` are Rig's pytest
# plugin's (actors/testing/plugin.py), as a user's tests get them; what is here is this
# suite's own.

ROOT = Path(__file__).resolve().parents[1]
# The suite's outside tools (Phoenix, schemathesis), in a venv of their own: scripts/_tools.
TOOLS_BIN = ROOT / ".venv" / "tools" / "bin"


def outside_tool(name: str) -> str:
    """The path of an outside tool's program, or an error saying how to get it."""
    path = TOOLS_BIN / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: scripts/test installs it (scripts/tools.txt)")
    return str(path)


REFUND = (
    "actors:Supervisor",
    "actors.examples.refund:RefundAgent",
    "actors.examples.refund:RefundTools",
    "actors.examples.refund:RefundChecks",
)


def refund_rows(home: Path) -> list[tuple[Any, ...]]:
    """The effects sink of the refund example: one row per refund actually issued."""
    import sqlite3

    path = home / "refunds.sqlite3"
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT job_id, order_id, amount FROM refunds").fetchall()


async def submit_surely(rig: Deployment, agent: str, job_input: dict[str, Any], job_id: str) -> str:
    """Submit until a supervisor answers; the job id makes every repeat the same job. A
    request whose supervisor is killed under it (or whose reply dies with it) is asked
    again after 2 s rather than the client's default 10 s."""
    client = RigClient(rig.nc, rig.client.config, request_timeout=2.0)
    while True:
        try:
            return (await client.submit(agent, job_input, job_id=job_id)).job_id
        except (RigConnectionError, TimeoutError):
            await asyncio.sleep(0.05)  # a supervisor is restarting: ask again shortly


def bank_attempts(home: Path) -> dict[str, int]:
    """How many requests reached the refund example's bank, per idempotency key.

    The bank moves money once per key whatever it is asked, so its refunds cannot show a
    double; this shows whether Rig asked twice."""
    import sqlite3

    path = home / "refunds.sqlite3"
    if not path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT idempotency_key, count(*) FROM attempts GROUP BY 1")
        return dict(rows.fetchall())


# A message handed to an in-process supervisor by a test, as if it came from the stream.
DELIVERY = Delivery(subject="test", headers={}, encoding=Encoding.MSGPACK, attempt=1)


def delivered(subject: str) -> Delivery:
    """`DELIVERY` on `subject`: a report must come on its sender's (`Names.report`), a
    job's start or a person's command on the supervisor's own (`Names.supervisor`)."""
    return Delivery(subject=subject, headers={}, encoding=Encoding.MSGPACK, attempt=1)


async def replica(rig: Deployment, home: Path) -> Supervisor:
    """A supervisor in this process, connected to the test's namespace and consuming
    nothing: the test hands it each message itself, so which replica sees what is exact."""
    supervisor = Supervisor(
        config=RigConfig(nats_url=rig.server.url, names=Names(rig.prefix), home=home)
    )
    supervisor._nc = await harness(rig)
    supervisor._js = supervisor._nc.jetstream()
    supervisor._publisher = Publisher(supervisor._nc)
    await supervisor._publisher.start()
    await ensure_topology(supervisor._js, supervisor.names)
    await supervisor.on_start()
    return supervisor


@pytest.fixture
async def pair(rig: Deployment, tmp_path: Path) -> AsyncIterator[tuple[Supervisor, Supervisor]]:
    """Two supervisor replicas (see `replica`), with the refund agent registered."""
    from actors.examples.refund import RefundAgent

    a, b = await replica(rig, tmp_path), await replica(rig, tmp_path)
    agents = await a.js.key_value(a.names.agents_bucket)
    await agents.put("refund", encode(RefundAgent.info(RefundAgent.__new__(RefundAgent))))
    yield a, b
    for supervisor in (a, b):
        await supervisor.nc.close()


@pytest.fixture
def api_key(rig: Deployment) -> str:
    """The key of the deployment's keys file (`$RIG_HOME/gateway-keys`): its gateways
    require it, as every gateway with a keys file does."""
    return add_key(rig.home / "gateway-keys", "tests")


@pytest.fixture
async def http(api_key: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that sends the deployment's API key."""
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=120),
        headers={"Authorization": f"Bearer {api_key}"},
    ) as session:
        yield session
