"""The SQLite ledger: one claim runs, repeats get the record, stale runs are fenced off."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path

from actors import Ledger
from actors.testing import Deployment
from protocols import JobSnapshot, encode
from tests.conftest import ROOT
from tests.integration.test_cli import rig_cli

ARGS = dict(job_id="j1", tool="refund", args_hash="h1")


async def test_first_claim_runs_and_repeats_get_the_result(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path / "l.db", owner="a")
    claim = await ledger.claim("k", **ARGS, lease=30)
    assert (claim.outcome, claim.epoch) == ("claimed", 1)
    assert await ledger.complete("k", 1, {"refund_id": "r1"})
    again = await ledger.claim("k", **ARGS, lease=30)
    assert again.outcome == "succeeded"
    assert again.record is not None and again.record.result == {"refund_id": "r1"}
    await ledger.close()


async def test_the_file_is_wal_with_full_sync(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path / "l.db", owner="a")
    await ledger.close()
    with sqlite3.connect(tmp_path / "l.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_many_executors_open_a_new_ledger_at_once(tmp_path: Path) -> None:
    """Opening a fresh file from several connections at once used to fail, now and then,
    with "database is locked" while switching it to WAL (and then hang the process)."""
    for attempt in range(20):
        path = tmp_path / f"ledger-{attempt}.sqlite3"
        ledgers = await asyncio.gather(*(Ledger.open(path, owner=f"o{n}") for n in range(8)))
        for ledger in ledgers:
            await ledger.close()


async def test_live_claim_is_busy_and_other_args_conflict(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path / "l.db", owner="a")
    await ledger.claim("k", **ARGS, lease=30)
    busy = await ledger.claim("k", **ARGS, lease=30)
    assert busy.outcome == "busy" and 0 < busy.retry_after <= 30
    conflict = await ledger.claim("k", job_id="j1", tool="refund", args_hash="other", lease=30)
    assert conflict.outcome == "conflict"
    await ledger.close()


async def test_a_dead_holder_ends_its_lease_at_once(tmp_path: Path) -> None:
    """Naming the holder as dead ends a live lease: unknown for an effect, a new epoch for a
    pure call; naming someone else changes nothing."""
    ledger = await Ledger.open(tmp_path / "l.db", owner="host:1")
    await ledger.claim("k", **ARGS, lease=300)
    assert (await ledger.claim("k", **ARGS, lease=30, dead_owner="host:2")).outcome == "busy"
    assert (await ledger.claim("k", **ARGS, lease=30, dead_owner="host:1")).outcome == "unknown"
    pure = {**ARGS, "tool": "lookup"}
    await ledger.claim("p", **pure, lease=300, side_effects=False)
    again = await ledger.claim("p", **pure, lease=30, side_effects=False, dead_owner="host:1")
    assert again.outcome == "claimed" and again.epoch == 2
    await ledger.close()


def test_a_holder_is_gone_only_when_this_host_says_so() -> None:
    import os
    import subprocess

    from actors.tools.executor import _gone, ledger_owner

    me = ledger_owner()
    here, namespace, _ = me.rsplit(":", 2)
    assert not _gone(me)  # ourselves
    assert not _gone(f"another-host:{namespace}:{os.getpid() + 1}")  # cannot tell
    child = subprocess.Popen(["true"])
    child.wait()
    assert _gone(f"{here}:{namespace}:{child.pid}")  # exited and reaped
    assert not _gone(f"{here}:{child.pid}")  # an owner written without its namespace


async def test_a_holder_in_another_pid_namespace_is_never_judged_gone() -> None:
    """Two containers may share a host name but not their process ids: an executor in
    another PID namespace, alive, whose pid does not exist here, is not taken for dead
    (its claim is waited out, not ended early). A real process in a namespace of its own
    (`unshare`), given a pid no process of ours has."""
    import asyncio
    import sys

    from actors.tools.executor import _gone

    holder = (
        "import subprocess, sys\n"
        "open('/proc/sys/kernel/ns_last_pid', 'w').write('4189999')\n"
        "subprocess.run([sys.executable, '-c', 'from actors.tools.executor import ledger_owner;"
        " print(ledger_owner(), flush=True); import sys; sys.stdin.read()'])\n"
    )
    proc = await asyncio.create_subprocess_exec(
        *("unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"),
        *(sys.executable, "-c", holder),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        owner = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert owner.endswith(":4190000"), owner  # a pid this namespace has not got
        assert not _gone(owner)
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)


async def test_expired_side_effect_becomes_unknown_and_never_reruns(tmp_path: Path) -> None:
    """A side-effecting call whose lease ran out is `unknown`, then stays so."""
    ledger = await Ledger.open(tmp_path / "l.db", owner="a")
    await ledger.claim("k", **ARGS, lease=0)
    assert (await ledger.claim("k", **ARGS, lease=30)).outcome == "unknown"
    assert (await ledger.claim("k", **ARGS, lease=30)).outcome == "unknown"
    record = await ledger.get("k")
    assert record is not None and record.state == "unknown"
    await ledger.close()


async def test_expired_pure_call_is_reclaimed_and_the_stale_run_is_fenced(tmp_path: Path) -> None:
    """A call without side effects is claimed again under a new epoch; the old one can't finish."""
    ledger = await Ledger.open(tmp_path / "l.db", owner="a")
    await ledger.claim("k", **ARGS, lease=0, side_effects=False)
    second = await ledger.claim("k", **ARGS, lease=30, side_effects=False)
    assert (second.outcome, second.epoch) == ("claimed", 2)
    assert not await ledger.complete("k", 1, "stale")
    assert await ledger.complete("k", 2, "fresh")
    record = await ledger.get("k")
    assert record is not None and record.result == "fresh"
    await ledger.close()


