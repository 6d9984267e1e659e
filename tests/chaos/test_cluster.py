"""A three-node cluster (`rig up --cluster 3`): servers killed under load, executors on two
"hosts" sharing one ledger, and the cluster's own answers (docs/design/cluster.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
from nats.js.api import ConsumerConfig

from actors import RigConfig
from actors.deploy.up import spawn_actor, wait_ready
from actors.runtime.client import RigClient
from actors.runtime.nats import connect, ensure_topology, jetstream_ready
from actors.testing import eventually
from protocols import (
    TERMINAL_STATUSES,
    Names,
    RigConnectionError,
    ToolCall,
    ToolResult,
    UnavailableError,
    decode_as,
    encode,
)
from protocols._permissions import inbox_prefix
from tests.chaos.test_chaos import (
    ACTORS,
    _accepted,
    check_effects,
    job_input,
    journals,
    snapshots,
    submit_all,
)
from tests.chaos.test_crash import _stopped
from tests.conftest import ROOT
from tests.integration.test_cli import run_rig
from tests.support.cluster import as_node, cluster_up, heal, isolate, own_cluster
from tests.support.crash_tools import HostTools, shared_payments

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

TOOLS = "tests.support.crash_tools:HostTools"
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
        # The restarted servers caught up; each syncs every write (nats-cluster.conf).
        status = await eventually(lambda: _healthy(up.env), timeout=60, message="healthy again")
        servers = status["servers"]
        assert [s["name"] for s in servers] == ["n1", "n2", "n3"], status
        assert all(s["sync_always"] and s["routes"] >= 2 for s in servers), servers


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
        for folder in (sink / "paid", sink / "asked"):
            folder.mkdir(parents=True)
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
        paid, asked = shared_payments(sink)
        assert paid == {r.key for r in results}  # every call paid (once: the key holds)
        # Host A paid and froze before recording it: host B found A's claim in the
        # shared ledger, waited out its lease and asked the service, which said it had
        # happened. Rig did not ask for those twice (a ledger per host would have).
        found = _reconciled(tmp_path / "host-b.log")
        assert found, "host B reconciled no call that host A had paid"
        assert {key: asked[key] for key in found} == dict.fromkeys(found, 1), asked
        ledgers = [p.name for p in tmp_path.glob("host-*/ledger.sqlite3")]
        assert ledgers == []  # neither host kept a ledger of its own: the cluster's held
        claims = await js.key_value(rig.names.claims_bucket)
        keys = await claims.keys()
        assert len(keys) == calls and all(k.startswith("pay_shared.") for k in keys)
        # `rig ledger` reads the cluster's ledger (as the admin) when RIG_LEDGER says so.
        env = up.env | {"RIG_LEDGER": "cluster"}
        code, out, err = await run_rig(env, "ledger", "ls", "--json")
        assert code == 0, err
        listed = json.loads(out)
        assert {r["key"] for r in listed} == paid and {r["state"] for r in listed} == {"succeeded"}
        code, out, err = await run_rig(env, "ledger", "show", results[0].key, "--json")
        assert code == 0 and json.loads(out)["owner"].startswith("host-"), err


def _reconciled(log: Path) -> set[str]:
    """The keys an executor reconciled and found had happened (from its log)."""
    found = set()
    for line in log.read_text().splitlines():
        if '"ledger.reconciled"' in line:
            entry = json.loads(line)
            if entry["happened"]:
                found.add(entry["key"])
    return found


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


async def test_a_partitioned_server_refuses_writes_and_the_majority_works_on(
    tmp_path: Path,
) -> None:
    """Three servers of the test's own and `rig up --join` (actors only, spread over
    them). While jobs run, one server is cut off from the other two (restarted with
    routes that lead nowhere; its clients come back to it). The minority side refuses
    writes; the majority side accepts new jobs and finishes them; once the server
    rejoins, every job ends, every journal is whole, each refund happened once."""
    jobs, home = 150, tmp_path / "home"
    actors = {**ACTORS, "actors:Supervisor": 2}
    # Lazy sync: the partition is the point here, and the suite's other cluster test
    # syncs every write on the same disk.
    async with own_cluster(home, list(actors), lazy=True) as servers:
        async with cluster_up(home, actors, join=[as_node(s) for s in servers]) as up:
            assert up.rig is not None
            rig = up.rig
            kv = await rig.nc.jetstream().key_value(rig.names.jobs_bucket)
            submitting = asyncio.create_task(submit_all(rig, jobs, pace=0.03))
            await eventually(lambda: _accepted(kv, jobs // 5), timeout=300, message="1/5 in")
            minority = await isolate(servers[2])
            try:
                await _refuses_writes(minority.url, home, rig.names)
                # The majority: new jobs are accepted and run to their end meanwhile.
                await eventually(
                    lambda: _accepted(kv, jobs * 3 // 5), timeout=300, message="3/5 in"
                )
                last = f"chaos-{jobs * 3 // 5 - 1}"
                ended = await rig.client.wait(last, timeout=300)
                assert ended.status in TERMINAL_STATUSES, ended
                assert minority.proc.returncode is None  # still cut off, still refusing
                await _refuses_writes(minority.url, home, rig.names)
                # What an operator sees meanwhile: the cut-off server's copies are behind.
                code, out, err = await run_rig(up.env, "cluster", "status", "--json")
                status = json.loads(out)
                assert code == 1 and not status["healthy"], err
                assert any("on n3 is" in problem for problem in status["problems"]), status
            finally:
                await heal(servers[2], minority)
            await submitting
            stories = await journals(rig, jobs, timeout=300)
            for job_id, events in stories.items():
                assert [e.seq for e in events] == list(range(1, len(events) + 1)), job_id
            check_effects(rig, await snapshots(rig, jobs))
            # The healed server caught up: every replica of the journal is current.
            await eventually(
                lambda: _all_current(rig.nc, rig.names.events_stream),
                timeout=60,
                message="the healed server's copy is current",
            )
            await eventually(
                lambda: _healthy(up.env), timeout=60, message="rig cluster status: healthy"
            )


async def test_a_submit_without_a_majority_is_unavailable_and_asked_again_is_one_job(
    tmp_path: Path,
) -> None:
    """With two of three servers stopped, a supervisor can store nothing: a submit is
    answered `unavailable` (not an internal error), naming the job id it may be stored
    under. `RigClient.submit` asks again by itself while the servers come back: the
    job is accepted once and runs to its end."""
    home = tmp_path / "home"
    async with own_cluster(home, list(ACTORS), lazy=True) as servers:
        first = servers[0]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RIG_")},
            "RIG_HOME": str(home),
            "RIG_NATS_URL": first.url,  # every process on the server that stays up
            "RIG_REPLICAS": "3",
            "RIG_ACK_WAIT": "2",
            "RIG_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        }
        config = RigConfig(nats_url=first.url, home=home, names=Names(), replicas=3)
        nc = await connect(config, name="unavailable-test", role="admin")
        await jetstream_ready(nc.jetstream())  # as `rig up` does
        await ensure_topology(nc.jetstream(), config.names, 3)
        procs = []
        try:
            ready = await nc.subscribe(config.names.actor_ready)
            with (home / "actors.log").open("ab") as log:
                for target, count in ACTORS.items():
                    for _ in range(count):
                        procs.append(await spawn_actor(target, env=env, cwd=ROOT, log=log))
            await wait_ready(ready, {p.pid for p in procs}, timeout=90)
            hasty = RigClient(nc, config, outage_patience=0)
            before = await hasty.submit("refund", job_input(1), job_id="before")
            assert (await hasty.wait(before.job_id, timeout=60)).status == "succeeded"

            for server in servers[1:]:
                await server.stop()
            refused = await eventually(
                lambda: _unavailable(hasty, job_input(2)),
                timeout=60,
                message="a submit answered unavailable",
            )
            assert refused.retry_after > 0 and refused.job_id == "refused", refused.to_dict()

            patient = RigClient(nc, config, outage_patience=120)
            submitting = asyncio.create_task(patient.submit("refund", job_input(3)))
            log = home / "actors.log"
            [named] = await eventually(
                lambda: asyncio.to_thread(lambda: _logged(log, "job.unavailable") - {"refused"}),
                timeout=60,
                message="the patient submit refused once",
            )
            assert not submitting.done()
            # An actor started now, with no majority to answer it (as while a restarted
            # cluster elects its leaders: the Jepsen harness, seed 11, restarts), waits
            # for one rather than exiting.
            waited = len(await asyncio.to_thread(_lines, log, "start.waiting"))
            with log.open("ab") as out:
                late = await spawn_actor("actors:Supervisor", env=env, cwd=ROOT, log=out)
            procs.append(late)
            await eventually(
                lambda: asyncio.to_thread(lambda: len(_lines(log, "start.waiting")) > waited),
                timeout=60,
                message="the late supervisor waiting for a majority",
            )
            for server in servers[1:]:
                await server.start_again()
            await wait_ready(ready, {late.pid}, timeout=90)
            assert late.returncode is None
            accepted = await asyncio.wait_for(submitting, 150)
            assert accepted.job_id == named  # asked again under the id it was given
            ended = await patient.wait(accepted.job_id, timeout=120)
            assert ended.status == "succeeded", ended
            kv = await nc.jetstream().key_value(config.names.jobs_bucket)
            jobs = await eventually(  # a leader elected just now may not have applied all yet
                lambda: _keys(kv, {"before", accepted.job_id}), message="both jobs listed"
            )
            # One job for the patient submit; the refused one may have been stored too.
            assert {"before", accepted.job_id} <= jobs <= {"before", accepted.job_id, "refused"}
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*(proc.wait() for proc in procs))
            await nc.close()


async def _keys(kv: Any, needed: set[str]) -> set[str] | None:
    with contextlib.suppress(nats.js.errors.NoKeysError):
        keys = set(await kv.keys())
        return keys if needed <= keys else None
    return None


def _logged(log: Path, event: str) -> set[str]:
    """The job ids of the `event` lines in a JSON log."""
    return {said.get("job_id") for said in _lines(log, event)}


def _lines(log: Path, event: str) -> list[dict[str, Any]]:
    """The `event` lines of a JSON log."""
    found = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            said = json.loads(line)
            if isinstance(said, dict) and said.get("event") == event:
                found.append(said)
    return found


async def _unavailable(client: RigClient, job_input: dict[str, Any]) -> UnavailableError | None:
    """The `UnavailableError` a submit gets now, or None (a request that timed out
    meanwhile: the client's connection moved, or the servers were still stopping)."""
    try:
        await client.submit("refund", job_input, job_id="refused")
    except UnavailableError as exc:
        return exc
    except RigConnectionError:
        return None
    raise AssertionError("a submit was accepted with two of three servers stopped")


async def _refuses_writes(url: str, home: Path, names: Names) -> None:
    """A client of the isolated server only (the admin: nothing refused by permission)
    cannot store a message or change a key: no majority stands behind that server."""
    nc = await nats.connect(
        url,
        nkeys_seed=str(home / "creds" / "admin.nk"),
        inbox_prefix=inbox_prefix(names, "admin"),
        max_reconnect_attempts=0,
    )
    try:
        js = nc.jetstream(timeout=3)
        with pytest.raises((TimeoutError, nats.errors.Error, nats.js.errors.Error)):
            await js.publish(names.events("partition-probe"), b"{}")
        with pytest.raises((TimeoutError, nats.errors.Error, nats.js.errors.Error)):
            await (await js.key_value(names.jobs_bucket)).put("partition-probe", b"{}")
    finally:
        await nc.close()


async def _healthy(env: dict[str, str]) -> dict[str, Any] | None:
    """`rig cluster status --json`, when it says healthy (exit 0)."""
    code, out, _ = await run_rig(env, "cluster", "status", "--json")
    status: dict[str, Any] = json.loads(out) if out.strip() else {}
    return status if code == 0 and status.get("healthy") else None


async def _all_current(nc: Any, stream: str) -> bool:
    info = await nc.jetstream().stream_info(stream)
    replicas = info.cluster.replicas or []
    return len(replicas) == 2 and all(peer.current for peer in replicas)
