"""What an actor process does before it serves: it loads no aiohttp unless it speaks HTTP,
and it waits out a cluster electing its leaders."""

from __future__ import annotations

import subprocess
import sys

import pytest
import structlog
from nats.js.errors import BucketNotFoundError, ServiceUnavailableError

from actors.runtime.actor import Actor
from actors.runtime.settings import RigConfig
from tests.conftest import ROOT

PROBE = """
import sys
import actors.cli.main, actors.jobs.supervisor, actors.models.agent
import actors.tools.executor, actors.tools.verifier, actors.deploy.up, actors.examples.refund
print("aiohttp" in sys.modules)
import nats.aio.transport as transport
print(transport.aiohttp.ClientSession.__module__, transport.multidict.CIMultiDict.__name__)
"""


def test_actor_processes_start_without_aiohttp_and_nats_websockets_still_load_it() -> None:
    """About 0.3 CPU-seconds of every actor's start, and of most `rig` commands; nats-py's
    WebSocket transport (a `ws://` URL) loads it on first use."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[:2] == ["False", "aiohttp.client CIMultiDict"], out


class _Electing:
    """A JetStream that answers 503 (a cluster electing its leaders) `outages` times."""

    def __init__(self, outages: int) -> None:
        self.outages, self.asked = outages, 0

    async def key_value(self, name: str) -> str:
        self.asked += 1
        if self.asked <= self.outages:
            raise ServiceUnavailableError(
                code=503, description="JetStream system temporarily unavailable"
            )
        if name == "missing":
            raise BucketNotFoundError()
        return f"bucket {name}"


class _Starting(Actor):
    name = "starting"


async def test_what_on_start_opens_waits_out_an_election_and_says_so() -> None:
    """Seen in CI: a cluster lost its majority between an actor's reading of the
    streams and its `on_start`, whose first bucket answered 503 and the process exited
    ("a bug in rig"). What `on_start` opens goes through `Actor.bucket` (`patiently`)."""
    actor = _Starting(config=RigConfig())
    actor._js = _Electing(outages=2)  # type: ignore[assignment]
    with structlog.testing.capture_logs() as logs:
        assert await actor.bucket("RIG_JOBS") == "bucket RIG_JOBS"
    assert actor._js.asked == 3  # type: ignore[attr-defined]
    assert [e["event"] for e in logs] == ["start.waiting"]  # once, not per attempt
    # Anything but an outage is raised at once.
    actor._js = _Electing(outages=0)  # type: ignore[assignment]
    with pytest.raises(BucketNotFoundError):
        await actor.bucket("missing")
