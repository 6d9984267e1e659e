"""Fixtures: a real nats-server, a namespace per test, and actors as real OS processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import nats
import nkeys
import pytest
from nats.aio.client import Client

from actors import RigConfig, Supervisor
from actors._actor import Delivery
from actors._client import RigClient
from actors._keys import add_key
from actors._nats import Publisher, ensure_topology
from actors._security import ensure_seed, public_key, roles_for, server_config, user_entry
from actors._up import load_actor_class, spawn_actor, wait_ready
from protocols import Encoding, Names, RigConnectionError, encode

ROOT = Path(__file__).resolve().parents[1]
# The suite's outside tools (Phoenix, schemathesis), in a venv of their own: scripts/_tools.
TOOLS_BIN = ROOT / ".venv" / "tools" / "bin"


def outside_tool(name: str) -> str:
    """The path of an outside tool's program, or an error saying how to get it."""
    path = TOOLS_BIN / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: scripts/test installs it (scripts/tools.txt)")
    return str(path)


NATS_SERVER = Path(sys.executable).parent / "nats-server"
T = TypeVar("T")


class NatsServer:
    """nats-server with the project's nats.conf, on a free port, JetStream in `store`, and
    security on, as `rig up` runs it: one NATS user per role of each deployment on it
    (`add_users`), plus the test harness's own (`harness_seed`, allowed everything)."""

    def __init__(self, store: Path, log: Path) -> None:
        self.store = store
        self.log = log
        self.port = -1
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = store.parent / f"{store.name}.conf"
        self.harness_seed = store.parent / f"{store.name}-harness.nk"
        self.harness_seed.write_bytes(
            nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
        )
        self._users: dict[str, list[dict[str, Any]]] = {
            "": [{"nkey": public_key(self.harness_seed)}]
        }
        self._reloads = 0
        self._reloaded = threading.Condition()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def add_users(self, prefix: str, users: list[dict[str, Any]]) -> None:
        """Make `users` (user entries, `actors._security.user_entry`) the users of the
        deployment `prefix`, and have the server load them (a reload, waited for)."""
        self._users[prefix] = users
        self.reload()

    def drop_users(self, prefix: str) -> None:
        """Forget the users of `prefix` (they go at the next reload or restart)."""
        self._users.pop(prefix, None)

    def _write_conf(self) -> None:
        users = [user for group in self._users.values() for user in group]
        self.conf.write_text(server_config(ROOT / "nats.conf", users))

    def reload(self) -> None:
        """Write the users out and SIGHUP the server; return once it says it reloaded."""
        assert self.proc is not None
        self._write_conf()
        with self._reloaded:
            seen = self._reloads
            self.proc.send_signal(signal.SIGHUP)
            if not self._reloaded.wait_for(lambda: self._reloads > seen, timeout=20):
                raise RuntimeError(f"nats-server did not reload its config; see {self.log}")

    def start(self) -> None:
        """Start (or restart on the same port and store), return once it accepts clients."""
        self._write_conf()
        self.proc = subprocess.Popen(
            [
                str(NATS_SERVER),
                "-c",
                str(self.conf),
                "-p",
                str(self.port),
                "-m",
                "-1",
                "-sd",
                str(self.store),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        ready = threading.Event()
        # A thread copies the server's log to a file (so the pipe never fills up and
        # blocks the server) and tells us when it is ready.
        self._pump = threading.Thread(target=self._copy_log, args=(self.proc, ready), daemon=True)
        self._pump.start()
        if not ready.wait(timeout=20) or self.port < 0:
            raise RuntimeError(f"nats-server did not start; see {self.log}")

    def _copy_log(self, proc: subprocess.Popen[bytes], ready: threading.Event) -> None:
        assert proc.stderr is not None
        with self.log.open("ab") as out, proc.stderr:
            for line in proc.stderr:
                out.write(line)
                out.flush()
                found = re.search(rb"Listening for client connections on [\d.]+:(\d+)", line)
                if found:
                    self.port = int(found.group(1))
                if b"Server is ready" in line:
                    ready.set()
                if b"Reloaded server configuration" in line:
                    with self._reloaded:
                        self._reloads += 1
                        self._reloaded.notify_all()
        ready.set()

    def kill(self) -> None:
        """SIGKILL: nothing flushed, nothing said goodbye."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._pump.join(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._pump.join(timeout=10)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One server for the session; each test gets its own namespace (prefix) on it."""
    folder = tmp_path_factory.mktemp("nats")
    server = NatsServer(folder / "store", folder / "server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A server of the test's own, for tests that kill or restart it."""
    server = NatsServer(tmp_path / "store", tmp_path / "server.log")
    server.start()
    yield server
    server.stop()


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 20.0, message: str = ""
) -> T:
    """Retry `check` until it returns a truthy value or raises nothing; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = await check()
            if value:
                return value
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {timeout} s: {message or check}") from last


@dataclass
class Deployment:
    """One Rig namespace on a real server: spawn actors, talk to them, clean up."""

    server: NatsServer
    home: Path
    prefix: str
    nc: Client
    client: RigClient
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    classes: list[type[Any]] = field(default_factory=list)  # every actor class it ran

    @property
    def names(self) -> Names:
        return Names(self.prefix)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RIG_NATS_URL": self.server.url,
            "RIG_PREFIX": self.prefix,
            "RIG_HOME": str(self.home),
            "RIG_ACK_WAIT": "2",
            "RIG_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
            **self.extra_env,
        }

    @property
    def ack_wait(self) -> float:
        """The ack wait the deployment's processes run with (`RIG_ACK_WAIT`)."""
        return float(self.env["RIG_ACK_WAIT"])

    def within(self, *waits: float) -> float:
        """An upper bound for something that takes `waits` (ack waits, leases, ...) plus
        the time processes need to start and hand messages on, on a loaded 2-core box."""
        return sum(waits) + SLACK_S

    async def grant(self, *targets: str) -> None:
        """Give the server a user for each role these actor classes need (and for the
        client, gateway and admin), with each seed in `$RIG_HOME/creds`, as `rig up`
        does; the roles of classes started before are made again with the graphs of all."""
        for target in targets:
            cls = load_actor_class(target)
            if cls not in self.classes:
                self.classes.append(cls)
        users = await asyncio.to_thread(self._users)
        await asyncio.to_thread(self.server.add_users, self.prefix, users)

    def _users(self) -> list[dict[str, Any]]:
        return [
            user_entry(self.names, role, ensure_seed(self.home, role.name))
            for role in roles_for(self.names, self.classes)
        ]

    async def spawn(self, *targets: str, ready: bool = True) -> list[asyncio.subprocess.Process]:
        """Start `python -m actors run TARGET` processes; wait until each announces itself."""
        await self.grant(*targets)
        sub = await self.nc.subscribe(self.names.actor_ready)
        started = []
        for target in targets:
            with (self.home / f"{target.replace(':', '.')}.log").open("ab") as log:
                proc = await spawn_actor(target, env=self.env, cwd=ROOT, log=log)
            self.procs.append(proc)
            started.append(proc)
        if ready:
            try:
                await wait_ready(sub, {p.pid for p in started}, timeout=self.within(30))
            except TimeoutError:
                logs = {
                    f"{t} (exit {p.returncode})": _tail(self.home / f"{t.replace(':', '.')}.log")
                    for t, p in zip(targets, started, strict=True)
                }
                raise AssertionError(f"not every actor announced itself: {logs}") from None
        await sub.unsubscribe()
        return started

    async def stop_all(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def rig_up(self, actors: dict[str, int]) -> asyncio.subprocess.Process:
        """Start `rig up --config` with these actor classes and counts, on this namespace."""
        await self.grant(*actors)
        config = self.home / "up.toml"
        config.write_text(
            "".join(f'[[actor]]\nclass = "{cls}"\ncount = {n}\n' for cls, n in actors.items())
        )
        with (self.home / "up.out").open("ab") as log:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "actors",
                "up",
                "--config",
                str(config),
                "--no-gateway",  # the tests of `rig up` itself start one
                "--json",
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )


REFUND = (
    "actors:Supervisor",
    "actors.examples.refund:RefundAgent",
    "actors.examples.refund:RefundTools",
    "actors.examples.refund:RefundChecks",
)


async def _deployment(server: NatsServer, home: Path) -> AsyncIterator[Deployment]:
    prefix = "t" + uuid.uuid4().hex[:10]
    home.mkdir(parents=True, exist_ok=True)
    nc = await harness(server, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    config = RigConfig(nats_url=server.url, names=Names(prefix), home=home)
    client = RigClient(nc, config)
    deployment = Deployment(server, home, prefix, nc, client)
    await deployment.grant()  # the client's, gateway's and admin's users
    await ensure_topology(nc.jetstream(), deployment.names)  # as `rig up` does, as admin
    try:
        yield deployment
    finally:
        await deployment.stop_all()
        await nc.close()
        server.drop_users(prefix)


async def harness(server: NatsServer, **options: Any) -> Client:
    """A connection of the test harness itself: it may do anything (it plays the
    operator, and the attacker)."""
    return await nats.connect(server.url, nkeys_seed=str(server.harness_seed), **options)


@pytest.fixture
async def rig(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Deployment]:
    """A fresh namespace on the shared server, with no actors yet."""
    async for deployment in _deployment(nats_server, tmp_path / "home"):
        yield deployment


@pytest.fixture
async def private_rig(private_nats: NatsServer, tmp_path: Path) -> AsyncIterator[Deployment]:
    """A namespace on a server of the test's own."""
    async for deployment in _deployment(private_nats, tmp_path / "home"):
        yield deployment


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


# What a bound adds to the configured waits it is derived from (see Deployment.within).
SLACK_S = 30.0
# A Python actor process's start (imports, connect, announce) on a loaded 2-core box.
SPAWN_S = 5.0


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
    supervisor._nc = await harness(rig.server)
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


def _tail(path: Path, lines: int = 5) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
