"""End to end: real nats-server, actors as separate OS processes, a real SQLite ledger."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import msgpack
import nats.errors
import pytest
from nats.js.api import ConsumerConfig

from actors.examples.refund import RefundAgent, find_order, find_refund, record_refund
from actors.testing import Deployment, eventually
from protocols import (
    DeadLetter,
    Decision,
    ErrorReply,
    JobContext,
    PayloadTooLargeError,
    RigConnectionError,
    SchemaError,
    ToolCall,
    ToolResult,
    UnknownAgentError,
    UnknownJobError,
    decode_as,
    encode,
)
from tests.conftest import REFUND, bank_attempts, refund_rows

pytestmark = pytest.mark.integration

EXAMPLE = RefundAgent.example_input


async def test_happy_path(rig: Deployment) -> None:
    """The example input runs triage -> review -> refunding -> done; one refund is issued."""
    await rig.spawn(*REFUND)
    reply = await rig.client.submit("refund", EXAMPLE)
    info = await rig.client.wait(reply.job_id, timeout=30)
    assert info.status == "succeeded"
    assert info.path == ["triage", "review", "refunding", "done"]
    assert info.steps == 3
    assert info.result is not None
    assert info.result["results"]["issue_refund"]["amount"] == EXAMPLE["amount"]
    assert refund_rows(rig.home) == [(reply.job_id, "A-1001", 25.0)]
    events = [e async for e in rig.client.events(reply.job_id, timeout=10)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events][:2] == ["accepted", "started"]
    assert events[-1].type == "status" and events[-1].data["status"] == "succeeded"
    verdicts = [e for e in events if e.type == "verdict"]
    assert len(verdicts) == 1 and verdicts[0].data["passed"] is True


async def test_denied_request_issues_no_refund(rig: Deployment) -> None:
    """An order still in transit is denied; nothing is refunded."""
    await rig.spawn(*REFUND)
    reply = await rig.client.submit("refund", {"order_id": "A-1003", "amount": 5})
    info = await rig.client.wait(reply.job_id, timeout=30)
    assert (info.status, info.state) == ("succeeded", "denied")
    assert refund_rows(rig.home) == []


async def test_step_limit(rig: Deployment) -> None:
    """A job that reaches max_steps without finishing ends with status step_limit."""
    await rig.spawn(*REFUND)
    reply = await rig.client.submit("refund", EXAMPLE, max_steps=2)
    info = await rig.client.wait(reply.job_id, timeout=30)
    assert info.status == "step_limit"
    assert info.steps == 2
    assert info.path == ["triage", "review", "refunding"]
    assert refund_rows(rig.home) == []


async def test_repeated_tool_call_runs_the_side_effect_once(rig: Deployment) -> None:
    """A call redelivered, and the same call repeated by the LLM later, refund once.

    The redelivery (same job and step, another message id) is answered from the ledger
    and its report deduplicated by `Nats-Msg-Id`; the repeat at a later step gets its
    own report, marked as a ledger hit, with the very same result.
    """
    await rig.spawn("actors.examples.refund:RefundTools")
    # No supervisor runs: the test reads the executor's reports itself.
    js = rig.nc.jetstream()
    await js.add_consumer(
        rig.names.work_stream,
        ConsumerConfig(durable_name="probe", filter_subject=rig.names.supervisor_all),
    )
    args = {"order_id": "A-1001", "amount": 10.0}
    # The job the refund is for, as the supervisor sends it (the tool checks the refund
    # against it before any money moves).
    job = JobContext(input=args, results={"lookup_order": find_order("A-1001")})
    for step, copy in ((3, "first"), (3, "redelivered"), (4, "llm-repeat")):
        call = ToolCall(job_id="job-1", step=step, tool="issue_refund", args=args, context=job)
        await js.publish(
            rig.names.tool("issue_refund"), encode(call), headers={"Nats-Msg-Id": copy}
        )
    sub = await js.pull_subscribe_bind("probe", stream=rig.names.work_stream)
    results: dict[int, ToolResult] = {}
    while len(results) < 2:
        for msg in await sub.fetch(2, timeout=20):
            result = decode_as(ToolResult, msg.data)[0]
            assert result.step not in results, "a duplicate report was not deduplicated"
            results[result.step] = result
            await msg.ack()
    assert results[3].ledger == "miss" and results[4].ledger == "hit"
    assert results[3].result == results[4].result
    assert results[3].key == results[4].key
    assert refund_rows(rig.home) == [("job-1", "A-1001", 10.0)]
    record = await _ledger_record(rig, results[3].key)
    assert record.state == "succeeded" and record.epoch == 1


async def _ledger_record(rig: Deployment, key: str) -> Any:
    from actors import Ledger

    ledger = await Ledger.open(rig.home / "ledger.sqlite3", owner="test")
    try:
        return await ledger.get(key)
    finally:
        await ledger.close()


async def test_json_task_with_no_headers_is_accepted(rig: Deployment) -> None:
    """What `nats req rig.api.submit '{...}'` sends is accepted, answered in JSON, and runs."""
    await rig.spawn(*REFUND)
    body = json.dumps({"agent": "refund", "input": EXAMPLE}).encode()
    msg = await rig.nc.request(rig.names.api_submit, body, timeout=10)
    reply = json.loads(msg.data)
    assert reply["status"] == "accepted" and set(reply) == {"job_id", "status"}
    assert (msg.headers or {}).get("Content-Type") == "application/json"
    info = await rig.client.wait(reply["job_id"], timeout=30)
    assert info.status == "succeeded"


async def test_bad_requests_get_typed_errors_and_the_next_task_succeeds(rig: Deployment) -> None:
    """Garbage, a wrong schema, an unknown agent and oversized input each get a clear error."""
    await rig.spawn(*REFUND)

    async def ask(body: bytes) -> dict:
        msg = await rig.nc.request(rig.names.api_submit, body, timeout=10)
        return json.loads(msg.data)["error"]

    assert (await ask(b"hello there"))["code"] == "decode_error"
    assert (await ask(b'{"agent": "refund"'))["code"] == "decode_error"
    wrong = await ask(b'{"agent": "refund", "inputs": {}}')
    assert wrong["code"] == "schema_error" and "input: Field required" in wrong["message"]
    unknown = await ask(b'{"agent": "nobody", "input": {}}')
    assert unknown["code"] == "unknown_agent" and "nobody" in unknown["message"]
    # msgpack garbage is answered in msgpack
    msg = await rig.nc.request(rig.names.api_submit, b"\xc1\xff\x00", timeout=10)
    assert ErrorReply.model_validate(msgpack.unpackb(msg.data)).error["code"] == "decode_error"

    with pytest.raises(UnknownAgentError):
        await rig.client.submit("nobody", {})
    big = {"blob": "x" * (rig.nc.max_payload // 3)}
    with pytest.raises(PayloadTooLargeError, match="at most"):
        await rig.client.submit("refund", big)
    with pytest.raises(PayloadTooLargeError, match="max_payload"):  # each string within limits
        await rig.client.submit("refund", {"blob": ["x" * 1024] * (rig.nc.max_payload // 1024)})

    reply = await rig.client.submit("refund", EXAMPLE)
    assert (await rig.client.wait(reply.job_id, timeout=30)).status == "succeeded"


async def test_malformed_work_is_dead_lettered_and_the_actor_keeps_serving(
    rig: Deployment,
) -> None:
    """Bad bytes on a work subject end in the DLQ with the reason and the original bytes."""
    await rig.spawn(*REFUND)
    js = rig.nc.jetstream()
    garbage = b"\x00\xffnot a message"
    wrong_schema = encode({"kind": "tool_call", "job_id": "j"})  # no step, no tool
    await js.publish(rig.names.agent("refund"), garbage)
    await js.publish(rig.names.tool("issue_refund"), wrong_schema)
    dlq = await js.subscribe(rig.names.dlq_all, stream=rig.names.dlq_stream)
    letters = [decode_as(DeadLetter, (await dlq.next_msg(timeout=20)).data)[0] for _ in range(2)]
    by_actor = {letter.actor: letter for letter in letters}
    assert by_actor["agent-refund"].data == garbage
    assert by_actor["agent-refund"].error["code"] == "decode_error"
    assert by_actor["tool-issue_refund"].data == wrong_schema
    assert by_actor["tool-issue_refund"].error["code"] == "schema_error"
    assert "step" in by_actor["tool-issue_refund"].reason

    reply = await rig.client.submit("refund", EXAMPLE)
    assert (await rig.client.wait(reply.job_id, timeout=30)).status == "succeeded"


async def test_user_module_outside_the_package(rig: Deployment) -> None:
    """An agent, tool and verifier from examples/ run with `rig actor run` and finish a job."""
    await rig.spawn(
        "actors:Supervisor",
        "examples.greeter:GreeterAgent",
        "examples.greeter:GreeterTools",
        "examples.greeter:GreeterChecks",
    )
    reply = await rig.client.submit("greeter", {"who": "Ada"})
    info = await rig.client.wait(reply.job_id, timeout=30)
    assert info.status == "succeeded"
    assert info.result is not None
    assert info.result["results"]["compose_greeting"] == {"text": "Hello, Ada!"}
    # Its input_model's schema is checked at submission: a bad input is never a job.
    with pytest.raises(SchemaError) as refused:
        await rig.client.submit("greeter", {"who": 7}, job_id="bad-input")
    assert refused.value.message == (
        "the input does not fit agent 'greeter''s input schema: input.who must be string"
    )
    assert refused.value.details["field"] == "input.who"
    with pytest.raises(UnknownJobError):
        await rig.client.status("bad-input")


async def test_actor_survives_a_nats_server_restart(private_rig: Deployment) -> None:
    """After the server is killed and restarted on the same store, actors consume again."""
    rig = private_rig
    await rig.spawn(*REFUND)
    first = await rig.client.submit("refund", EXAMPLE)
    assert (await rig.client.wait(first.job_id, timeout=30)).status == "succeeded"

    rig.server.kill()
    rig.server.start()
    # The supervisor answers again once it has reconnected.
    second = await eventually(
        lambda: _submit_when_answered(rig, {"order_id": "A-1002", "amount": 5}), timeout=30
    )
    assert (await rig.client.wait(second.job_id, timeout=60)).status == "succeeded"
    assert len(refund_rows(rig.home)) == 2


async def test_rig_up_restarts_a_killed_actor_and_the_job_finishes(
    rig: Deployment,
) -> None:
    """SIGKILL an agent mid-job: `rig up` starts it again, the step is redelivered, job ends."""
    ready = await rig.nc.subscribe(rig.names.actor_ready)
    thinking = await rig.nc.subscribe(f"{rig.prefix}.test.thinking")
    up = await rig.rig_up(
        {
            "actors:Supervisor": 1,
            "tests.support.gated:GatedAgent": 1,
            "actors.examples.refund:RefundTools": 1,
            "actors.examples.refund:RefundChecks": 1,
        }
    )
    try:
        announced = await _ready_count(ready, 4)
        job = await rig.client.submit("gated", EXAMPLE)
        victim = msgpack.unpackb((await thinking.next_msg(timeout=30)).data)["pid"]
        os.kill(victim, signal.SIGKILL)

        restarted = await _ready_count(ready, 1)
        assert restarted[0].cls == "tests.support.gated:GatedAgent" and restarted[0].pid != victim
        # The step comes back after the ack wait, to the new process.
        again = msgpack.unpackb((await thinking.next_msg(timeout=30)).data)["pid"]
        assert again == restarted[0].pid
        await rig.nc.publish(f"{rig.prefix}.test.gate", b"go")
        info = await rig.client.wait(job.job_id, timeout=30)
        assert info.status == "succeeded"
        assert len(refund_rows(rig.home)) == 1
    finally:
        up.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(up.wait(), 30) == 0
    pids = [a.pid for a in announced] + [restarted[0].pid]
    assert not [pid for pid in pids if _alive(pid)], "rig up left processes behind"


async def _submit_when_answered(rig: Deployment, job_input: dict[str, Any]) -> Any:
    try:
        return await rig.client.submit("refund", job_input)
    except RigConnectionError as exc:
        raise AssertionError(str(exc)) from exc


async def _ready_count(sub: object, count: int) -> list:
    from protocols import ActorReady

    seen = []
    while len(seen) < count:
        msg = await sub.next_msg(timeout=30)  # type: ignore[attr-defined]
        seen.append(decode_as(ActorReady, msg.data)[0])
    return seen


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but not yet reaped by its (gone) parent.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_a_stale_report_is_dropped_and_logged(rig: Deployment) -> None:
    """A decision for a step the job has left changes nothing; the supervisor logs it."""
    await rig.spawn(*REFUND)
    reply = await rig.client.submit("refund", EXAMPLE)
    before = await rig.client.wait(reply.job_id, timeout=30)
    journal = [e async for e in rig.client.events(reply.job_id, timeout=10)]

    stale = Decision(job_id=reply.job_id, step=1, edge="escalate")
    await rig.nc.jetstream().publish(
        rig.names.report("agent", "refund", reply.job_id),
        encode(stale),
        headers={"Nats-Msg-Id": "late-duplicate"},
    )

    def stale_logged() -> bool:
        for line in (rig.home / "actors.Supervisor.log").read_text().splitlines():
            if '"report.stale"' in line:
                entry = json.loads(line)
                assert (entry["actor"], entry["job_id"], entry["step"]) == (
                    "supervisor",
                    reply.job_id,
                    1,
                )
                return True
        return False

    await eventually(lambda: asyncio.to_thread(stale_logged), message="report.stale logged")
    assert await rig.client.status(reply.job_id) == before
    again = [e async for e in rig.client.events(reply.job_id, timeout=10)]
    assert again == journal


async def test_a_long_handler_keeps_its_message(rig: Deployment) -> None:
    """A step held longer than the ack wait is not redelivered: in-progress acks keep it."""
    await rig.spawn(
        "actors:Supervisor",
        "tests.support.gated:GatedAgent",
        "tests.support.gated:GatedAgent",
        "actors.examples.refund:RefundTools",
        "actors.examples.refund:RefundChecks",
    )
    thinking = await rig.nc.subscribe(f"{rig.prefix}.test.thinking")
    job = await rig.client.submit("gated", EXAMPLE)
    await thinking.next_msg(timeout=30)
    # Three ack waits (RIG_ACK_WAIT=2): a redelivery would reach the other agent process,
    # which would announce it is thinking too.
    with pytest.raises(nats.errors.TimeoutError):
        await thinking.next_msg(timeout=6)
    info = await rig.nc.jetstream().consumer_info(rig.names.work_stream, "agent-gated")
    assert info.num_redelivered == 0
    await rig.nc.publish(f"{rig.prefix}.test.gate", b"go")
    assert (await rig.client.wait(job.job_id, timeout=30)).status == "succeeded"


async def test_the_example_bank_honours_the_idempotency_key(tmp_path: Path) -> None:
    """As a payment API does: a second request under a key moves no money and gets the
    first refund back; `attempts` still shows that it was asked twice."""
    bank = tmp_path / "refunds.sqlite3"
    first = {"refund_id": "r-1", "order_id": "A-1001", "amount": 10.0, "status": "issued"}
    again = {**first, "refund_id": "r-2"}
    assert await record_refund(bank, "job-1", "key-1", first) == first
    assert await record_refund(bank, "job-1", "key-1", again) == first
    assert await find_refund(bank, "key-1") == first
    assert await find_refund(bank, "key-2") is None
    assert refund_rows(tmp_path) == [("job-1", "A-1001", 10.0)]
    assert bank_attempts(tmp_path) == {"key-1": 2}


async def test_refunds_at_once_on_a_new_bank_are_all_made(tmp_path: Path) -> None:
    """Eight calls opening a new bank file at once (an eval's first refunds): each one
    is made. Switching a new file to WAL made some fail at once with "database is
    locked" (an eval's trial went to a person for it, 1 run in about 50)."""
    for round_ in range(40):
        home = tmp_path / str(round_)
        calls = [
            record_refund(
                home / "refunds.sqlite3",
                f"job-{i}",
                f"key-{i}",
                {"refund_id": f"r-{i}", "order_id": "A-1001", "amount": 1.0, "status": "issued"},
            )
            for i in range(8)
        ]
        made = await asyncio.gather(*calls)
        assert [refund["refund_id"] for refund in made] == [f"r-{i}" for i in range(8)]
