"""Chaos: many jobs while processes are SIGKILLed at random, or the server is.

Each run checks the promise end to end: every job reaches a terminal status, and the
refunds the bank recorded (an effects sink the ledger knows nothing about) are exactly
one per job that reached `done`, none for the others: no duplicate, none missing.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import DeliverPolicy

from actors import RigConfig
from actors.examples.refund import RefundTools
from actors.testing import Deployment, eventually
from protocols import (
    TERMINAL_STATUSES,
    ActorReady,
    Event,
    JobSnapshot,
    decode_as,
)
from tests.conftest import bank_attempts, submit_surely
from tests.support.killer import Killer, first_ready

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ACTORS = {
    "actors:Supervisor": 1,
    "actors.examples.refund:RefundAgent": 2,
    "tests.support.crash_tools:FastRefundTools": 2,
    "actors.examples.refund:RefundChecks": 1,
}


def job_input(n: int) -> dict[str, Any]:
    return {"order_id": f"A-{n}", "amount": float(5 + n % 40), "reason": "chaos"}


async def submit_all(rig: Deployment, jobs: int, *, pace: float = 0.0) -> None:
    """Submit every job, `pace` seconds apart, each until a supervisor answers."""
    for n in range(jobs):
        if pace:
            await asyncio.sleep(pace)
        await submit_surely(rig, "refund", job_input(n), f"chaos-{n}")


async def wait_terminal(rig: Deployment, jobs: int, timeout: float) -> dict[str, str]:
    """Follow every journal at once until each job has a terminal status event."""
    return {
        job: events[-1].data["status"]
        for job, events in (await journals(rig, jobs, timeout)).items()
    }


async def journals(rig: Deployment, jobs: int, timeout: float) -> dict[str, list[Event]]:
    """Every job's journal, read until each job has a terminal status event."""
    js = rig.nc.jetstream()
    sub = await js.subscribe(
        rig.names.events_all, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    found: dict[str, list[Event]] = {}
    done = 0
    try:
        async with asyncio.timeout(timeout):
            while done < jobs:
                event, _ = decode_as(Event, (await sub.next_msg(timeout=timeout)).data)
                found.setdefault(event.job_id, []).append(event)
                if event.type == "status" and event.data.get("status") in TERMINAL_STATUSES:
                    done += 1
    except TimeoutError:
        stuck = {
            job: f"{events[-1].type} {events[-1].data}"
            for job, events in found.items()
            if events[-1].type != "status" or events[-1].data.get("status") not in TERMINAL_STATUSES
        }
        raise AssertionError(
            f"{jobs - done} jobs not terminal after {timeout} s: {stuck}"
        ) from None
    finally:
        await sub.unsubscribe()
    return found


async def snapshots(rig: Deployment, jobs: int) -> dict[str, JobSnapshot]:
    kv = await rig.nc.jetstream().key_value(rig.names.jobs_bucket)
    found = {}
    for n in range(jobs):
        entry = await kv.get(f"chaos-{n}")
        assert entry.value is not None
        found[f"chaos-{n}"] = decode_as(JobSnapshot, entry.value)[0]
    return found


def refunds_by_job(home: Path) -> Counter[str]:
    db = sqlite3.connect(home / "refunds.sqlite3")
    try:
        return Counter(row[0] for row in db.execute("SELECT job_id FROM refunds"))
    finally:
        db.close()


def check_effects(rig: Deployment, jobs: dict[str, JobSnapshot]) -> None:
    """Every job ended; a refund per job that reached `done`, no other; and no refund
    asked of the bank twice (the bank's unique key would hide a double refund)."""
    refunds = refunds_by_job(rig.home)
    assert all(job.status in TERMINAL_STATUSES for job in jobs.values())
    asked_twice = {key: n for key, n in bank_attempts(rig.home).items() if n > 1}
    assert asked_twice == {}
    done = {job_id for job_id, job in jobs.items() if job.state == "done"}
    duplicates = {job: n for job, n in refunds.items() if n > 1}
    missing = done - set(refunds)
    unexpected = set(refunds) - done
    assert (duplicates, missing, unexpected) == ({}, set(), set())
    assert len(done) > len(jobs) // 2  # most requests are refundable: the run did real work


@dataclass(frozen=True)
class Timings:
    """How a chaos run is timed: the tests' short waits, or production's defaults."""

    jobs: int
    kills: tuple[int, int]  # at least, at most
    pause: tuple[float, float]  # between kills, seconds
    actors: dict[str, int]
    env: dict[str, str]
    every_kind: bool  # the victims' kinds take turns (else any process, at random)
    pace: float = 0.0  # between submits, so that the jobs span the kills


SHORT = Timings(200, (10, 25), (0.1, 0.5), ACTORS, {}, every_kind=False)
# The default ack wait (30 s) and the refund tool's default lease (its timeout + 30 s):
# every kill stalls what the process held for an ack wait, so fewer jobs and kills, and
# each kind of actor is killed at least once.
PRODUCTION = Timings(
    40,
    (6, 6),
    (0.5, 1.5),
    {
        **ACTORS,
        "actors.examples.refund:RefundTools": 2,
        "tests.support.crash_tools:FastRefundTools": 0,
    },
    {"RIG_ACK_WAIT": f"{RigConfig().ack_wait:g}"},
    every_kind=True,
    pace=0.2,
)


@pytest.mark.parametrize("timings", [SHORT, PRODUCTION], ids=["short", "production"])
async def test_random_kill_9_under_rig_up(rig: Deployment, timings: Timings) -> None:
    """Jobs while a killer SIGKILLs random actor processes; `rig up` restarts them."""
    jobs, rng = timings.jobs, random.Random(20261126)
    rig.extra_env.update(timings.env)
    lease = max(t.spec.lease for t in RefundTools.tools.values())
    ready = await rig.nc.subscribe(rig.names.actor_ready)
    actors = {cls: n for cls, n in timings.actors.items() if n}
    up = await rig.rig_up(actors)
    try:
        live = await first_ready(ready, sum(actors.values()))
        killing = Killer(
            ready,
            live,
            rng,
            most=timings.kills[1],
            pause=timings.pause,
            every_kind=timings.every_kind,
        )
        async with killing:
            await submit_all(rig, jobs, pace=timings.pace)
            # Each kill may hold some jobs back by an ack wait, and a call by its lease.
            bound = rig.within(timings.kills[1] * (rig.ack_wait + 2), lease, 120)
            final = await wait_terminal(rig, jobs, timeout=bound)
        kills = killing.kills
        assert len(final) == jobs
        assert len(kills) >= timings.kills[0], kills
        assert any(k.endswith(":Supervisor") for k in kills), kills  # the supervisor died too
        snaps = await snapshots(rig, jobs)
        check_effects(rig, snaps)
        # The run's counts, for the record (`pytest -s` shows them).
        print(
            f"\nkill -9 run: {jobs} jobs, {len(kills)} kills {dict(Counter(kills))}, "
            f"statuses {dict(Counter(j.status + '/' + (j.state or '') for j in snaps.values()))}, "
            f"refunds {sum(refunds_by_job(rig.home).values())}"
        )
    finally:
        up.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(up.wait(), 60) == 0


async def test_three_supervisors_one_killed_every_few_seconds(rig: Deployment) -> None:
    """Three supervisor replicas, one SIGKILLed every 1-2 s during 200 jobs (`rig up`
    restarts it): every job terminal, no step taken twice, no refund doubled or lost."""
    jobs, rng = 200, random.Random(5)
    ready = await rig.nc.subscribe(rig.names.actor_ready)
    up = await rig.rig_up({**ACTORS, "actors:Supervisor": 3})
    supervisors: set[int] = set()
    kills = 0
    try:
        for announced in await first_ready(ready, sum(ACTORS.values()) + 2):
            if announced.cls.endswith(":Supervisor"):
                supervisors.add(announced.pid)
        finished = asyncio.Event()

        async def killer() -> None:
            nonlocal kills
            while not finished.is_set():
                try:  # every 1-2 s, cut short when the jobs are done
                    await asyncio.wait_for(finished.wait(), rng.uniform(1.0, 2.0))
                except TimeoutError:
                    pass
                # Take the restarted ones into account, then kill one of the live three.
                while True:
                    try:
                        announced = decode_as(
                            ActorReady, (await ready.next_msg(timeout=0.01)).data
                        )[0]
                    except Exception:
                        break
                    if announced.cls.endswith(":Supervisor"):
                        supervisors.add(announced.pid)
                if supervisors and not finished.is_set():
                    pid = rng.choice(sorted(supervisors))
                    supervisors.discard(pid)
                    os.kill(pid, signal.SIGKILL)
                    kills += 1

        chaos = asyncio.create_task(killer())
        await submit_all(rig, jobs, pace=0.06)  # spread over ~12 s, so kills land mid-run
        stories = await journals(rig, jobs, timeout=240)
        finished.set()
        await chaos
        assert len(stories) == jobs and kills >= 3, kills
        for job_id, events in stories.items():
            # Each journal entry once, in order; each step decided once.
            assert [e.seq for e in events] == list(range(1, len(events) + 1)), job_id
            steps = [e.step for e in events if e.type == "decision"]
            assert steps == list(range(1, len(steps) + 1)), job_id
        check_effects(rig, await snapshots(rig, jobs))
        print(f"\nthree supervisors: {jobs} jobs, {kills} supervisor kills")
    finally:
        up.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(up.wait(), 60) == 0


async def test_nats_server_kill_9_mid_run(private_rig: Deployment) -> None:
    """The server is SIGKILLed mid-run and restarted on its store: no job lost, none doubled."""
    rig, jobs = private_rig, 120
    await rig.spawn(*[c for c, n in ACTORS.items() for _ in range(n)])
    submitting = asyncio.create_task(submit_all(rig, jobs))
    # Kill the server once a third of the jobs have been accepted.
    kv = await rig.nc.jetstream().key_value(rig.names.jobs_bucket)
    await eventually(lambda: _accepted(kv, jobs // 3), message="a third of the jobs accepted")
    rig.server.kill()
    rig.server.start()
    await submitting
    final = await wait_terminal(rig, jobs, timeout=180)
    assert len(final) == jobs
    check_effects(rig, await snapshots(rig, jobs))
    assert all(p.returncode is None for p in rig.procs)  # every actor lived through it


async def _accepted(kv: Any, count: int) -> bool:
    try:
        return len(await kv.keys()) >= count
    except Exception:  # no keys yet
        return False
