"""Schedules (`rig schedule`): jobs of an agent on a clock, one per tick whatever the
supervisors do (tests/support/chat.py's agent answers each)."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from actors.testing import Deployment, eventually
from protocols import UnknownScheduleError, encode, msg_id
from protocols._schedules import ScheduleTick, tick_job_id
from tests.integration.test_cli import rig_cli
from tests.integration.test_cli_user import one_clean_line
from tests.integration.test_gateway import start_gateway

pytestmark = pytest.mark.integration

CHATTER = "tests.support.chat:Chatter"
TICK = json.dumps({"text": "tick"})


async def fired(rig: Deployment, name: str, at_least: int) -> int:
    async def enough() -> int:
        [schedule] = (await rig.client.schedule("get", name)).schedules
        return schedule.fired if schedule.fired >= at_least else 0

    return await eventually(enough, timeout=rig.within(20), message=f"{name} fired {at_least}")


async def test_a_schedule_is_added_fires_pauses_resumes_triggers_and_goes(
    rig: Deployment,
) -> None:
    await rig.spawn("actors:Supervisor", CHATTER)
    add = ("schedule", "add", "every-s", "--agent", "chatter", "--input", TICK)
    code, out, err = await rig_cli(rig, *add, "--every", "1s", "--overlap", "allow")
    assert code == 0, err
    assert "schedule every-s: agent chatter, every 1 s (UTC), next" in out
    await fired(rig, "every-s", 2)
    jobs = [j for j in await rig.client.jobs() if j.job_id.startswith("sched-every-s-")]
    for job in jobs:
        info = await rig.client.wait(job.job_id, timeout=rig.within())
        assert info.status == "succeeded" and info.labels is not None
        assert info.labels["schedule"] == "every-s"
        assert job.job_id == f"sched-every-s-{info.labels['tick']}"  # one id per tick
    code, out, _ = await rig_cli(rig, "schedule", "ls")
    assert code == 0 and "every-s" in out and "every 1 s" in out
    code, out, _ = await rig_cli(rig, "schedule", "pause", "every-s", "--json")
    paused = json.loads(out)
    assert code == 0 and paused["paused"] and paused["next_at"] is None
    code, out, _ = await rig_cli(rig, "schedule", "trigger", "every-s")
    assert code == 0 and out.startswith("started sched-every-s-now-")
    started = out.split()[1]
    assert (await rig.client.wait(started, timeout=rig.within())).status == "succeeded"
    before = paused["fired"]
    code, out, _ = await rig_cli(rig, "schedule", "resume", "every-s", "--json")
    assert code == 0 and not json.loads(out)["paused"]
    await fired(rig, "every-s", before + 1)  # its ticks come again
    code, _, _ = await rig_cli(rig, "schedule", "delete", "every-s")
    assert code == 0
    with pytest.raises(UnknownScheduleError):
        await rig.client.schedule("get", "every-s")
    # A user's mistakes: each one clean line, nothing kept.
    hourly = ("--agent", "chatter", "--every", "1h")
    for words, args in (
        ("no agent named 'nobody'", ("--agent", "nobody", "--every", "1m")),
        ("cron '61 * * * *'", ("--agent", "chatter", "--cron", "61 * * * *")),
        ("unknown time zone 'Mars/Base'", (*hourly, "--tz", "Mars/Base")),
        ("--input must be a JSON object", (*hourly, "--input", "[1]")),
    ):
        code, _, err = await rig_cli(rig, "schedule", "add", "bad", *args)
        one_clean_line(code, err, contains=words)
    code, _, err = await rig_cli(rig, "schedule", "show", "nope")
    one_clean_line(code, err, contains="no schedule 'nope'")
    assert (await rig.client.schedule("list")).schedules == []


async def test_one_job_per_tick_while_supervisors_are_killed(rig: Deployment) -> None:
    """A schedule every 2 s, three supervisor replicas, one SIGKILLed (and another
    started) every few seconds for a minute: every tick from the first to the last has
    its job (missed ticks run all), each started once."""
    supervisors = await rig.spawn("actors:Supervisor", "actors:Supervisor", "actors:Supervisor")
    await rig.spawn(CHATTER)
    spec = {"agent": "chatter", "input": {"text": "tick"}, "every_s": 2, "missed": "all"}
    await rig.client.schedule("add", "chaos", spec | {"overlap": "allow", "catch_up": 100})
    loop = asyncio.get_running_loop()
    end, kills = loop.time() + 60, 0
    chance = random.Random(7)
    while loop.time() < end:
        await asyncio.sleep(chance.uniform(3, 6))  # a kill every few seconds, not a sync
        victim = supervisors.pop(chance.randrange(len(supervisors)))
        victim.kill()
        await victim.wait()
        supervisors += await rig.spawn("actors:Supervisor")
        kills += 1
    await rig.client.schedule("pause", "chaos")
    assert kills >= 5  # (each restart waits for the new replica to be ready)

    async def ticks() -> list[int]:
        ids = [j.job_id for j in await rig.client.jobs(limit=1000)]
        return sorted(int(i.rsplit("-", 1)[1]) for i in ids if i.startswith("sched-chaos-"))

    found = await ticks()
    assert len(found) >= 25, found
    assert found == list(range(found[0], found[-1] + 1, 2))  # none missing, none twice
    for tick in found:
        info = await rig.client.wait(f"sched-chaos-{tick}", timeout=rig.within(60))
        assert info.status == "succeeded"
        journal = await rig.client.journal(info.job_id)
        assert [e.type for e in journal].count("started") == 1
    [schedule] = (await rig.client.schedule("get", "chaos")).schedules
    assert schedule.skipped == 0  # (a tick fired just before the pause may be unrecorded)


async def test_a_tick_that_comes_before_its_schedules_record_waits_for_it(
    rig: Deployment,
) -> None:
    """A schedule's record is written after its tick is sent (a crash loses no tick), so
    a tick due at once can reach a replica before the record: it waits for it rather
    than ending the schedule's chain of ticks."""
    await rig.spawn("actors:Supervisor", CHATTER)
    start = float(int(time.time()) + 600)  # the schedule's first tick, far off
    # The tick the add below sends (the same message id), sent and due before the add:
    # as if the replica that sent it had not written the record yet.
    early = ScheduleTick(name="early", generation=1, at=start, due=time.time())
    ident = msg_id("sched-early", 1, f"tick-{int(start)}")
    js = rig.nc.jetstream()
    sent = await js.publish(rig.names.timer, encode(early), headers={"Nats-Msg-Id": ident})

    async def handled() -> bool:  # acked (dropped) or asked again (waiting)
        info = await js.consumer_info(rig.names.work_stream, rig.names.timer_durable)
        return info.ack_floor.stream_seq >= sent.seq or info.num_redelivered > 0

    await eventually(handled, timeout=rig.within(), message="the early tick handled")
    spec = {"agent": "chatter", "input": {"text": "tick"}, "every_s": 3600, "start_at": start}
    await rig.client.schedule("add", "early", spec)
    info = await rig.client.wait(tick_job_id("early", start), timeout=rig.within(30))
    assert info.status == "succeeded"
    [schedule] = (await rig.client.schedule("get", "early")).schedules
    assert (schedule.fired, schedule.last_tick, schedule.next_at) == (1, start, start + 3600)


