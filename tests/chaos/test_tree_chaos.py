"""Chaos for job trees: parents fanning out to children while processes are SIGKILLed.

100 `Fanner` parents each start five `Researcher` children (three at a time), each of
which pays once (`pay_reconciled`: a payment API that finds a payment by its key, so a
call cut by a kill is reconciled, not repeated) into a sink the ledger knows nothing
about. A killer SIGKILLs random actor processes, the supervisor among them; `rig up`
restarts them. Every tree ends; every child that succeeded paid once and none paid
twice; no child is left running with its parent ended.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter

import pytest
from nats.js.api import DeliverPolicy

from actors.testing import Deployment
from protocols import TERMINAL_STATUSES, Event, decode_as
from tests.conftest import submit_surely
from tests.support.crash_tools import payments
from tests.support.killer import Killer, first_ready

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

PARENTS = 100
ACTORS = {
    "actors:Supervisor": 1,
    "tests.support.family:Fanner": 1,
    "tests.support.family:Researcher": 2,
    "tests.support.family:ResearchTools": 2,
}


async def follow_trees(rig: Deployment, timeout: float) -> dict[str, list[Event]]:
    """Every journal, read until each parent and each child it started has ended."""
    sub = await rig.nc.jetstream().subscribe(
        rig.names.events_all, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    found: dict[str, list[Event]] = {}
    ended: set[str] = set()
    children: set[str] = set()
    parents = {f"tree-{n}" for n in range(PARENTS)}
    try:
        async with asyncio.timeout(timeout):
            while not (parents | children) <= ended:
                event = decode_as(Event, (await sub.next_msg(timeout=timeout)).data)[0]
                found.setdefault(event.job_id, []).append(event)
                if event.type == "child_started":
                    children.add(event.data["child"])
                if event.type == "status" and event.data.get("status") in TERMINAL_STATUSES:
                    ended.add(event.job_id)
    except TimeoutError:
        open_jobs = sorted((parents | children) - ended)
        last = {job: found[job][-1].type if job in found else "-" for job in open_jobs[:10]}
        raise AssertionError(f"{len(open_jobs)} jobs not ended: {last}") from None
    finally:
        await sub.unsubscribe()
    return found


async def test_fanned_out_trees_end_and_pay_once_while_processes_are_killed(
    rig: Deployment,
) -> None:
    ready = await rig.nc.subscribe(rig.names.actor_ready)
    up = await rig.rig_up(ACTORS)
    try:
        live = await first_ready(ready, sum(ACTORS.values()))
        rng = random.Random(20261207)
        # Random kills as the run goes, and one after every tenth parent submitted, so
        # that a fast machine's run is killed mid-way as often as a slow one's.
        killing = Killer(ready, live, rng, most=16, pause=(0.3, 1.0), every_kind=True)
        async with killing:
            for n in range(PARENTS):
                await submit_surely(rig, "fanner", {"question": f"topic {n}"}, f"tree-{n}")
                if n % 10 == 9:
                    killing.kill_one()
            stories = await follow_trees(rig, timeout=rig.within(26 * (rig.ack_wait + 2), 240))
        kills = killing.kills
        assert len(kills) >= 8 and any(k.endswith(":Supervisor") for k in kills), kills
        paid = Counter(job for job, *_ in payments(rig.home))
        assert {job: n for job, n in paid.items() if n > 1} == {}  # none paid twice
        statuses: Counter[str] = Counter()
        for n in range(PARENTS):
            parent = stories[f"tree-{n}"]
            assert [e.seq for e in parent] == list(range(1, len(parent) + 1))
            started = [e.data["child"] for e in parent if e.type == "child_started"]
            assert len(started) == len(set(started)) == 5, started
            for child in started:
                story = stories[child]
                assert [e.seq for e in story] == list(range(1, len(story) + 1))
                end = [e for e in story if e.type == "status"][-1].data["status"]
                statuses[end] += 1
                # A child that succeeded paid once; one that did not, at most once.
                assert paid[child] == 1 if end == "succeeded" else paid[child] <= 1
            ends = [e.data["status"] for e in parent if e.type == "child_ended"]
            assert len(ends) == 5  # each child's end counted once
        assert statuses["succeeded"] >= PARENTS * 5 * 0.9, statuses
        print(f"\ntree chaos: {PARENTS} parents, kills {dict(Counter(kills))}, {dict(statuses)}")
    finally:
        up.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(up.wait(), 60) == 0
