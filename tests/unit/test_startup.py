"""What an actor process loads before it serves: not aiohttp, unless it speaks HTTP."""

from __future__ import annotations

import subprocess
import sys

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