async def test_schedules_over_http(rig: Deployment, http: aiohttp.ClientSession) -> None:
    await rig.spawn("actors:Supervisor", CHATTER)
    base, _ = await start_gateway(rig)
    nightly = {"agent": "chatter", "input": {"text": "tick"}, "cron": "0 3 * * *"}
    nightly["timezone"] = "Europe/Berlin"
    async with http.put(f"{base}/v1/schedules/nightly", json=nightly) as response:
        assert response.status == 200, await response.text()
        [made] = (await response.json())["schedules"]
    at = datetime.fromtimestamp(made["next_at"], ZoneInfo("Europe/Berlin"))
    assert (at.hour, at.minute, made["paused"]) == (3, 0, False)
    async with http.get(f"{base}/v1/schedules") as response:
        assert [s["name"] for s in (await response.json())["schedules"]] == ["nightly"]
    async with http.post(f"{base}/v1/schedules/nightly/trigger") as response:
        job_id = (await response.json())["job_id"]
    assert (await rig.client.wait(job_id, timeout=rig.within())).status == "succeeded"
    async with http.post(f"{base}/v1/schedules/nightly/pause") as response:
        assert (await response.json())["schedules"][0]["paused"]
    for path, body, expected in (
        ("/v1/schedules/bad", nightly | {"cron": "0 3 * *"}, (400, "schema_error")),
        ("/v1/schedules/bad", nightly | {"agent": "nobody"}, (404, "unknown_agent")),
        ("/v1/schedules/bad", {"agent": "chatter", "every_s": 0}, (400, "schema_error")),
        ("/v1/schedules/a.b", nightly, (400, "schema_error")),
    ):
        async with http.put(f"{base}{path}", json=body) as response:
            assert (response.status, (await response.json())["code"]) == expected, path
    async with http.delete(f"{base}/v1/schedules/nightly") as response:
        assert response.status == 200
    async with http.get(f"{base}/v1/schedules/nightly") as response:
        assert (response.status, (await response.json())["code"]) == (404, "unknown_schedule")


