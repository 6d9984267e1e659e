"""Snapshots are bounded: large tool results travel by reference, and a job that would
outgrow one message ends with a clear error instead of being dead-lettered."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from actors.runtime.results import by_reference, resolved
from actors.testing import Deployment
from protocols import JobSnapshot, NonRetryableError, decode_as, ref_name
from tests.integration.test_cli import rig_cli
from tests.integration.test_supervision import journal_until

pytestmark = pytest.mark.integration

HOARDER = (
    "actors:Supervisor",
    "tests.support.big:Hoarder",
    "tests.support.big:HoardTools",
    "tests.support.big:HoardChecks",
)
MB = 1024 * 1024


async def test_a_result_larger_than_a_message_travels_by_reference(rig: Deployment) -> None:
    """A 1.5 MB result (the server's max_payload is 1 MB) reaches the verifier and the
    agent whole; the messages, the journal and the snapshot carry a small reference."""
    await rig.spawn(*HOARDER)
    code, out, err = await rig_cli(
        rig, "submit", "hoarder", "--input", json.dumps({"size": 3 * MB // 2}), "--wait", "--json"
    )
    assert code == 0, err
    info = json.loads(out)
    assert info["status"] == "succeeded" and info["path"] == ["start", "read", "done"]
    ref = info["result"]["results"]["fetch"]
    assert ref_name(ref) == f"{info['job_id']}/1/fetch" and ref["bytes"] > 3 * MB // 2
    events = await journal_until(rig, info["job_id"], "succeeded")
    [verdict] = [e for e in events if e.type == "verdict"]
    assert verdict.data["passed"] and verdict.data["reason"] == f"{3 * MB // 2} bytes"
    entry = await (await rig.nc.jetstream().key_value(rig.names.jobs_bucket)).get(info["job_id"])
    assert entry.value is not None and len(entry.value) < 16 * 1024
    code, out, err = await rig_cli(rig, "status", info["job_id"], "--full", "--json")
    assert code == 0, err
    assert json.loads(out)["result"]["results"]["fetch"] == {"blob": "y" * (3 * MB // 2)}


async def test_a_job_that_would_outgrow_a_message_fails_saying_why(rig: Deployment) -> None:
    """LLM arguments of 400 KB are repeated in the decision, the snapshot and the tool
    call: past the 1 MB limit, so the job fails `too_large`, naming the arguments."""
    rig.extra_env["RIG_MAX_ANSWER_BYTES"] = str(MB)  # the model may say that much
    await rig.spawn(*HOARDER)
    code, out, err = await rig_cli(
        rig,
        "submit",
        "hoarder",
        "--input",
        json.dumps({"size": 10, "pad": 400_000}),
        "--wait",
        "--json",
    )
    assert code == 1, err
    info = json.loads(out)
    assert info["status"] == "failed" and info["error"]["code"] == "too_large"
    assert "the largest part is the arguments of edge 'fetch'" in info["error"]["message"]
    assert info["error"]["bytes"] > info["error"]["limit"]
    entry = await (await rig.nc.jetstream().key_value(rig.names.jobs_bucket)).get(info["job_id"])
    snapshot, _ = decode_as(JobSnapshot, entry.value or b"")
    assert snapshot.status == "failed" and snapshot.pending_args == {}
    code, out, _ = await rig_cli(rig, "dlq", "ls", "--json")
    assert code == 0 and json.loads(out) == []


async def test_a_journal_event_over_its_limit_ends_the_job_saying_why(rig: Deployment) -> None:
    """A decision whose arguments make its journal event larger than RIG_MAX_EVENT_BYTES
    ends the job `too_large`, naming the event and the setting; the next job runs."""
    rig.extra_env["RIG_MAX_EVENT_BYTES"] = "4096"
    await rig.spawn(*HOARDER)
    reply = await rig.client.submit("hoarder", {"size": 10, "pad": 5000})
    info = await rig.client.wait(reply.job_id, timeout=rig.within())
    assert info.status == "failed" and info.error is not None
    assert info.error["code"] == "too_large" and info.error["limit"] == 4096
    assert info.error["message"].startswith("a journal event would grow to")
    assert "RIG_MAX_EVENT_BYTES" in info.error["message"]
    reply = await rig.client.submit("hoarder", {"size": 10})
    assert (await rig.client.wait(reply.job_id, timeout=rig.within())).status == "succeeded"


async def test_a_result_is_stored_once_and_never_overwritten(rig: Deployment) -> None:
    """A call delivered again stores its result by reference again: the object is found
    as it was and kept (no purge, which no executor may do); a different result under
    the same name is refused, loudly, rather than written over another call's."""
    stores = SimpleNamespace(js=rig.nc.jetstream(), names=rig.names)
    value = {"rows": ["x" * 100] * 100}
    first = await by_reference(stores, "j.1.t", value, inline=10)
    assert await by_reference(stores, "j.1.t", value, inline=10) == first
    assert await resolved(stores, first) == value
    with pytest.raises(NonRetryableError, match="holds another object"):
        await by_reference(stores, "j.1.t", {"rows": []}, inline=1)
