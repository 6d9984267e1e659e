"""Signals: a job that waits for a named message from outside, as real processes.

The waiter's job parks nothing and asks no model while it waits: it takes its state's
`on_signal` edge when `rig signal` (here `RigClient.signal`) delivers the signal, once
whatever the retries, or its `on_timeout` edge when none comes in time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from actors.testing import Deployment, eventually
from protocols import JobInfo, JobStateError, RigConnectionError, SchemaError, UnknownJobError
from tests.conftest import submit_surely
from tests.integration.test_gateway import start_gateway
from tests.integration.test_supervision import check_contiguous
from tests.support.waiter import WAITERS

pytestmark = pytest.mark.integration


async def waiting(rig: Deployment, job_id: str) -> JobInfo:
    async def check() -> JobInfo | None:
        info = await rig.client.status(job_id)
        return info if info.waiting_signal == "customer_reply" else None

    return await eventually(check, timeout=rig.within(), message=f"{job_id} waits")


async def test_a_signal_moves_a_waiting_job_once_and_is_refused_when_not_awaited(
    rig: Deployment,
) -> None:
    await rig.spawn(*WAITERS)
    await rig.client.submit("waiter", {"ticket": "T-1"}, job_id="w-1")
    info = await waiting(rig, "w-1")
    assert info.status == "running"
    with pytest.raises(SchemaError, match="does not fit signal 'customer_reply'"):
        await rig.client.signal("w-1", "customer_reply", {"words": 3})
    with pytest.raises(JobStateError, match="not waiting for signal 'other'"):
        await rig.client.signal("w-1", "other", {})
    with pytest.raises(UnknownJobError):
        await rig.client.signal("nobody", "customer_reply", {"text": "hi"})

    sent = await rig.client.signal("w-1", "customer_reply", {"text": "yes"}, signal_id="s-1")
    assert sent.waiting_signal is None
    again = await rig.client.signal("w-1", "customer_reply", {"text": "yes"}, signal_id="s-1")
    assert again.job_id == "w-1"  # a retry: answered, not delivered again
    done = await rig.client.wait("w-1", timeout=rig.within())
    assert done.status == "succeeded"
    assert done.result is not None
    assert done.result["output"] == {"text": "the customer said: yes"}
    assert done.result["results"]["customer_reply"] == {"text": "yes"}
    events = await rig.client.journal("w-1")
    check_contiguous(events)
    arrived = [e for e in events if e.type == "signal" and not e.data.get("waiting")]
    assert [(e.data["name"], e.data["signal_id"]) for e in arrived] == [("customer_reply", "s-1")]
    taken = [e for e in events if e.type == "decision" and e.data.get("by") == "signal"]
    assert [e.data["edge"] for e in taken] == ["got_reply"]
    with pytest.raises(JobStateError, match="is succeeded"):
        await rig.client.signal("w-1", "customer_reply", {"text": "late"}, signal_id="s-2")


async def test_the_timeout_edge_is_taken_when_no_signal_comes(rig: Deployment) -> None:
    await rig.spawn(*WAITERS)
    await rig.client.submit("hasty", {"ticket": "T-2"}, job_id="h-1")
    done = await rig.client.wait("h-1", timeout=rig.within(1.0))
    assert (done.status, done.state) == ("failed", "closed")
    events = await rig.client.journal("h-1")
    [timed_out] = [e for e in events if e.type == "signal" and e.data.get("timed_out")]
    assert timed_out.data["name"] == "customer_reply"
    taken = [e for e in events if e.type == "decision" and e.data.get("by") == "timeout"]
    assert [e.data["edge"] for e in taken] == ["no_reply"]


async def test_a_signal_whose_supervisor_dies_after_writing_is_delivered_once(
    rig: Deployment,
) -> None:
    """The supervisor carrying out the signal dies right after writing the job; the
    client asks again under the same signal id. The job moves on once: one signal in
    its journal, one `got_reply`."""
    marker = rig.home / "crashed"
    rig.extra_env.update(RIG_CRASH_AT="after_write_signal", RIG_CRASH_MARKER=str(marker))
    await rig.up(*WAITERS[1:])
    job_id = await submit_surely(rig, "waiter", {"ticket": "T-3"}, "w-3")
    await waiting(rig, job_id)
    while True:  # as a client does when its request's answer is lost
        try:
            await rig.client.signal(job_id, "customer_reply", {"text": "ok"}, signal_id="s-3")
            break
        except RigConnectionError:  # no answer: the supervisor died under it
            await asyncio.sleep(0.2)
    assert marker.read_text() == "after_write_signal"
    done = await rig.client.wait(job_id, timeout=rig.within(30))
    assert done.status == "succeeded"
    events = await rig.client.journal(job_id)
    check_contiguous(events)
    assert len([e for e in events if e.type == "signal" and e.data.get("signal_id")]) == 1


async def test_a_signal_over_http_is_delivered_once_per_idempotency_key(
    rig: Deployment, http: aiohttp.ClientSession
) -> None:
    """`POST /v1/jobs/{id}/signals/{name}`: the same key twice is one signal; a signal
    the job does not wait for is a 409 problem document, data that does not fit a 400."""
    await rig.spawn(*WAITERS)
    base, _ = await start_gateway(rig)
    await rig.client.submit("waiter", {"ticket": "T-4"}, job_id="w-4")
    await waiting(rig, "w-4")

    async def post(name: str, body: dict[str, object], key: str) -> tuple[int, dict[str, Any]]:
        headers = {"Idempotency-Key": key}
        async with http.post(f"{base}/v1/jobs/w-4/signals/{name}", json=body, headers=headers) as r:
            return r.status, await r.json()

    assert (await post("customer_reply", {"data": {"text": 5}}, "k-0"))[0] == 400
    status, problem = await post("other", {"data": {}}, "k-1")
    assert (status, problem["code"]) == (409, "job_state")
    for _ in range(2):  # a retry with the same key
        status, info = await post("customer_reply", {"data": {"text": "hi"}, "by": "web"}, "k-2")
        assert status == 200 and info["job_id"] == "w-4"
    done = await rig.client.wait("w-4", timeout=rig.within())
    assert done.result is not None and done.result["output"] == {"text": "the customer said: hi"}
    events = await rig.client.journal("w-4")
    assert len([e for e in events if e.type == "signal" and e.data.get("by") == "web"]) == 1
