"""Three "hosts" on one machine: network namespaces on a bridge the harness made.

Each host is a namespace (`<tag>-h1` ...) with one interface on the bridge and its own
address (`10.A.B.i`); the bridge's own address (`10.A.B.254`) is the client host, where
the test process, the bank and the checker live. Faults are the hosts' own firewall
(iptables in the namespace: drops, random loss, NFQUEUE for delay) and signals to their
processes. Nothing outside the names and addresses made here is touched; `Net.destroy`
kills every process in the namespaces and removes them and the bridge, and `sweep`
removes what a harness whose process died left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import json
import os
import random
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

NETNS_DIR = Path("/run/netns")
PREFIX = "rj"  # every name the harness makes starts with it, then its process id
FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
RESTART_AFTER_S = 0.5  # how soon a process that died is started again (as `rig up` does)


class HostError(RuntimeError):
    """A command that sets up or faults the hosts failed (with what it said)."""


def run(*argv: str, ns: str | None = None, check: bool = True) -> str:
    """Run a command (in namespace `ns`); its output. Quick: setup and fault commands."""
    command = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise HostError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


async def arun(*argv: str, ns: str | None = None, check: bool = True) -> str:
    return await asyncio.to_thread(run, *argv, ns=ns, check=check)


def can_make_hosts() -> str | None:
    """Why this machine cannot make the hosts (None if it can)."""
    if os.geteuid() != 0:
        return "the Jepsen hosts need root (network namespaces)"
    for tool in ("ip", "iptables"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode:
            return f"the Jepsen hosts need `{tool}` (apt-get install iproute2 iptables)"
    if not FAKETIME.exists():
        return f"the clock fault needs {FAKETIME} (apt-get install faketime)"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep() -> list[str]:
    """Remove the namespaces and bridges of harnesses whose process is gone; their names."""
    gone = []
    tags = set()
    if NETNS_DIR.exists():
        for path in NETNS_DIR.iterdir():
            tag = path.name.split("-", 1)[0]
            if tag.startswith(PREFIX) and tag[len(PREFIX) :].isdigit():
                tags.add(tag)
    for line in run("ip", "-j", "link", "show", "type", "bridge", check=False).splitlines():
        with contextlib.suppress(ValueError):
            for link in json.loads(line):
                name = link.get("ifname", "")
                if name.startswith(PREFIX) and name.endswith("b") and name[2:-1].isdigit():
                    tags.add(name[:-1])
    for tag in sorted(tags):
        if not _alive(int(tag[len(PREFIX) :])):
            _remove(tag)
            gone.append(tag)
    return gone


def _remove(tag: str) -> None:
    for path in NETNS_DIR.glob(f"{tag}-*") if NETNS_DIR.exists() else []:
        for pid in run("ip", "netns", "pids", path.name, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run("ip", "netns", "del", path.name, check=False)
    run("ip", "link", "del", f"{tag}b", check=False)


def _free_subnet(rng: random.Random) -> str:
    """A /24 in 10/8 that no interface or route of this machine uses: its first three parts."""
    used = []
    for line in (run("ip", "-4", "-j", "addr"), run("ip", "-4", "-j", "route")):
        for item in json.loads(line or "[]"):
            for addr in item.get("addr_info", []):
                used.append(ipaddress.ip_network(f"{addr['local']}/{addr['prefixlen']}", False))
            dst = item.get("dst")
            if dst and dst != "default":
                used.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", False))
    for _ in range(1000):
        prefix = f"10.{rng.randrange(100, 250)}.{rng.randrange(1, 250)}"
        net = ipaddress.ip_network(f"{prefix}.0/24")
        if not any(net.overlaps(other) for other in used):
            return prefix
    raise HostError("no free 10.x.y.0/24 for the hosts' bridge")


def _die_with_parent() -> None:  # pragma: no cover - runs between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Proc:
    """A process of a host, kept running (started again after it dies) while `keep`."""

    name: str  # e.g. "h1/supervisor"
    host: Host
    argv: Sequence[str]
    env: dict[str, str]
    log: Path
    keep: bool = True
    clock: Path | None = None  # its faketime offset file, if its clock can jump
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    _keeper: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    async def start(self) -> None:
        """Start it (kept running from now on); one that runs already is left as it is."""
        self.keep = True
        if self.pid is not None:
            return
        env = dict(self.env)
        if self.clock is not None:
            self.clock.write_text("+0\n")
            env |= {
                "LD_PRELOAD": str(FAKETIME),
                "FAKETIME_TIMESTAMP_FILE": str(self.clock),
                "FAKETIME_CACHE_DURATION": "1",
                "DONT_FAKE_MONOTONIC": "1",  # an NTP step moves the wall clock only
            }
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                "ip",
                "netns",
                "exec",
                self.host.ns,
                *self.argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=_die_with_parent,
            )
        self.starts += 1
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep())

    async def _keep(self) -> None:
        while True:
            assert self.proc is not None
            await self.proc.wait()
            if not self.keep:
                return
            await asyncio.sleep(RESTART_AFTER_S)
            if not self.keep:
                return
            await self.start()  # and keep watching the new process

    def send(self, sig: int) -> bool:
        """Send `sig`; whether the process was there to get it."""
        pid = self.pid
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            return True
        return False

    async def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop it and do not start it again (until `start`)."""
        self.keep = False
        self.send(signal.SIGCONT)  # a paused process cannot die of SIGTERM
        self.send(sig)
        if self.proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 20)
            if self.proc.returncode is None:
                self.send(signal.SIGKILL)
                await self.proc.wait()


