"""The cluster's ledger (`RIG_LEDGER=cluster`) on a real server: writes whose answer is
lost, waiters, large results, and the records a process keeps of its running calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import nats.errors
import pytest
from nats.aio.client import Client
from nats.js.kv import KeyValue

from actors import RigConfig, ToolExecutor, tool
from actors.runtime.results import resolved
from actors.testing import Deployment
from actors.testing.harness import harness
from actors.tools import cluster as _claims
from actors.tools.cluster import ClusterLedger
from protocols import ToolCall, ref_name


@pytest.fixture
async def admin(rig: Deployment) -> AsyncIterator[Client]:
    nc = await harness(rig)
    yield nc
    await nc.close()


class _LosesAnswers:
    """The claims bucket, but the answer to the next `lose` writes is lost after the
    write is stored (an ack lost to a timeout), and the next `blind` reads time out."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self.lose = 0
        self.blind = 0

    async def create(self, key: str, value: bytes) -> int:
        written = await self._kv.create(key, value)
        return self._answer(written)

    async def update(self, key: str, value: bytes, last: int) -> int:
        written = await self._kv.update(key, value, last=last)
        return self._answer(written)

    async def get(self, key: str) -> Any:
        if self.blind:
            self.blind -= 1
            raise nats.errors.TimeoutError
        return await self._kv.get(key)

    def _answer(self, written: int) -> int:
        if self.lose:
            self.lose -= 1
            raise nats.errors.TimeoutError
        return written


async def _ledger(admin: Client, rig: Deployment, owner: str) -> ClusterLedger:
    return await ClusterLedger.open(admin.jetstream(), rig.names, owner=owner)


async def _claim(ledger: ClusterLedger, key: str, lease: float = 60.0) -> Any:
    return await ledger.claim(key, job_id="j1", tool="charge", args_hash="h", lease=lease)


async def test_a_claim_whose_answer_was_lost_is_still_its_own(
    admin: Client, rig: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim was stored but its acknowledgement lost: the record read back carries
    this write's nonce, so the claim is this process's (not a `busy` that would end
    `unknown` a lease later). When even the read back fails, the next claim (the
    message delivered again) recognises its own stored claim and takes it up."""
    ledger = await _ledger(admin, rig, "host:1")
    flaky = _LosesAnswers(ledger._kv)
    ledger._kv = flaky  # type: ignore[assignment]

    flaky.lose = 1
    claim = await _claim(ledger, "k-lost-ack")
    assert (claim.outcome, claim.epoch) == ("claimed", 1)
    flaky.lose = 1  # the completion's answer is lost too: it is known stored all the same
    assert await ledger.complete("k-lost-ack", 1, {"paid": 1})
    record = await ledger.get("k-lost-ack")
    assert record is not None and (record.state, record.result) == ("succeeded", {"paid": 1})

    monkeypatch.setattr(_claims, "_READ_BACK_S", 0.2)
    flaky.lose, flaky.blind = 1, 1_000
    with pytest.raises(nats.errors.TimeoutError):
        await _claim(ledger, "k-lost-twice")
    flaky.blind = 0
    again = await _claim(ledger, "k-lost-twice")
    assert (again.outcome, again.epoch) == ("claimed", 1)
    # Another process finds it busy: the claim is held, under its renewed lease.
    other = await _claim(await _ledger(admin, rig, "host:2"), "k-lost-twice")
    assert other.outcome == "busy" and other.retry_after > 55


async def test_a_waiter_sees_the_claim_it_waited_on_end(admin: Client, rig: Deployment) -> None:
    """A call that found another's claim `busy` reads the record again when it asks
    again: it sees the result as soon as it is recorded, not a lease later."""
    first, second = await _ledger(admin, rig, "host:1"), await _ledger(admin, rig, "host:2")
    assert (await _claim(first, "k-wait")).outcome == "claimed"
    assert (await _claim(second, "k-wait")).outcome == "busy"
    assert await first.complete("k-wait", 1, {"paid": 2})
    seen = await _claim(second, "k-wait")
    assert seen.outcome == "succeeded" and seen.record is not None
    assert seen.record.result == {"paid": 2}


async def test_a_process_does_not_forget_its_running_calls(
    admin: Client, rig: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many calls a process has claimed and finished since, it can still record
    the outcome of one that has run all along."""
    monkeypatch.setattr(_claims, "_REMEMBERED", 2)
    ledger = await _ledger(admin, rig, "host:1")
    assert (await _claim(ledger, "k-long")).outcome == "claimed"
    for n in range(5):
        assert (await _claim(ledger, f"k-short-{n}")).outcome == "claimed"
        assert await ledger.complete(f"k-short-{n}", 1, n)
    assert await ledger.complete("k-long", 1, "done")
    record = await ledger.get("k-long")
    assert record is not None and (record.state, record.result) == ("succeeded", "done")


class Archive(ToolExecutor):
    name = "archive"
    runs = 0

    @tool(side_effects=True)
    async def export(self, size: int) -> dict[str, Any]:
        type(self).runs += 1
        return {"blob": "x" * size}


async def test_a_result_larger_than_a_record_is_kept_by_reference(
    admin: Client, rig: Deployment
) -> None:
    """A result over the claims bucket's value limit (the server's max_payload, 1 MB)
    is stored by reference before it is recorded: the call succeeds, the record holds
    the reference, and a repeat is answered from it without running the tool again."""
    executor = Archive(config=RigConfig(home=rig.home, ledger="cluster"))
    executor._js, executor.names = admin.jetstream(), rig.names
    executor.ledger = await _ledger(admin, rig, "host:1")
    size = 2 * 1024 * 1024
    first = await executor.execute(
        ToolCall(job_id="j9", step=1, tool="export", args={"size": size})
    )
    assert first.ok and first.ledger == "miss" and ref_name(first.result) is not None
    again = await executor.execute(
        ToolCall(job_id="j9", step=2, tool="export", args={"size": size})
    )
    assert again.ok and again.ledger == "hit" and again.result == first.result
    assert Archive.runs == 1
    assert (await resolved(executor, again.result))["blob"] == "x" * size