async def ticks_of(rig: Deployment, name: str) -> list[int]:
    ids = [j.job_id for j in await rig.client.jobs(limit=1000)]
    prefix = f"sched-{name}-"
    return sorted(int(i[len(prefix) :]) for i in ids if i.startswith(prefix) and "now" not in i)


async def test_ticks_missed_while_the_deployment_was_down_run_once(rig: Deployment) -> None:
    """With `missed=once`, the ticks that fell while no supervisor ran start one job, the
    newest's, when one runs again; the others are counted as skipped."""
    [supervisor] = await rig.spawn("actors:Supervisor")
    await rig.spawn(CHATTER)
    spec = {"agent": "chatter", "input": {"text": "tick"}, "every_s": 1, "missed": "once"}
    await rig.client.schedule("add", "down", spec | {"overlap": "allow", "grace_s": 0})
    await fired(rig, "down", 1)
    supervisor.kill()
    await supervisor.wait()
    await asyncio.sleep(4)  # the deployment is down for four ticks (an outage, not a sync)
    await rig.spawn("actors:Supervisor")

    async def caught_up() -> bool:
        [schedule] = (await rig.client.schedule("get", "down")).schedules
        return schedule.skipped >= 3

    await eventually(caught_up, timeout=rig.within(20), message="the missed ticks were seen")
    await rig.client.schedule("pause", "down")
    found = await ticks_of(rig, "down")
    gaps = [b - a for a, b in itertools.pairwise(found)]
    assert max(gaps) >= 4, found  # the ticks of the outage: one job for all of them


async def test_a_tick_skips_queues_behind_or_cancels_a_job_still_running(
    rig: Deployment,
) -> None:
    """Jobs that wait for a signal (tests/support/waiter.py) outlast the 1 s ticks."""
    await rig.spawn("actors:Supervisor", "tests.support.waiter:Waiter")
    spec = {"agent": "waiter", "input": {"ticket": "T-1"}, "every_s": 1}
    for policy in ("skip", "queue", "cancel"):
        await rig.client.schedule("add", policy, spec | {"overlap": policy})

    async def at_least(name: str, fired_: int, skipped: int) -> bool:
        [schedule] = (await rig.client.schedule("get", name)).schedules
        return schedule.fired >= fired_ and schedule.skipped >= skipped

    await eventually(lambda: at_least("skip", 1, 2), timeout=rig.within(20))
    await eventually(lambda: at_least("queue", 3, 0), timeout=rig.within(20))
    await eventually(lambda: at_least("cancel", 3, 0), timeout=rig.within(20))
    for name in ("skip", "queue", "cancel"):
        await rig.client.schedule("pause", name)
    # skip: one job, every later tick skipped while it waits.
    [only] = await ticks_of(rig, "skip")
    assert (await rig.client.status(f"sched-skip-{only}")).waiting_signal == "customer_reply"
    # queue: the first waits for its signal, the later ones for their turn.
    queued = await ticks_of(rig, "queue")
    infos = [await rig.client.status(f"sched-queue-{t}") for t in queued]
    assert infos[0].waiting_signal == "customer_reply"
    assert {info.status for info in infos[1:]} == {"accepted"}
    # cancel: each tick cancelled the one before; the newest waits.
    cancelled = await ticks_of(rig, "cancel")
    for tick in cancelled[:-1]:
        info = await rig.client.wait(f"sched-cancel-{tick}", timeout=rig.within())
        assert info.status == "cancelled"
