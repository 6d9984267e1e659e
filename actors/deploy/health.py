"""The health of a cluster as Rig sees it: `rig cluster status` and the gateway's /readyz.

Everything comes from JetStream's own answers (stream and consumer info: each one's
leader, its replicas, whether they are current and how far behind), and, when `rig up
--cluster` wrote `$RIG_HOME/cluster.json`, from each server's monitoring port (its
name, connections, whether it syncs every write).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from protocols import Names

# A copy a few operations behind, heard from lately, is catching up (an idle consumer's
# follower reports a lag of 1 or 2 until the next write): not a problem. One further
# behind, or not heard from for this long, is.
_LAG_OK = 10
_SILENT_S = 5.0


@dataclass(frozen=True, slots=True)
class Replica:
    name: str
    current: bool
    lag: int  # operations it is behind the leader
    offline: bool
    silent_s: float = 0.0  # since the leader last heard from it

    @property
    def behind(self) -> bool:
        return self.offline or (
            not self.current and (self.lag >= _LAG_OK or self.silent_s >= _SILENT_S)
        )


@dataclass(frozen=True, slots=True)
class Health:
    """One stream (or bucket) or consumer: who leads it and how its copies are."""

    kind: str  # stream | consumer
    name: str
    leader: str | None  # None: no leader now (no writes), or one server with no cluster
    replicas: list[Replica] = field(default_factory=list)
    pending: int = 0  # messages stored (stream) or not yet delivered (consumer)
    ack_pending: int = 0  # consumer: delivered, not yet acknowledged
    error: str = ""  # its info could not be read (no leader answered)

    @property
    def problems(self) -> list[str]:
        """What is wrong with it, in words (empty: healthy)."""
        if self.error:
            return [f"{self.kind} {self.name}: {self.error}"]
        found = []
        for replica in self.replicas:
            if replica.behind:
                state = (
                    "offline"
                    if replica.offline
                    else f"behind by {replica.lag}, silent {replica.silent_s:.0f} s"
                )
                found.append(f"{self.kind} {self.name}: its copy on {replica.name} is {state}")
        return found


def health_of(kind: str, name: str, info: Any) -> Health:
    """A `Health` from nats-py's StreamInfo or ConsumerInfo."""
    cluster = getattr(info, "cluster", None)
    replicas = [
        Replica(p.name, bool(p.current), int(p.lag or 0), bool(p.offline), (p.active or 0) / 1e9)
        for p in (getattr(cluster, "replicas", None) or [])
    ]
    if kind == "stream":
        pending, ack_pending = int(info.state.messages or 0), 0
    else:
        pending, ack_pending = int(info.num_pending or 0), int(info.num_ack_pending or 0)
    leader = getattr(cluster, "leader", None)
    return Health(kind, name, leader, replicas, pending, ack_pending)


def rig_streams(names: Names) -> list[str]:
    """Every stream a Rig deployment has: its own, its buckets' and its object store's."""
    buckets = [
        names.jobs_bucket,
        names.agents_bucket,
        names.inbox_bucket,
        names.breakers_bucket,
        names.llm_cache_bucket,
        names.graphs_bucket,
        names.claims_bucket,
        names.presence_bucket,
        names.webhooks_bucket,
        names.cancels_bucket,
        names.index_bucket,
        names.running_bucket,
        names.tools_bucket,
        names.push_bucket,
        names.threads_bucket,
    ]
    return [
        names.work_stream,
        names.events_stream,
        names.slots_stream,
        names.dlq_stream,
        *(f"KV_{b}" for b in buckets),
        f"OBJ_{names.results_store}",
    ]


async def stream_health(js: JetStreamContext, stream: str, *, timeout: float = 3.0) -> Health:
    try:
        info = await asyncio.wait_for(js.stream_info(stream), timeout)
    except (nats.errors.Error, TimeoutError) as exc:
        return Health("stream", stream, None, error=_why(exc))
    return health_of("stream", stream, info)


