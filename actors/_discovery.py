"""Every actor process is a NATS micro service (ADR-32), so `$SRV.PING`, `$SRV.INFO` and
`$SRV.STATS` find it, and the standard `nats micro ls` lists it beside any other service.

The service is named `<prefix>-<kind>` (`rig-agent`, `rig-supervisor`, ...); its
metadata say which deployment it belongs to (`rig.prefix`), what it serves
(`rig.serves`: the agent, tools or verifiers), its class, host and pid. Its one endpoint,
`counts`, answers with the process's counters (handled, retried, errors, dead letters,
stale reports), which `$SRV.STATS` also carries as the endpoint's `data`. `rig ps` asks
`$SRV.STATS` of every service and keeps the deployment's.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from protocols import Names

# How long `rig ps` listens for answers after the last one came (and at most in all).
QUIET_S = 0.3
LISTEN_S = 2.0
_SEMVER = re.compile(r"^\d+\.\d+\.\d+")


def version() -> str:
    try:
        found = importlib.metadata.version("rig")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"
    return found if _SEMVER.match(found) else "0.0.0"


async def start_service(
    nc: Client,
    names: Names,
    *,
    kind: str,
    serves: list[str],
    cls: str,
    counts: Any,
) -> Service:
    """Make this process a micro service; `counts()` is read at every stats request."""
    metadata = {
        "rig.prefix": names.prefix,
        "rig.kind": kind,
        "rig.serves": ",".join(serves),
        "rig.class": cls,
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
    }
    service = await add_service(
        nc,
        name=f"{names.prefix}-{kind}",
        version=version(),
        description=f"Rig {kind}" + (f" of {', '.join(serves)}" if serves else ""),
        metadata=metadata,
        stats_handler=lambda _stats: counts(),
    )

    async def answer(request: Request) -> None:
        await request.respond(json.dumps(counts()).encode())

    await service.add_endpoint(
        name="counts",
        subject=f"{names.prefix}.actors.counts.{service.id}",
        handler=answer,
        metadata={"description": "this process's counters, as JSON"},
    )
    return service


@dataclass(frozen=True, slots=True)
class LiveActor:
    """One process that answered `$SRV.STATS`."""

    id: str
    kind: str
    serves: list[str]
    cls: str
    host: str
    pid: int
    version: str
    started: str
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "serves": self.serves,
            "class": self.cls,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "started": self.started,
            "counts": self.counts,
        }


async def discover(nc: Client, names: Names, *, listen: float = LISTEN_S) -> list[LiveActor]:
    """The deployment's live actor processes: every `$SRV.STATS` answer that comes before
    the answers stop for `QUIET_S` (or `listen` passed), of this prefix."""
    inbox = nc.new_inbox()
    answers: asyncio.Queue[bytes] = asyncio.Queue(maxsize=100_000)

    async def on_answer(msg: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            answers.put_nowait(msg.data)

    sub = await nc.subscribe(inbox, cb=on_answer)
    found: list[LiveActor] = []
    try:
        await nc.publish("$SRV.STATS", b"", reply=inbox)
        await nc.flush(timeout=max(1, round(listen)))
        deadline = time.monotonic() + listen
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(answers.get(), min(QUIET_S, left))
            except TimeoutError:
                break
            live = _live_actor(data, names.prefix)
            if live is not None:
                found.append(live)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return sorted(found, key=lambda a: (a.kind, a.serves, a.host, a.pid))


def _live_actor(data: bytes, prefix: str) -> LiveActor | None:
    """An answer of ours (this prefix's), or None for any other service's."""
    try:
        stats = json.loads(data)
        meta = stats.get("metadata") or {}
        if meta.get("rig.prefix") != prefix:
            return None
        counts: dict[str, int] = {}
        for endpoint in stats.get("endpoints") or []:
            if endpoint.get("name") == "counts" and isinstance(endpoint.get("data"), dict):
                counts = endpoint["data"]
        return LiveActor(
            id=str(stats["id"]),
            kind=str(meta.get("rig.kind", "?")),
            serves=[name for name in str(meta.get("rig.serves", "")).split(",") if name],
            cls=str(meta.get("rig.class", "")),
            host=str(meta.get("host", "")),
            pid=int(meta.get("pid", 0)),
            version=str(stats.get("version", "")),
            started=str(stats.get("started", "")),
            counts=counts,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
