"""Rig on the three hosts: on each a nats-server of one cluster and a full set of actors
(supervisor, agent, tool executor, verifier, gateway), as production would run them:
one NATS user per role, every stream and bucket in three copies, the tool ledger's
claims in the cluster. The client host (the test process) reaches every server and
gateway over the bridge.

Profiles: `always` (the shipped nats-cluster.conf: every write on disk before its ack)
and `default` (nats-server's own 2-minute `sync_interval`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from actors import RigConfig
from actors.deploy.roles import deployment_config
from actors.deploy.up import (
    GATEWAY,
    find_conf,
    load_actor_class,
    nats_server_binary,
    node_conf,
)
from actors.gateway.keys import add_key
from actors.runtime.client import RigClient
from actors.runtime.nats import connect, ensure_topology, jetstream_ready
from actors.testing import eventually
from protocols import ActorReady, Names, decode_as
from tests.jepsen.agents import Bank
from tests.jepsen.hosts import Host, Net, Proc, arun

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("always", "default")
PARTITIONS = 16  # the supervisors' split of the work, the same on every host
ACTORS = {
    "supervisor": "actors:Supervisor",
    "agent": "tests.jepsen.agents:LedgerAgent",
    "tools": "tests.jepsen.agents:LedgerTools",
    "checks": "tests.jepsen.agents:LedgerChecks",
}
CLIENT_PORT, ROUTE_PORT, GATEWAY_PORT = 4222, 6222, 8080


@dataclass
class Cluster:
    net: Net
    deploy: Path  # the deployment's home on the client host: the servers' config, the seeds
    profile: str
    bank: Bank
    bank_url: str
    api_key: str
    client: RigClient | None = None
    _runners: list[web.AppRunner] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"nats://{host.ip}:{CLIENT_PORT}" for host in self.net.hosts]

    @property
    def gateways(self) -> list[str]:
        return [f"http://{host.ip}:{GATEWAY_PORT}" for host in self.net.hosts]

    def procs(self) -> list[Proc]:
        return [proc for host in self.net.hosts for proc in host.procs.values()]

    def config(self) -> RigConfig:
        return RigConfig(
            nats_url=",".join(self.urls),
            home=self.deploy,
            names=Names(partitions=PARTITIONS),
            replicas=3,
        )

    async def start_servers(self, hosts: list[Host] | None = None) -> None:
        await asyncio.gather(*(host.procs["nats"].start() for host in hosts or self.net.hosts))

    async def start_actors(self, hosts: list[Host] | None = None, *, wait: bool = True) -> None:
        """Start the actors and gateways of `hosts` (all); with `wait`, return once each
        serves (the nemesis does not wait: another fault may be holding them back)."""
        assert self.client is not None
        hosts = hosts or self.net.hosts
        if not wait:
            for proc in (p for h in hosts for kind, p in h.procs.items() if kind != "nats"):
                await proc.start()
            return
        ready = await self.client.nc.subscribe(self.config().names.actor_ready)
        try:
            actors = [p for h in hosts for kind, p in h.procs.items() if kind in ACTORS]
            for proc in actors + [h.procs["gateway"] for h in hosts]:
                await proc.start()
            # Each by the pid it has now: one that exited while the cluster was electing
            # its leaders was started again under another.
            announced: set[int] = set()
            async with asyncio.timeout(90):
                while not all(proc.pid in announced for proc in actors):
                    msg = await ready.next_msg(timeout=90)
                    announced.add(decode_as(ActorReady, msg.data)[0].pid)
        finally:
            await ready.unsubscribe()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            for url in (f"http://{host.ip}:{GATEWAY_PORT}/readyz" for host in hosts):
                await eventually(
                    functools.partial(_serves, http, url), timeout=60, message=f"{url} answers"
                )

    async def stop_all(self, hosts: list[Host] | None = None) -> None:
        """SIGKILL every process of `hosts` (all), none started again until asked."""
        procs = [p for h in hosts or self.net.hosts for p in h.procs.values()]
        await asyncio.gather(*(proc.stop() for proc in procs))

    async def connect(self) -> RigClient:
        """The client host's connection (to every server), once JetStream answers."""
        config = self.config()
        nc = await connect(config, name="jepsen-client", role="admin")
        await jetstream_ready(nc.jetstream(), timeout=60)
        self.client = RigClient(nc, config, request_timeout=2.0, outage_patience=0.0)
        return self.client


