"""Finding a deployment's live actor processes: `rig ps` asks, every actor answers.

An asker publishes an ask (a random id) on `rig.actors.ask`; every actor process of the
deployment answers on `rig.actors.stats` with the ask's id, what it is (its kind, what
it serves: the agent, tools or verifiers, its class, host and pid) and its counters
(handled, retried, errors, dead letters, stale reports). Both are broadcasts, never a
request and its reply: an answer goes to a subject the actor may publish to, so no
asker can point it at a key or a stream of its choosing (a reply subject could; see
docs/design/security.md). The askers (the client, the gateway, the admin) receive every
actor's answers through their accounts' imports; answers to another ask are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.aio.subscription import Subscription

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
    counts: Callable[[], dict[str, int]],
) -> Subscription:
    """Answer every ask on `names.actors_ask` with this process's stats; `counts()` is
    read at every ask. Unsubscribe the returned subscription to stop answering."""
    me = {
        "id": secrets.token_hex(8),
        "kind": kind,
        "serves": serves,
        "class": cls,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "version": version(),
        "started": datetime.now(UTC).isoformat(),
        "prefix": names.prefix,
    }

    async def answer(msg: Any) -> None:
        try:
            ask = json.loads(msg.data)["ask"]
        except (ValueError, KeyError, TypeError):
            return  # not an ask: nothing to answer
        if not isinstance(ask, str) or len(ask) > 64:
            return
        with contextlib.suppress(Exception):  # a closing connection: no one is asking
            await nc.publish(
                names.actors_stats, json.dumps(me | {"ask": ask, "counts": counts()}).encode()
            )

    return await nc.subscribe(names.actors_ask, cb=answer)


@dataclass(frozen=True, slots=True)
class LiveActor:
    """One process that answered an ask."""

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
    """The deployment's live actor processes: every answer to a new ask that comes
    before the answers stop for `QUIET_S` (or `listen` passed)."""
    ask = secrets.token_hex(12)
    answers: asyncio.Queue[bytes] = asyncio.Queue(maxsize=100_000)

    async def on_answer(msg: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            answers.put_nowait(msg.data)

    sub = await nc.subscribe(names.actors_stats, cb=on_answer)
    found: dict[str, LiveActor] = {}
    try:
        await nc.flush(timeout=max(1, round(listen)))  # subscribed before anyone answers
        await nc.publish(names.actors_ask, json.dumps({"ask": ask}).encode())
        await nc.flush(timeout=max(1, round(listen)))
        deadline = time.monotonic() + listen
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(answers.get(), min(QUIET_S, left))
            except TimeoutError:
                break
            live = _live_actor(data, names.prefix, ask)
            if live is not None:
                found[live.id] = live  # an answer that came twice (two paths) counts once
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return sorted(found.values(), key=lambda a: (a.kind, a.serves, a.host, a.pid))


def _live_actor(data: bytes, prefix: str, ask: str) -> LiveActor | None:
    """An answer of this deployment's to this ask, or None for anything else."""
    try:
        stats = json.loads(data)
        if stats.get("ask") != ask or stats.get("prefix") != prefix:
            return None
        counts = stats.get("counts")
        return LiveActor(
            id=str(stats["id"]),
            kind=str(stats.get("kind", "?")),
            serves=[str(name) for name in stats.get("serves") or []],
            cls=str(stats.get("class", "")),
            host=str(stats.get("host", "")),
            pid=int(stats.get("pid", 0)),
            version=str(stats.get("version", "")),
            started=str(stats.get("started", "")),
            counts=counts if isinstance(counts, dict) else {},
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
