"""A three-node cluster (`rig up --cluster 3`): servers killed under load, executors on two
"hosts" sharing one ledger, and the cluster's own answers (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from nats.js.api import ConsumerConfig

from actors._up import spawn_actor
from protocols import ToolCall, ToolResult, decode_as, encode
from tests.cluster import cluster_up
from tests.conftest import ROOT, eventually
from tests.crash_tools import HostTools, shared_payments
from tests.test_chaos import (
    ACTORS,
    _accepted,
    check_effects,
    journals,
    snapshots,
    submit_all,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

TOOLS = "tests.crash_tools:HostTools"
ARGS = {"account": "acct-1", "amount": 12.5}


async def test_300_jobs_while_two_servers_are_killed_in_turn(tmp_path: Path) -> None:
    """The refund example on three servers with every stream and bucket in three copies;
    one server is SIGKILLed once a fifth of the jobs are in (rig up starts it again),
    then another once most are: every job ends, every journal is whole and in order,
    and the bank (an effects sink the ledger knows nothing of) refunded each job that
    reached `done` exactly once."""
    jobs = 300
    async with cluster_up(tmp_path / "home", {**ACTORS, "actors:Supervisor": 2}) as up:
        assert up.rig is not None
        rig = up.rig
        kv = await rig.nc.jetstream().key_value(rig.names.jobs_bucket)
        assert (
            await rig.nc.jetstream().stream_info(f"KV_{rig.names.jobs_bucket}")
        ).config.num_replicas == 3
        submitting = asyncio.create_task(submit_all(rig, jobs, pace=0.02))
        for name, share in (("n1", 5), ("n2", 2)):
            await eventually(
                lambda share=share: _accepted(kv, jobs // share),
                timeout=180,
                message=f"1/{share} of the jobs accepted",
            )
            up.kill(name)
            await up.restarted(name)
        await submitting
        stories = await journals(rig, jobs, timeout=300)
        assert len(stories) == jobs
        for job_id, events in stories.items():
            assert [e.seq for e in events] == list(range(1, len(events) + 1)), job_id
            steps = [e.step for e in events if e.type == "decision"]
            assert steps == list(range(1, len(steps) + 1)), job_id
        check_effects(rig, await snapshots(rig, jobs))
        print(f"\ncluster: {jobs} jobs, 2 servers SIGKILLed and restarted")


async def test_executors_on_two_hosts_share_one_ledger(tmp_path: Path) -> None:
    """Two tool executors, each on a server of its own with a home (and host name) of its
    own, the cluster's ledger between them. Host A takes five payments at once and freezes
    (SIGSTOP) right after paying the first, holding them all past their leases; host B
    gets the same calls again: it finds what A claimed, waits out A's leases, reconciles
    the calls whose effect may have happened and runs those that had not. Woken, A's late
    records are refused. Exactly one payment per call."""
    calls = 5
    home = tmp_path / "home"
    async with cluster_up(home, {TOOLS: 0}) as up:
        assert up.rig is not None
        rig = up.rig
        js = rig.nc.jetstream()
        await js.add_consumer(
            rig.names.work_stream,
            ConsumerConfig(durable_name="probe", filter_subject=rig.names.supervisor_all),
        )
        sink = tmp_path / "sink"
        sink.mkdir()
        hosts = {}
        for host, node in (("host-a", up.nodes[0]), ("host-b", up.nodes[1])):
            folder = tmp_path / host
            folder.mkdir()
            hosts[host] = {
                **up.env,
                "RIG_HOME": str(folder),
                "RIG_NATS_URL": node.url,  # this host's server only
                "RIG_CREDS": str(home / "creds" / f"{HostTools.role_name()}.nk"),
                "RIG_HOSTNAME": host,
                "RIG_LEDGER": "cluster",
                "RIG_TEST_SINK": str(sink),
            }
        hosts["host-a"] |= {
            "RIG_PAUSE_AT": "after_effect",
            "RIG_CRASH_MARKER": str(tmp_path / "paused"),
        }
        ready = await rig.nc.subscribe(rig.names.actor_ready)
        a = await _executor(hosts["host-a"], tmp_path / "host-a.log")
        await ready.next_msg(timeout=60)
        for step in range(1, calls + 1):
            message = ToolCall(job_id=f"job-{step}", step=step, tool="pay_shared", args=ARGS)
            await js.publish(
                rig.names.tool("pay_shared"),
                encode(message),
                headers={"Nats-Msg-Id": f"c{step}"},
            )
        await eventually(lambda: asyncio.to_thread(_stopped, a.pid), message="host A frozen")
        b = await _executor(hosts["host-b"], tmp_path / "host-b.log")
        try:
            results = await _reports(rig, calls)
            assert sorted(r.step for r in results) == list(range(1, calls + 1))
            assert all(r.ok for r in results), [r.error for r in results if not r.ok]
            a.send_signal(signal.SIGCONT)
            log = tmp_path / "host-a.log"
            await eventually(
                lambda: asyncio.to_thread(lambda: "ledger.fenced" in log.read_text()),
                timeout=60,
                message="host A's late record was refused",
            )
        finally:
            for proc in (a, b):
                if proc.returncode is None:
                    proc.send_signal(signal.SIGCONT)
                    proc.send_signal(signal.SIGTERM)
            await asyncio.gather(a.wait(), b.wait())
        paid = shared_payments(sink)
        assert sorted(paid.values()) == [1] * calls, paid
        assert set(paid) == {r.key for r in results}
        ledgers = [p.name for p in tmp_path.glob("host-*/ledger.sqlite3")]
        assert ledgers == []  # neither host kept a ledger of its own: the cluster's held
        claims = await js.key_value(rig.names.claims_bucket)
        keys = await claims.keys()
        assert len(keys) == calls and all(k.startswith("pay_shared.") for k in keys)


async def _executor(env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("ab") as log:
        return await spawn_actor(TOOLS, env=env, cwd=ROOT, log=log)


async def _reports(rig: object, count: int) -> list[ToolResult]:
    js = rig.nc.jetstream()  # type: ignore[attr-defined]
    sub = await js.pull_subscribe_bind("probe", stream=rig.names.work_stream)  # type: ignore[attr-defined]
    found: dict[int, ToolResult] = {}
    async with asyncio.timeout(120):
        while len(found) < count:
            try:
                msgs = await sub.fetch(count, timeout=5)
            except TimeoutError:
                continue
            for msg in msgs:
                result = decode_as(ToolResult, msg.data)[0]
                found[result.step] = result
                await msg.ack()
    return list(found.values())


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"