async def _serves(http: aiohttp.ClientSession, url: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with http.get(url) as answer:
            return answer.status == 200
    return False


def _server_argv(host: Host, conf: Path, net: Net) -> list[str]:
    routes = ",".join(f"nats://{h.ip}:{ROUTE_PORT}" for h in net.hosts)
    return [
        str(nats_server_binary()),
        *("-c", str(conf), "-sd", str(host.home / "nats")),
        *("-a", "0.0.0.0", "-p", str(CLIENT_PORT), "-m", "8222"),
        *("--cluster", f"nats://{host.ip}:{ROUTE_PORT}", "--routes", routes),
    ]


def _base_conf(deploy: Path, profile: str) -> Path:
    text = find_conf("nats-cluster.conf").read_text()
    if profile == "default":
        text = text.replace("sync_interval: always", "# sync_interval: nats-server's default")
    base = deploy / "nats-cluster.conf"
    base.write_text(text)
    return base


@contextlib.asynccontextmanager
async def cluster_on_hosts(
    work: Path, *, profile: str = "always", seed: int = 0
) -> AsyncIterator[Cluster]:
    """Make the hosts, start Rig on them and a bank on the client host; tear all of it
    down at the end, whatever happened."""
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r}: one of {', '.join(PROFILES)}")
    work.mkdir(parents=True, exist_ok=True)
    net = await asyncio.to_thread(Net.create, work, seed=seed)
    cluster = None
    try:
        deploy = work / "deploy"
        deploy.mkdir(exist_ok=True)
        targets = [*ACTORS.values(), GATEWAY]
        classes = [load_actor_class(target) for target in targets]
        names = Names(partitions=PARTITIONS)
        conf = await asyncio.to_thread(
            deployment_config, deploy, names, classes, _base_conf(deploy, profile)
        )
        keys = deploy / "gateway-keys"
        api_key = add_key(keys, "jepsen")
        bank = Bank()
        runner = web.AppRunner(bank.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, net.client_ip, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        cluster = Cluster(net, deploy, profile, bank, f"http://{net.client_ip}:{port}", api_key)
        cluster._runners.append(runner)
        for i, host in enumerate(net.hosts):
            shutil.copytree(deploy / "creds", host.home / "creds", dirs_exist_ok=True)
            host.add(
                "nats", _server_argv(host, node_conf(conf, f"n{i + 1}"), net), dict(os.environ)
            )
            urls = cluster.urls[i:] + cluster.urls[:i]  # its own server first
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("RIG_")},
                "RIG_HOME": str(host.home),
                "RIG_NATS_URL": ",".join(urls),
                "RIG_LEDGER": "cluster",
                "RIG_REPLICAS": "3",
                "RIG_SUPERVISOR_PARTITIONS": str(PARTITIONS),
                "RIG_ACK_WAIT": "2",
                # A timer the servers lose is sent again within the settle bound.
                "RIG_TIMER_SWEEP_S": "10",
                "RIG_LOG_FORMAT": "json",
                "RIG_HOSTNAME": host.name,
                "PYTHONPATH": str(ROOT),
                "JEPSEN_BANK": cluster.bank_url,
            }
            for kind, target in ACTORS.items():
                argv = [sys.executable, "-m", "actors", "run", target]
                host.add(kind, argv, env, clock=True)
            gateway_env = env | {
                "RIG_GATEWAY_KEYS": str(keys),
                "RIG_GATEWAY_HOST": "0.0.0.0",
                "RIG_GATEWAY_PORT": str(GATEWAY_PORT),
            }
            host.add("gateway", [sys.executable, "-m", "actors", "gateway"], gateway_env)
        await cluster.start_servers()
        client = await cluster.connect()
        await ensure_topology(client.nc.jetstream(), names, 3)
        await cluster.start_actors()
        yield cluster
    finally:
        if cluster is not None:
            if cluster.client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(cluster.client.nc.close(), 10)
            for runner in cluster._runners:
                await runner.cleanup()
            await cluster.stop_all()
        await asyncio.to_thread(net.destroy)


async def drop_caches() -> None:
    """Write out and drop the page cache, as far as this kernel lets a test (a host's
    power loss cannot take unsynced pages with it here: they are the machine's)."""
    await arun("sync")
    with contextlib.suppress(OSError):
        await asyncio.to_thread(Path("/proc/sys/vm/drop_caches").write_text, "3\n")
