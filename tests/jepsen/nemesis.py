"""The nemesis: faults planned from a seed, then done to the hosts on schedule.

`plan` turns a seed, a length and the fault kinds into a list of `Fault`s (when, what,
to whom, how long): the same seed and options always give the same plan, which is how a
failing run is replayed. The first faults take each kind once, so a short run sees every
kind; with `together`, faults overlap. `Nemesis` does them and undoes each when its time
is up; every fault has its own iptables chain, so undoing one leaves the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.jepsen.cluster import ROOT, Cluster, drop_caches
from tests.jepsen.hosts import Host
from tests.jepsen.workload import History

KINDS = ("partition", "delay", "loss", "pause", "kill", "clock", "restart", "power")
ACTOR_KINDS = ("supervisor", "agent", "tools", "checks")
PROCESS_KINDS = ("nats", *ACTOR_KINDS, "gateway")
HOSTS = ("h1", "h2", "h3")


@dataclass(frozen=True)
class Fault:
    index: int
    at: float  # seconds after the run began
    kind: str
    seconds: float  # how long it lasts
    target: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        said = ", ".join(f"{k}={v}" for k, v in self.target.items())
        return f"{self.kind}({said}) at {self.at:.1f}s for {self.seconds:.1f}s"


def plan(seed: int, seconds: float, kinds: tuple[str, ...], *, together: bool) -> list[Fault]:
    """The faults of a run, from its seed."""
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"fault kinds are {', '.join(KINDS)}; not {sorted(unknown) or 'none'}")
    rng = random.Random(seed)
    first = rng.sample(kinds, len(kinds))
    faults: list[Fault] = []
    at = 3.0
    while at < seconds:
        kind = first.pop(0) if first else rng.choice(kinds)
        fault = _fault(rng, len(faults), at, kind)
        faults.append(fault)
        if together and len(kinds) > 1 and rng.random() < 0.6:
            at += rng.uniform(0.5, max(fault.seconds, 1.0))  # the next one overlaps it
        else:
            at += fault.seconds + rng.uniform(2.0, 5.0)  # a quiet spell between
    return faults


def _fault(rng: random.Random, index: int, at: float, kind: str) -> Fault:
    target: dict[str, Any]
    hosts = list(HOSTS)
    rng.shuffle(hosts)
    if kind == "partition":
        shape = rng.choice(("majority", "bridge", "oneway"))
        # hosts[0]: the one cut off (majority), the bridge, or the one whose sends are lost
        return Fault(index, at, kind, rng.uniform(6, 15), {"shape": shape, "hosts": hosts})
    if kind in ("delay", "loss"):
        links = "all" if rng.random() < 0.5 else hosts[0]
        amount = (
            {"delay_s": round(rng.uniform(0.2, 1.0), 2), "jitter_s": 0.1}
            if kind == "delay"
            else {"loss": round(rng.uniform(0.1, 0.3), 2)}
        )
        return Fault(index, at, kind, rng.uniform(5, 12), {"links": links, **amount})
    if kind == "pause":
        target = {"host": hosts[0], "process": rng.choice(PROCESS_KINDS)}
        return Fault(index, at, kind, rng.uniform(3, 10), target)
    if kind == "kill":
        return Fault(index, at, kind, 0.0, {"host": hosts[0], "process": rng.choice(PROCESS_KINDS)})
    if kind == "clock":
        jump = rng.choice((-1, 1)) * rng.randrange(60, 300)
        target = {"host": hosts[0], "process": rng.choice(ACTOR_KINDS), "jump_s": jump}
        return Fault(index, at, kind, rng.uniform(5, 15), target)
    if kind == "restart":
        return Fault(index, at, kind, rng.uniform(1, 3), {})
    return Fault(index, at, "power", rng.uniform(2, 5), {"host": hosts[0]})


class Nemesis:
    """Does a plan's faults to a cluster, writing each to the history."""

    def __init__(self, cluster: Cluster, history: History) -> None:
        self.cluster = cluster
        self.history = history
        self._delayers: dict[int, list[asyncio.subprocess.Process]] = {}
        self._active: set[asyncio.Task[None]] = set()

    def host(self, name: str) -> Host:
        return self.cluster.net.host(name)

    async def run(self, faults: list[Fault]) -> None:
        began = time.monotonic()
        for fault in faults:
            await asyncio.sleep(max(began + fault.at - time.monotonic(), 0.0))
            task = asyncio.create_task(self._do(fault))
            self._active.add(task)
            task.add_done_callback(self._active.discard)
        await asyncio.gather(*self._active)

    async def _do(self, fault: Fault) -> None:
        self.history.add(process="nemesis", type="invoke", f=fault.kind, value=asdict(fault))
        try:
            try:
                await self._start(fault)
                await asyncio.sleep(fault.seconds)
            finally:
                await self._undo(fault)
        except Exception as exc:  # written down; the run goes on (`heal` undoes all)
            said = {"index": fault.index, "error": repr(exc)}
            self.history.add(process="nemesis", type="fail", f=fault.kind, value=said)
            return
        self.history.add(process="nemesis", type="ok", f=fault.kind, value={"index": fault.index})

    async def _start(self, fault: Fault) -> None:
        target = fault.target
        if fault.kind == "partition":
            await self._partition(fault)
        elif fault.kind in ("delay", "loss"):
            await self._links(fault)
        elif fault.kind == "pause":
            self.host(target["host"]).procs[target["process"]].send(signal.SIGSTOP)
        elif fault.kind == "kill":
            self.host(target["host"]).procs[target["process"]].send(signal.SIGKILL)
        elif fault.kind == "clock":
            clock = self.host(target["host"]).procs[target["process"]].clock
            assert clock is not None
            clock.write_text(f"{target['jump_s']:+d}s\n")
        elif fault.kind == "restart":
            await self.cluster.stop_all()
        elif fault.kind == "power":
            await self.cluster.stop_all([self.host(target["host"])])
            await drop_caches()

    async def _undo(self, fault: Fault) -> None:
        target = fault.target
        if fault.kind in ("partition", "delay", "loss"):
            for delayer in self._delayers.pop(fault.index, []):
                with contextlib.suppress(ProcessLookupError):
                    delayer.kill()
                await delayer.wait()
            for host in self.cluster.net.hosts:
                await _drop_chain(host, fault.index)
        elif fault.kind == "pause":
            self.host(target["host"]).procs[target["process"]].send(signal.SIGCONT)
        elif fault.kind == "clock":
            clock = self.host(target["host"]).procs[target["process"]].clock
            assert clock is not None
            clock.write_text("+0\n")
        elif fault.kind == "restart":
            await self.cluster.start_servers()
            await self.cluster.start_actors(wait=False)
        elif fault.kind == "power":
            host = self.host(target["host"])
            await self.cluster.start_servers([host])
            await self.cluster.start_actors([host], wait=False)

    async def _partition(self, fault: Fault) -> None:
        a, b, c = (self.host(name) for name in fault.target["hosts"])
        shape = fault.target["shape"]
        if shape == "majority":  # a alone; b and c together
            cuts = [(a, b), (b, a), (a, c), (c, a)]
        elif shape == "bridge":  # a sees b and c; b and c do not see each other
            cuts = [(b, c), (c, b)]
        else:  # oneway: what a sends b is lost; b to a goes through
            cuts = [(a, b)]
        for source, dest in cuts:
            await _rule(source, fault.index, "OUTPUT", "-d", dest.ip, "-j", "DROP")
            await _rule(dest, fault.index, "INPUT", "-s", source.ip, "-j", "DROP")

    async def _links(self, fault: Fault) -> None:
        """Delay or loss on one host's links to the others (both ways), or on all."""
        hosts = self.cluster.net.hosts
        links = fault.target["links"]
        pairs = [(s, d) for s in hosts for d in hosts if s is not d]
        if links != "all":
            pairs = [(s, d) for s, d in pairs if links in (s.name, d.name)]
        queue = 100 + fault.index
        for source, dest in pairs:
            if fault.kind == "loss":
                chance = str(fault.target["loss"])
                rule = ("-m", "statistic", "--mode", "random", "--probability", chance)
                await _rule(source, fault.index, "OUTPUT", "-d", dest.ip, *rule, "-j", "DROP")
            else:
                nfqueue = ("-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass")
                await _rule(source, fault.index, "OUTPUT", "-d", dest.ip, *nfqueue)
        if fault.kind == "delay":
            for host in {source.name: source for source, _ in pairs}.values():
                argv = (str(queue), str(fault.target["delay_s"]), str(fault.target["jitter_s"]))
                with (host.home / "delay.log").open("ab") as log:
                    delayer = await asyncio.create_subprocess_exec(
                        *("ip", "netns", "exec", host.ns, sys.executable, "-m"),
                        *("tests.jepsen.delay", *argv),
                        cwd=ROOT,
                        stdout=log,
                        stderr=log,
                    )
                self._delayers.setdefault(fault.index, []).append(delayer)

    async def heal(self) -> None:
        """Undo everything: the faults still on, every paused process, every clock; start
        what is stopped."""
        for task in list(self._active):
            task.cancel()
        await asyncio.gather(*self._active, return_exceptions=True)
        for procs in self._delayers.values():
            for delayer in procs:
                with contextlib.suppress(ProcessLookupError):
                    delayer.kill()
        self._delayers.clear()
        await self.cluster.net.heal()
        for proc in self.cluster.procs():
            proc.send(signal.SIGCONT)
            if proc.clock is not None:
                proc.clock.write_text("+0\n")
        stopped = [h for h in self.cluster.net.hosts if any(not p.keep for p in h.procs.values())]
        if stopped:
            await self.cluster.start_servers(stopped)
            await self.cluster.start_actors(stopped)
        self.history.add(process="nemesis", type="ok", f="heal", value={})


async def _rule(host: Host, index: int, hook: str, *rule: str) -> None:
    """Add `rule` to the fault's own chain for `hook` (INPUT or OUTPUT) on `host` (the
    chain made, and jumped to from the hook, once)."""
    chain = f"F{index}{hook[0]}"
    if chain not in host.chains:
        await host.iptables("-N", chain)
        await host.iptables("-I", hook, "-j", chain)
        host.chains.add(chain)
    await host.iptables("-A", chain, *rule)


async def _drop_chain(host: Host, index: int) -> None:
    for hook in ("INPUT", "OUTPUT"):
        chain = f"F{index}{hook[0]}"
        if chain in host.chains:
            await host.iptables("-D", hook, "-j", chain)
            await host.iptables("-F", chain)
            await host.iptables("-X", chain)
            host.chains.discard(chain)