async def test_failures_retryable_or_final(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path / "l.db", owner="a")
    await ledger.claim("k", **ARGS, lease=30)
    assert await ledger.fail("k", 1, {"code": "x"}, retryable=True)
    assert (await ledger.claim("k", **ARGS, lease=30)).epoch == 2
    assert await ledger.fail("k", 2, {"code": "y"}, retryable=False)
    final = await ledger.claim("k", **ARGS, lease=30)
    assert final.outcome == "failed" and final.record is not None
    assert final.record.error == {"code": "y"}
    await ledger.close()


async def test_one_claim_wins_across_connections(tmp_path: Path) -> None:
    """Eight connections to one file claim the same key at once: exactly one is `claimed`."""
    ledgers = [await Ledger.open(tmp_path / "l.db", owner=f"o{i}") for i in range(8)]
    claims = await asyncio.gather(*(led.claim("k", **ARGS, lease=30) for led in ledgers))
    assert sorted(c.outcome for c in claims) == ["busy"] * 7 + ["claimed"]
    for led in ledgers:
        await led.close()


async def test_rig_ledger_ls_show_and_prune(rig: Deployment) -> None:
    """`rig ledger` lists and shows records; prune deletes only finished records of jobs
    that have ended: never an in-progress or unknown one, nor one of a job parked for a
    person (it may take the same call again, and must find its record), nor one of a
    job the deployment does not know."""
    jobs = await rig.nc.jetstream().key_value(rig.names.jobs_bucket)
    for job_id, status in (("ended", "succeeded"), ("parked", "waiting_human")):
        snapshot = JobSnapshot(job_id=job_id, agent="refund", status=status, input={})
        await jobs.put(job_id, encode(snapshot))
    ledger = await Ledger.open(rig.home / "ledger.sqlite3", owner="a")
    for key, job_id in (("done", "ended"), ("waits", "parked"), ("stranger", "nowhere")):
        await ledger.claim(key, job_id=job_id, tool="refund", args_hash="h1", lease=30)
        await ledger.complete(key, 1, {"refund_id": key})
    await ledger.claim("running", **ARGS | {"job_id": "ended"}, lease=300)
    await ledger.claim("doubt", **ARGS | {"job_id": "ended"}, lease=0)
    assert (await ledger.claim("doubt", **ARGS | {"job_id": "ended"}, lease=30)).outcome == (
        "unknown"
    )
    await ledger.close()

    async def run(*args: str) -> tuple[int, str]:
        code, out, err = await rig_cli(rig, "ledger", *args)
        return code, out + err

    code, out = await run("ls", "--json")
    assert code == 0
    assert {r["key"]: r["state"] for r in json.loads(out)} == {
        "done": "succeeded",
        "waits": "succeeded",
        "stranger": "succeeded",
        "running": "in_progress",
        "doubt": "unknown",
    }
    code, out = await run("show", "done", "--json")
    assert code == 0 and json.loads(out)["result"] == {"refund_id": "done"}
    code, out = await run("prune", "--older-than", "0s", "--json")
    assert code == 0 and json.loads(out)["deleted"] == 1
    code, out = await run("ls", "--json")
    assert sorted(r["key"] for r in json.loads(out)) == ["doubt", "running", "stranger", "waits"]
    code, out = await run("prune", "--older-than", "soon")
    assert code == 2 and "not a duration" in out