async def cluster_status(
    js: JetStreamContext, names: Names, home: Path | None = None
) -> dict[str, Any]:
    """Servers (from `cluster.json`'s monitors, if any), streams and the work stream's
    consumers, with every problem found; `healthy` is whether there is none."""
    streams = await asyncio.gather(*(stream_health(js, s) for s in rig_streams(names)))
    consumers: list[Health] = []
    try:
        found = await asyncio.wait_for(js.consumers_info(names.work_stream), 5.0)
        consumers = [health_of("consumer", c.name, c) for c in found]
    except (nats.errors.Error, TimeoutError) as exc:
        consumers = [Health("consumer", f"{names.work_stream} > *", None, error=_why(exc))]
    servers = await _servers(home)
    problems = [p for h in (*streams, *consumers) for p in h.problems]
    problems += [f"server {s['name']}: {s['error']}" for s in servers if s.get("error")]
    return {
        "healthy": not problems,
        "problems": problems,
        "servers": servers,
        "streams": [asdict(h) for h in streams],
        "consumers": [asdict(h) for h in sorted(consumers, key=lambda h: h.name)],
    }


async def _servers(home: Path | None) -> list[dict[str, Any]]:
    """What each server `rig up --cluster` started says of itself on its monitoring port."""
    path = home / "cluster.json" if home is not None else None
    if path is None or not path.exists():
        return []
    listed = json.loads(await asyncio.to_thread(path.read_text)).get("servers", [])
    timeout = aiohttp.ClientTimeout(total=3)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        return list(await asyncio.gather(*(_server(http, s) for s in listed)))


async def _server(http: aiohttp.ClientSession, listed: dict[str, Any]) -> dict[str, Any]:
    said = {"name": listed.get("name"), "url": listed.get("url")}
    try:
        async with http.get(f"{listed['monitor']}/varz") as r:
            varz = await r.json()
        async with http.get(f"{listed['monitor']}/jsz") as r:
            jsz = await r.json()
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
        return said | {"error": f"its monitoring port does not answer ({_why(exc)})"}
    meta = jsz.get("meta_cluster") or {}
    return said | {
        "version": varz.get("version"),
        "connections": varz.get("connections"),
        "routes": varz.get("routes"),
        "meta_leader": meta.get("leader"),
        "sync_always": (jsz.get("config") or {}).get("sync_always", False),
    }


def _why(exc: BaseException) -> str:
    if isinstance(exc, nats.js.errors.APIError) and exc.description:
        return exc.description
    return str(exc) or type(exc).__name__


def status_lines(status: dict[str, Any]) -> list[str]:
    """`rig cluster status` for a terminal."""
    lines = []
    for server in status["servers"]:
        if server.get("error"):
            lines.append(f"server   {server['name']:<8} {server['error']}")
            continue
        sync = "sync always" if server.get("sync_always") else "lazy sync"
        lines.append(
            f"server   {server['name']:<8} {server['url']}  {server['connections']} connections, "
            f"{server['routes']} routes, meta leader {server['meta_leader']}, {sync}"
        )
    for kind in ("streams", "consumers"):
        for h in status[kind]:
            if h["error"]:
                lines.append(f"{h['kind']:<8} {h['name']:<28} {h['error']}")
                continue
            copies = 1 + len(h["replicas"])
            current = 1 + sum(r["current"] and not r["offline"] for r in h["replicas"])
            lag = max((r["lag"] for r in h["replicas"]), default=0)
            waiting = f"{h['pending']} pending" + (
                f", {h['ack_pending']} unacked" if h["kind"] == "consumer" else ""
            )
            lines.append(
                f"{h['kind']:<8} {h['name']:<28} leader {h['leader'] or '-':<6} "
                f"{current}/{copies} current, lag {lag}, {waiting}"
            )
    verdict = "healthy" if status["healthy"] else f"{len(status['problems'])} problem(s)"
    lines.append(verdict)
    lines += [f"  {p}" for p in status["problems"]]
    return lines
