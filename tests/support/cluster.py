"""`rig up --cluster 3` in a child process, for the cluster tests: three nats-servers on
free ports, the actors spread over them, an admin connection and a `Deployment` view
for the helpers the single-server tests use."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from actors import RigConfig
from actors.deploy.roles import deployment_config
from actors.deploy.up import (
    NatsServer,
    cluster_nodes,
    find_conf,
    free_port,
    load_actor_class,
    node_conf,
)
from actors.runtime.client import RigClient
from actors.runtime.nats import connect
from actors.testing import Deployment, eventually
from protocols import Names
from tests.conftest import ROOT


@dataclass
class Node:
    name: str
    url: str
    monitor: str
    pid: int


@dataclass
class ClusterUp:
    """A running `rig up --cluster 3`: its servers, what it said, and a way in."""

    proc: asyncio.subprocess.Process
    home: Path
    env: dict[str, str]
    nodes: list[Node] = field(default_factory=list)
    said: list[dict[str, Any]] = field(default_factory=list)
    rig: Deployment | None = None

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    async def said_event(self, event: str, **fields: Any) -> dict[str, Any]:
        """Wait until `rig up` says `event` with these fields (once more than before, if
        it said it already: the count at the call is the baseline)."""
        before = len(self._matching(event, fields))
        return await eventually(
            lambda: self._after(event, fields, before),
            timeout=90,
            message=f"rig up says {event} {fields}",
        )

    async def _after(self, event: str, fields: dict[str, Any], before: int) -> Any:
        found = self._matching(event, fields)
        return found[-1] if len(found) > before else None

    def _matching(self, event: str, fields: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            said
            for said in self.said
            if said.get("event") == event and all(said.get(k) == v for k, v in fields.items())
        ]

    def kill(self, name: str) -> None:
        """SIGKILL one server (`rig up` starts it again on its port and store)."""
        node = self.node(name)
        os.kill(node.pid, signal.SIGKILL)

    async def restarted(self, name: str) -> None:
        """Wait until `rig up` has started server `name` again; note its new pid."""
        said = await self.said_event("server.restarted", name=name)
        self.node(name).pid = int(said["pid"])


@contextlib.asynccontextmanager
async def cluster_up(
    home: Path,
    actors: dict[str, int],
    env: dict[str, str] | None = None,
    *,
    join: list[Node] | None = None,
) -> AsyncIterator[ClusterUp]:
    """`rig up --cluster 3 --port 0` with these actor classes and counts (or, `join`,
    `rig up --join` to these servers: actors only), until the body ends; then SIGTERM,
    and its exit must be 0."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "up.toml"
    config.write_text(
        "".join(f'[[actor]]\nclass = "{cls}"\ncount = {n}\n' for cls, n in actors.items())
    )
    environment = {
        **{k: v for k, v in os.environ.items() if k != "RIG_NATS_URL"},
        "RIG_HOME": str(home),
        "RIG_ACK_WAIT": "2",
        "RIG_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    command = [sys.executable, "-m", "actors", "up", "--config", str(config), "--json"]
    command += ["--no-gateway"]
    if join:
        command += ["--join", ",".join(node.url for node in join)]
    else:
        command += ["--cluster", "3", "--port", "0"]
    with (home / "up.err").open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            *command, env=environment, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=err
        )
    up = ClusterUp(proc, home, environment)
    reader = asyncio.create_task(_read(up))
    nc = None
    try:
        ready = await up.said_event("up.ready")
        if join:
            up.nodes = join
        else:
            [started] = up._matching("cluster.started", {})
            up.nodes = [
                Node(s["name"], s["url"], s["monitor"], int(s["pid"])) for s in started["servers"]
            ]
        assert ready["url"] == up.url
        up.env["RIG_NATS_URL"] = up.url
        config_here = RigConfig(nats_url=up.url, home=home, names=Names())
        nc = await connect(config_here, name="cluster-test", role="admin")
        client = RigClient(nc, config_here)
        server = SimpleNamespace(url=up.url)
        up.rig = Deployment(server, home, "rig", nc, client)  # type: ignore[arg-type]
        yield up
    finally:
        if nc is not None:
            await nc.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 120)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    assert code == 0, f"rig up exited {code}; see {home / 'up.err'}"


async def _read(up: ClusterUp) -> None:
    assert up.proc.stdout is not None
    while line := await up.proc.stdout.readline():
        with contextlib.suppress(ValueError):
            up.said.append(json.loads(line))


@contextlib.asynccontextmanager
async def own_cluster(
    home: Path, targets: list[str], *, lazy: bool = False
) -> AsyncIterator[list[NatsServer]]:
    """Three servers of the test's own, as `rig up --cluster 3` would start them (the
    shipped nats-cluster.conf, a user per role of these actor classes, their seeds in
    `home/creds`), for `rig up --join` and for tests that start a server differently.
    `lazy`: sync every 10 s rather than every write (a test about something else spares
    the shared disk)."""
    classes = [load_actor_class(target) for target in targets]
    base = find_conf("nats-cluster.conf")
    if lazy:
        home.mkdir(parents=True, exist_ok=True)
        text = base.read_text().replace("sync_interval: always", "sync_interval: 10s")
        base = home / "nats-cluster-lazy.conf"
        base.write_text(text)
    conf = await asyncio.to_thread(deployment_config, home, Names(), classes, base)
    nodes = cluster_nodes(3, 0, None, None)
    servers = await asyncio.gather(
        *(NatsServer.start(home=home, conf=node_conf(conf, node["name"]), **node) for node in nodes)
    )
    try:
        yield list(servers)
    finally:
        for server in servers:
            await server.stop()


def as_node(server: NatsServer) -> Node:
    return Node(server.args["name"], server.url, "", server.proc.pid)


async def isolate(server: NatsServer) -> NatsServer:
    """Cut `server` off from the others: SIGKILL it and start it on its port and store
    with a route address nobody dials and routes to nowhere. Its clients reconnect to
    it; it has a minority of the cluster. `heal` ends it."""
    server.proc.kill()
    await server.stop()
    elsewhere = ("--cluster", f"nats://127.0.0.1:{free_port()}")
    nowhere = ("--routes", f"nats://127.0.0.1:{free_port()}")
    return await NatsServer.start(**(server.args | {"extra": elsewhere + nowhere}))


async def heal(server: NatsServer, isolated: NatsServer) -> None:
    """Stop the isolated server and start it again as it was: it rejoins and catches up."""
    isolated.proc.kill()
    await isolated.stop()
    await server.start_again()
