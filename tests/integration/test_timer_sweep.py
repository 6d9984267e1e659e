"""The timer sweep (`actors/jobs/sweep.py`): timers the servers lost are sent again, so
that a job waiting for one, and a schedule's chain of ticks, still move."""

from __future__ import annotations

import json

import pytest

from actors.runtime.nats import ensure_topology, kv_latest
from actors.runtime.net import free_port
from actors.testing import Deployment, eventually
from protocols import JobSnapshot, decode_as
from tests.integration.test_observe import scrape, total
from tests.integration.test_schedules import CHATTER, fired
from tests.support.waiter import WAITERS

pytestmark = pytest.mark.integration


async def test_timers_lost_by_the_servers_are_sent_again(rig: Deployment) -> None:
    """A job waits 8 s for a signal and a schedule ticks every 2 s; the supervisor dies
    and every timer message is taken out of the stream (what nats-server 2.15.1 did to
    a consumer's pending messages around a power cut). A new supervisor's sweep sends
    again what is overdue: the wait times out and the schedule ticks on."""
    rig.extra_env["RIG_TIMER_SWEEP_S"] = "1"
    [supervisor] = await rig.spawn("actors:Supervisor")
    await rig.spawn("tests.support.waiter:Patient", CHATTER)
    await rig.client.submit("patient", {"ticket": "T-3"}, job_id="p-1")
    spec = {"agent": "chatter", "input": {"text": "tick"}, "every_s": 2}
    await rig.client.schedule("add", "beat", spec)
    ticked = await fired(rig, "beat", 1)

    async def waits() -> bool:
        return (await rig.client.status("p-1")).waiting_signal == "customer_reply"

    await eventually(waits, timeout=rig.within(), message="p-1 waits for its signal")
    supervisor.kill()
    await supervisor.wait()
    js = rig.nc.jetstream()
    jobs = await js.key_value(rig.names.jobs_bucket)
    job = decode_as(JobSnapshot, (await jobs.get("p-1")).value or b"")[0]
    assert job.phase == "signal"  # its timeout had not fired: the timer was stored
    await js.purge_stream(rig.names.work_stream, subject=rig.names.timer)
    info = await js.stream_info(rig.names.work_stream, subjects_filter=rig.names.timer)
    assert not info.state.subjects  # no timer left anywhere

    rig.extra_env["RIG_METRICS_PORT"] = str(port := free_port())
    await rig.spawn("actors:Supervisor")
    done = await rig.client.wait("p-1", timeout=rig.within(30))
    assert (done.status, done.state) == ("failed", "closed")
    events = await rig.client.journal("p-1")
    assert [e.data["edge"] for e in events if e.data.get("by") == "timeout"] == ["no_reply"]
    await fired(rig, "beat", ticked + 1)
    lines = rig.log_of("actors:Supervisor").read_text().splitlines()
    said = [json.loads(line) for line in lines if line.startswith("{")]
    resent = [(s.get("job_id"), s["timers"]) for s in said if s["event"] == "timers.resent"]
    assert resent == [("p-1", ["signal_timeout"])]  # once: what it sent fired
    assert "beat" in {s.get("schedule") for s in said if s["event"] == "schedule.tick_resent"}
    samples = await scrape(f"http://127.0.0.1:{port}/metrics")
    assert total(samples, "rig_timers_resent_total", kind="signal_timeout") == 1
    assert total(samples, "rig_timers_resent_total", kind="schedule_tick") >= 1


async def test_a_deployment_from_before_the_sweep_gets_its_running_jobs_entered(
    rig: Deployment,
) -> None:
    """`ensure_topology` (what `rig up` runs) on a deployment without `RIG_RUNNING`
    makes it with a key for each job that runs or waits to start, none for an ended one."""
    await rig.spawn(*WAITERS)
    await rig.client.submit("waiter", {"ticket": "T-1"}, job_id="w-1")  # waits an hour
    await rig.client.submit("hasty", {"ticket": "T-2"}, job_id="h-1")  # ends in a second
    assert (await rig.client.wait("h-1", timeout=rig.within())).status == "failed"

    async def waits() -> bool:
        return (await rig.client.status("w-1")).waiting_signal == "customer_reply"

    await eventually(waits, timeout=rig.within(), message="w-1 waits for its signal")
    js = rig.nc.jetstream()
    keys = {key async for key, _ in kv_latest(js, rig.names.running_bucket)}
    assert keys == {rig.names.running_key("w-1")}  # put as it started, h-1's deleted
    await js.delete_key_value(rig.names.running_bucket)
    await ensure_topology(js, rig.names)
    keys = {key async for key, _ in kv_latest(js, rig.names.running_bucket)}
    assert keys == {rig.names.running_key("w-1")}