@dataclass
class Host:
    name: str  # h1, h2, h3
    ns: str
    ip: str
    home: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    chains: set[str] = field(default_factory=set)  # the faults' iptables chains on now

    def add(
        self, kind: str, argv: Sequence[str], env: dict[str, str], *, clock: bool = False
    ) -> Proc:
        name = f"{self.name}/{kind}"
        clock_file = self.home / f"clock-{kind}" if clock else None
        proc = Proc(name, self, argv, env, self.home / f"{kind}.log", clock=clock_file)
        self.procs[kind] = proc
        return proc

    async def iptables(self, *rule: str) -> None:
        await arun("iptables", "-w", *rule, ns=self.ns)


@dataclass
class Net:
    """The bridge, the hosts on it and the client host's address."""

    tag: str
    prefix: str
    hosts: list[Host]

    @property
    def bridge(self) -> str:
        return f"{self.tag}b"

    @property
    def client_ip(self) -> str:
        return f"{self.prefix}.254"

    def host(self, name: str) -> Host:
        return next(host for host in self.hosts if host.name == name)

    @classmethod
    def create(cls, work: Path, count: int = 3, *, seed: int = 0) -> Net:
        """Make the bridge and `count` hosts (each a namespace with a home under `work`)."""
        sweep()
        tag = f"{PREFIX}{os.getpid()}"
        _remove(tag)  # what an earlier harness of this process left
        prefix = _free_subnet(random.Random(seed ^ os.getpid()))
        net = cls(tag, prefix, [])
        try:
            run("ip", "link", "add", net.bridge, "type", "bridge")
            run("ip", "addr", "add", f"{net.client_ip}/24", "dev", net.bridge)
            run("ip", "link", "set", net.bridge, "up")
            for i in range(1, count + 1):
                host = Host(f"h{i}", f"{tag}-h{i}", f"{prefix}.{i}", work / f"h{i}")
                host.home.mkdir(parents=True, exist_ok=True)
                outside, inside = f"{tag}h{i}", f"{tag}e{i}"
                run("ip", "netns", "add", host.ns)
                run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
                run("ip", "link", "set", inside, "netns", host.ns)
                run("ip", "link", "set", outside, "master", net.bridge, "up")
                run("ip", "link", "set", "lo", "up", ns=host.ns)
                run("ip", "addr", "add", f"{host.ip}/24", "dev", inside, ns=host.ns)
                run("ip", "link", "set", inside, "up", ns=host.ns)
                net.hosts.append(host)
        except BaseException:
            net.destroy()
            raise
        return net

    def destroy(self) -> None:
        """Kill every process of the hosts; remove the namespaces and the bridge."""
        for host in self.hosts:
            for proc in host.procs.values():
                proc.keep = False
        _remove(self.tag)

    async def heal(self) -> None:
        """Take every firewall rule out of every host (partitions, loss, delay)."""
        for host in self.hosts:
            await host.iptables("-F")
            await host.iptables("-X")
            host.chains.clear()
