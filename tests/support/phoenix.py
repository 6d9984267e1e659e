"""Arize Phoenix, a real OpenTelemetry backend, started by a test (its own port, store)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from actors.deploy.up import free_port
from actors.testing import eventually
from tests.conftest import outside_tool


@asynccontextmanager
async def phoenix(home: Path) -> AsyncIterator[str]:
    """A Phoenix server for the body; yields its url (OTLP over HTTP at `/v1/traces`)."""
    port = free_port()
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
        "PHOENIX_WORKING_DIR": str(home / "phoenix"),
    }
    with (home / "phoenix.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            outside_tool("python"),
            "-m",
            "phoenix.server.main",
            "serve",
            env=env,
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        async def answers() -> bool:  # its migrations and start take a while
            if proc.returncode is not None:
                raise RuntimeError(f"phoenix exited; see {home / 'phoenix.log'}")
            try:
                async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/projects") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(answers, timeout=300, message="phoenix answers")
        yield url
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def spans(url: str, project: str, trace_id: str) -> list[dict[str, Any]]:
    """Every span of the trace Phoenix has stored so far."""
    found: list[dict[str, Any]] = []
    cursor = None
    async with aiohttp.ClientSession() as http:
        while True:
            params = {"limit": "1000", "trace_id": trace_id} | (
                {"cursor": cursor} if cursor else {}
            )
            async with http.get(f"{url}/v1/projects/{project}/spans", params=params) as response:
                if response.status == 404:  # no span of the project yet
                    return []
                response.raise_for_status()
                page = await response.json()
            found += [s for s in page["data"] if s["context"]["trace_id"] == trace_id]
            cursor = page.get("next_cursor")
            if not cursor:
                return found