async def test_a_late_completion_answers_unknown(tmp_path: Path) -> None:
    """The run whose lease ran out finishes after all: its result settles the `unknown`
    record (same epoch); a newer epoch's record is never overwritten by it."""
    ledger = await Ledger.open(tmp_path / "l.db", owner="a")
    await ledger.claim("k", **ARGS, lease=0)
    assert (await ledger.claim("k", **ARGS, lease=30)).outcome == "unknown"
    assert await ledger.complete("k", 1, {"refund_id": "r1"})
    again = await ledger.claim("k", **ARGS, lease=30)
    assert again.outcome == "succeeded" and again.record is not None
    assert again.record.result == {"refund_id": "r1"}
    assert not await ledger.complete("k", 2, {"refund_id": "r2"})  # no such epoch
    await ledger.close()


async def test_rig_ledger_settle_answers_unknown_by_a_persons_word(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path / "ledger.sqlite3", owner="a")
    for key in ("paid", "not-paid", "fine"):
        await ledger.claim(key, **ARGS, lease=0 if key != "fine" else 30)
    for key in ("paid", "not-paid"):
        assert (await ledger.claim(key, **ARGS, lease=30)).outcome == "unknown"
    await ledger.close()

    async def rig(*args: str) -> tuple[int, str]:
        return await ledger_cli(tmp_path, *args)

    code, out = await rig("settle", "paid", "--happened", '{"refund_id": "r9"}', "--by", "alice")
    assert code == 0 and "succeeded  (settled by alice)" in out
    code, out = await rig("settle", "not-paid", "--not-happened", "--by", "bob", "--json")
    assert code == 0 and json.loads(out)["state"] == "failed"
    code, out = await rig("settle", "fine", "--not-happened")
    assert code == 2 and "the record is in_progress, not unknown" in out
    code, out = await rig("settle", "paid")
    assert code == 2 and "one of the arguments --happened --not-happened is required" in out

    ledger = await Ledger.open(tmp_path / "ledger.sqlite3", owner="b")
    paid = await ledger.claim("paid", **ARGS, lease=30)
    assert paid.outcome == "succeeded" and paid.record is not None
    assert paid.record.result == {"refund_id": "r9"}
    rerun = await ledger.claim("not-paid", **ARGS, lease=30)
    assert rerun.outcome == "claimed" and rerun.epoch == 2  # it may run again
    await ledger.close()


async def ledger_cli(home: Path, *args: str) -> tuple[int, str]:
    """`rig ledger ARGS` with RIG_HOME=home: exit code and output (stdout and stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "actors",
        "ledger",
        *args,
        env={**os.environ, "RIG_HOME": str(home)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()
