"""`rig top`: a live view of a deployment, redrawn every second.

From what the deployment already answers, no metrics server needed: every process's
counters (as `rig ps` reads them), the work stream's consumers (their
pending, unacknowledged and redelivered messages: the queues), and the jobs
(by status, counted from the job index: every `jobs_every` seconds, not every frame),
and the concurrency keys jobs wait for (`RIG_FLOWS`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.runtime.client import RigClient
from actors.runtime.discovery import LiveActor
from actors.runtime.nats import kv_latest
from protocols import FlowRecord, JobEntry, decode_as


@dataclass
class Sample:
    at: float
    actors: list[LiveActor]
    queues: list[tuple[str, int, int, int]]  # consumer, pending, ack pending, redelivered
    jobs: Counter[str] = field(default_factory=Counter)
    jobs_at: float = 0.0
    jobs_ms: float = 0.0
    keys: list[FlowRecord] = field(default_factory=list)  # concurrency keys with a queue

    def to_dict(self, before: Sample | None) -> dict[str, Any]:
        return {
            "at": self.at,
            "jobs": dict(self.jobs),
            "jobs_ended_per_s": round(_per_second(self, before, "jobs_finished", "supervisor"), 3),
            "handled_per_s": round(_per_second(self, before, "handled"), 3),
            "errors_per_s": round(_per_second(self, before, "errors"), 3),
            "queues": [
                {"consumer": name, "pending": pending, "in_work": acking, "redelivered": again}
                for name, pending, acking, again in self.queues
            ],
            "processes": [actor.to_dict() for actor in self.actors],
            "keys": [
                {
                    "key": k.key,
                    "running": len(k.running),
                    "limit": k.limit,
                    "waiting": len(k.waiting),
                }
                for k in self.keys
            ],
        }


async def sample(rig: RigClient, *, listen: float, jobs: Sample | None = None) -> Sample:
    """What the deployment says now; the job counts are `jobs`'s unless it is None."""
    actors = await rig.actors(listen=listen)
    infos = await rig.js.consumers_info(rig.names.work_stream)
    queues = sorted(
        (info.name, info.num_pending or 0, info.num_ack_pending or 0, info.num_redelivered or 0)
        for info in infos
    )
    now = Sample(time.time(), actors, queues)
    async for _key, data in kv_latest(rig.js, rig.names.flows_bucket):
        key = decode_as(FlowRecord, data)[0]
        if key.waiting or key.debouncing is not None:
            now.keys.append(key)
    now.keys.sort(key=lambda k: -len(k.waiting))
    if jobs is None:
        started = time.perf_counter()
        async for _key, data in kv_latest(rig.js, rig.names.index_bucket):
            now.jobs[decode_as(JobEntry, data)[0].status] += 1
        now.jobs_at, now.jobs_ms = now.at, (time.perf_counter() - started) * 1000
    else:
        now.jobs, now.jobs_at, now.jobs_ms = jobs.jobs, jobs.jobs_at, jobs.jobs_ms
    return now


def _per_second(now: Sample, before: Sample | None, key: str, kind: str | None = None) -> float:
    """The rate of a counter summed over the processes (of `kind`) alive in both samples."""
    if before is None or now.at <= before.at:
        return 0.0
    then = {(a.host, a.pid): a.counts.get(key, 0) for a in before.actors}
    delta = sum(
        a.counts.get(key, 0) - then[(a.host, a.pid)]
        for a in now.actors
        if (a.host, a.pid) in then and (kind is None or a.kind == kind)
    )
    return max(0, delta) / (now.at - before.at)


def render(now: Sample, before: Sample | None, prefix: str) -> str:
    """One frame of `rig top`."""
    lines = [
        f"rig top  {prefix}  {time.strftime('%H:%M:%S', time.localtime(now.at))}  "
        f"{len(now.actors)} live process(es)",
        "",
        f"throughput  jobs ended {_per_second(now, before, 'jobs_finished', 'supervisor'):.1f}/s"
        f"   messages handled {_per_second(now, before, 'handled'):.1f}/s"
        f"   retried {_per_second(now, before, 'retried'):.1f}/s"
        f"   errors {_per_second(now, before, 'errors'):.1f}/s"
        f"   dead letters {_per_second(now, before, 'dead_letters'):.1f}/s",
        "",
        "jobs        "
        + ("  ".join(f"{status} {count}" for status, count in sorted(now.jobs.items())) or "none")
        + f"   (counted {sum(now.jobs.values())} in {now.jobs_ms:.0f} ms, "
        f"{now.at - now.jobs_at:.0f} s ago)",
        "",
        f"{'queue (consumer)':<40} {'pending':>8} {'in work':>8} {'redelivered':>12}",
    ]
    lines += [
        f"{name[:40]:<40} {pending:>8} {acking:>8} {redelivered:>12}"
        for name, pending, acking, redelivered in now.queues
    ]
    if now.keys:  # jobs waiting for their concurrency key, the longest queues first
        lines += ["", f"{'concurrency key':<40} {'running':>8} {'limit':>8} {'waiting':>12}"]
        lines += [
            f"{k.key[:40]:<40} {len(k.running):>8} {k.limit:>8} {len(k.waiting):>12}"
            for k in now.keys[:20]
        ]
    lines += ["", f"{'process':<44} {'handled/s':>9} {'errors/s':>9} {'handled':>9} {'dead':>6}"]
    for actor in now.actors:
        who = f"{actor.kind} {','.join(actor.serves) or '-'} {actor.host}:{actor.pid}"
        one = Sample(now.at, [actor], [])
        was = (
            Sample(before.at, [a for a in before.actors if a.pid == actor.pid], [])
            if before
            else None
        )
        lines.append(
            f"{who[:44]:<44} {_per_second(one, was, 'handled'):>9.1f} "
            f"{_per_second(one, was, 'errors'):>9.1f} {actor.counts.get('handled', 0):>9} "
            f"{actor.counts.get('dead_letters', 0):>6}"
        )
    return "\n".join(lines)


async def run_top(
    rig: RigClient,
    *,
    interval: float,
    frames: int | None,
    jobs_every: float,
    draw: Callable[[Sample, Sample | None], None],
) -> None:
    """Draw a frame every `interval` seconds (`frames` of them, or until cancelled)."""
    before: Sample | None = None
    drawn = 0
    while frames is None or drawn < frames:
        started = time.monotonic()
        stale = before is not None and time.time() - before.jobs_at < jobs_every
        now = await sample(rig, listen=min(0.5, interval / 2), jobs=before if stale else None)
        draw(now, before)
        before, drawn = now, drawn + 1
        if frames is None or drawn < frames:
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
