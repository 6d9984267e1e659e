"""Durable supervision: budgets stop runaways exactly, people resolve parked jobs, cancel ends.

Every test runs real processes (supervisor, the runaway `Looper` agent of tests/support/looper.py,
its tool executor) on a real nats-server, and reads the job's journal to check what
happened, step by step.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from actors.testing import Deployment, eventually
from protocols import TERMINAL_STATUSES, Escalation, Event, JobInfo, JobStateError, decode_as
from tests.integration.test_cli import rig_cli
from tests.support.looper import CALL, LOOPER

pytestmark = pytest.mark.integration


async def journal_until(
    rig: Deployment, job_id: str, status: str, timeout: float = 30, *, after: int = 0
) -> list[Event]:
    """The job's journal up to (and with) its first status event of `status` after
    event number `after`."""
    events = []
    async for event in rig.client.events(job_id, timeout=timeout):
        events.append(event)
        if event.type == "status" and event.data.get("status") == status and event.seq > after:
            return events
    raise AssertionError(f"job {job_id} ended {events[-1].data} before reaching {status}")


def check_contiguous(events: list[Event]) -> list[Event]:
    """The journal has each sequence number once, in order, and one decision per step;
    returns the decisions."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    decisions = [e for e in events if e.type == "decision"]
    assert [e.step for e in decisions] == list(range(1, len(decisions) + 1))
    return decisions


async def kill_supervisor_after_step(
    rig: Deployment, supervisor: asyncio.subprocess.Process, job_id: str, step: int
) -> float:
    """SIGKILL the supervisor once the job reached `step`, then start a fresh one; return
    the time it announced itself (nothing moves the job before it)."""
    async for event in rig.client.events(job_id, timeout=30):
        if event.step >= step:
            break
    supervisor.kill()
    await supervisor.wait()
    await rig.spawn("actors:Supervisor")
    return time.time()


# Thirty LLM calls of 110 tokens and 0.25 each; the LLM answers in 50 ms, so the job is
# still running when the supervisor is killed after step 10.
LIMITS: dict[str, tuple[dict[str, Any], str]] = {
    "steps": ({"max_steps": 30}, "step_limit"),
    "tokens": ({"max_tokens": 30 * CALL.tokens}, "budget_exceeded"),
    "cost": ({"max_cost": 30 * CALL.cost}, "budget_exceeded"),
    "visits": ({"max_visits": 30}, "budget_exceeded"),
    "deadline": ({"deadline_s": 3.0}, "deadline_exceeded"),
}


@pytest.mark.parametrize("kind", list(LIMITS))
async def test_each_budget_stops_a_runaway_at_its_limit_across_a_supervisor_kill(
    rig: Deployment, kind: str
) -> None:
    limits, status = LIMITS[kind]
    [supervisor] = await rig.spawn("actors:Supervisor")
    await rig.spawn(*LOOPER[1:])
    job = await rig.client.submit("looper", {"delay": 0.05}, job_id=f"runaway-{kind}", **limits)
    back = await kill_supervisor_after_step(rig, supervisor, job.job_id, 10)

    events = await journal_until(rig, job.job_id, status)
    info = await rig.client.status(job.job_id)
    decisions = check_contiguous(events)
    [exhausted] = [e for e in events if e.type == "budget"]
    assert exhausted.data["exhausted"] == kind
    assert info.status == status and info.error is not None and info.error["exhausted"] == kind
    calls = len([d for d in decisions if d.data["edge"] == "again"])
    assert info.usage.tokens == calls * CALL.tokens and info.usage.cost == calls * CALL.cost
    if kind == "deadline":
        elapsed = info.updated_at - info.created_at
        # The timer fires at the deadline itself, or, if the deadline passed while no
        # supervisor ran, as soon as the new one is back (the killed one may have held the
        # timer: one ack wait): never at the end of some later step.
        due = max(3.0, back - info.created_at) + rig.ack_wait
        assert 3.0 <= elapsed < due + 1.0, (elapsed, due)
        assert calls >= 10  # it ran up to the kill (past it too, when the new one is quick)
    else:
        # Exactly the limit: thirty calls, the thirtieth step, the thirtieth visit.
        assert calls == 30 and info.steps == 30
        if kind == "visits":
            assert info.visits["work"] == 30


async def test_an_llm_that_names_illegal_edges_is_reasked_then_the_safe_edge_is_taken(
    rig: Deployment,
) -> None:
    await rig.spawn(*LOOPER)
    job = await rig.client.submit("looper", {"edge": "wire_money"}, max_reasks=3)
    events = await journal_until(rig, job.job_id, "waiting_human")
    [decision] = check_contiguous(events)
    assert decision.data["reasks"] == 3 and decision.data["fallback"] is True
    assert decision.data["edge"] == "escalate"  # Looper's safe edge
    assert "'wire_money' is not one of again, finish, escalate" in decision.data["reason"]
    # One first answer and three re-asks, each paid for.
    assert decision.data["usage"]["input_tokens"] == 4 * CALL.input_tokens


async def park(rig: Deployment) -> str:
    job = await rig.client.submit("looper", {"edge": "escalate", "then": "finish"})
    await journal_until(rig, job.job_id, "waiting_human")
    return job.job_id


async def inbox(rig: Deployment) -> list[dict[str, Any]]:
    code, out, err = await rig_cli(rig, "inbox", "--json")
    assert code == 0, err
    return list(json.loads(out))


async def resolve_and_finish(rig: Deployment, job_id: str) -> None:
    [parked] = await inbox(rig)
    assert parked["job_id"] == job_id and parked["state"] == "human"
    assert parked["edges"] == ["finish", "retry"]
    assert "human" in parked["reason"]

    code, _, err = await rig_cli(rig, "resolve", job_id, "--edge", "retry", "--note", "checked")
    assert code == 0, err
    # The person sent the job back to work; the LLM then finishes it.
    events = await journal_until(rig, job_id, "succeeded")
    [resolved] = [e for e in events if e.type == "resolved"]
    assert resolved.data["edge"] == "retry" and resolved.data["note"] == "checked"
    decisions = check_contiguous(events)
    assert [(d.data["edge"], d.data["by"]) for d in decisions] == [
        ("escalate", "llm"),
        ("retry", "human"),
        ("finish", "llm"),
    ]
    assert await inbox(rig) == []


async def test_escalate_inbox_resolve(rig: Deployment) -> None:
    await rig.spawn(*LOOPER)
    escalations = await rig.nc.jetstream().subscribe(rig.names.escalations, ordered_consumer=True)
    job_id = await park(rig)
    announced = decode_as(Escalation, (await escalations.next_msg(timeout=10)).data)[0]
    assert (announced.job_id, announced.state, announced.edges) == (
        job_id,
        "human",
        ["finish", "retry"],
    )
    await resolve_and_finish(rig, job_id)


async def test_a_spent_budget_goes_to_the_agents_fallback_state(rig: Deployment) -> None:
    """`on_exhausted = "human"`: the job is parked, not ended; a person may give it more."""
    await rig.spawn(*LOOPER[::2], "tests.support.looper:CarefulLooper")
    job = await rig.client.submit("careful-looper", {"then": "again"}, max_steps=3)
    events = await journal_until(rig, job.job_id, "waiting_human")
    [exhausted] = [e for e in events if e.type == "budget"]
    assert exhausted.data["action"] == "enter human"
    [parked] = await rig.client.inbox()
    assert parked.job_id == job.job_id and "max_steps" in parked.reason

    # The person sends it back to work with two more steps; it loops until they are spent.
    await rig.client.resolve(job.job_id, "retry", max_steps=5)
    events = await journal_until(rig, job.job_id, "waiting_human", after=events[-1].seq)
    info = await rig.client.status(job.job_id)
    assert info.steps == 5 and info.budget.max_steps == 5
    assert len([e for e in events if e.type == "budget"]) == 2


async def test_a_parked_job_survives_a_restart_of_every_process(private_rig: Deployment) -> None:
    rig = private_rig
    await rig.spawn(*LOOPER)
    job_id = await park(rig)
    await rig.stop_all()
    rig.server.kill()
    rig.server.start()
    await rig.spawn(*LOOPER)
    await resolve_and_finish(rig, job_id)


async def test_resolve_refuses_what_a_person_cannot_do(rig: Deployment) -> None:
    await rig.spawn(*LOOPER)
    job_id = await park(rig)
    code, _, err = await rig_cli(rig, "resolve", job_id, "--edge", "again")
    assert code == 2 and "'again' is not an edge of state 'human'" in err
    await rig.client.resolve(job_id, "finish")
    with pytest.raises(JobStateError, match="not waiting for a human"):
        await rig.client.resolve(job_id, "finish")


async def test_cancel_a_running_and_a_parked_job(rig: Deployment) -> None:
    await rig.spawn(*LOOPER)
    running = await rig.client.submit("looper", {"delay": 0.05})
    async for event in rig.client.events(running.job_id, timeout=30):
        if event.type == "decision":
            break
    parked = await park(rig)

    for job_id in (running.job_id, parked):
        code, out, err = await rig_cli(rig, "cancel", job_id, "--reason", "not needed", "--json")
        assert code == 0, err
        assert json.loads(out)["status"] == "cancelled"
        events = await journal_until(rig, job_id, "cancelled")
        assert events[-1].data["error"]["message"] == "not needed"
    assert await inbox(rig) == []

    # The running job's last LLM answer arrives after the cancel and changes nothing.
    info = await rig.client.status(running.job_id)
    log = rig.home / "actors.Supervisor.log"
    await eventually(lambda: _contains(log, "report.stale"), message="a stale report")
    after = await rig.client.status(running.job_id)
    assert (after.status, after.steps, after.updated_at) == (
        "cancelled",
        info.steps,
        info.updated_at,
    )
    with pytest.raises(JobStateError, match="already ended: cancelled"):
        await rig.client.cancel(running.job_id)


async def test_rig_status_shows_what_the_job_spent(rig: Deployment) -> None:
    await rig.spawn(*LOOPER)
    job = await rig.client.submit("looper", {}, max_steps=3, max_tokens=10_000)
    info: JobInfo = await rig.client.wait(job.job_id, timeout=30)
    assert info.status == "step_limit"
    code, out, _ = await rig_cli(rig, "status", job.job_id)
    assert code == 0
    assert f"tokens {3 * CALL.tokens}/10000" in out and "steps 3/3" in out


async def test_deadline_fires_while_the_job_waits_for_a_busy_agent(rig: Deployment) -> None:
    """No agent runs at all: the timer alone ends the job at its deadline."""
    await rig.spawn("actors:Supervisor")
    await rig.spawn("tests.support.looper:Looper")  # registers the agent...
    await rig.stop_all()  # ...and is gone: nobody will ever decide a step
    await rig.spawn("actors:Supervisor")
    started = time.time()
    job = await rig.client.submit("looper", {}, deadline_s=1.0)
    events = await journal_until(rig, job.job_id, "deadline_exceeded")
    assert 1.0 <= events[-1].ts - started < 3.0
    assert events[-1].data["status"] in TERMINAL_STATUSES


async def _contains(path: Path, text: str) -> bool:
    return await asyncio.to_thread(lambda: path.exists() and text in path.read_text())
