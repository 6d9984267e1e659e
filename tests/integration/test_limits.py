"""Limits on what comes in: every one a typed error at every door, and the door stays open."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from nats.js.api import AckPolicy, ConsumerConfig

from actors.examples.refund import RefundAgent
from actors.runtime.nats import EVENTS_MAX_CONSUMERS, ensure_topology
from actors.testing import Deployment
from protocols import Event, decode, encode
from tests.conftest import REFUND
from tests.integration.test_big import HOARDER
from tests.integration.test_cli import rig_cli
from tests.integration.test_cli_user import one_clean_line
from tests.integration.test_gateway import start_gateway

LIMITS = {"RIG_LIMIT_STRING": "64", "RIG_LIMIT_ITEMS": "8", "RIG_LIMIT_KEYS": "12"}


async def test_each_limit_is_refused_at_every_door_and_work_goes_on(rig: Deployment) -> None:
    """With the limits lowered by their variables, a job input past any of them is refused
    over NATS (JSON and msgpack), HTTP and the CLI, naming the variable to raise; none of
    it is stored, and a job within them then runs."""
    rig.extra_env.update(LIMITS)
    await rig.spawn(*REFUND)
    base, _ = await start_gateway(rig)
    example = RefundAgent.example_input
    cases = {
        "RIG_LIMIT_STRING": example | {"reason": "x" * 65},
        "RIG_LIMIT_ITEMS": example | {"photos": list(range(9))},
        "RIG_LIMIT_KEYS": example | {f"k{n}": n for n in range(13 - len(example))},
    }
    async with aiohttp.ClientSession() as http:
        for variable, job_input in cases.items():
            body = {"agent": "refund", "input": job_input}
            for data in (json.dumps(body).encode(), encode(body)):
                reply = await rig.nc.request(rig.names.api_submit, data, timeout=10)
                error = decode(reply.data)[0]["error"]
                assert error["code"] == "schema_error" and variable in error["message"], error
            async with http.post(f"{base}/v1/jobs", json=body) as response:
                problem = await response.json()
                assert response.status == 400 and response.content_type == (
                    "application/problem+json"
                )
                assert problem["code"] == "schema_error" and variable in problem["detail"]
            code, _, err = await rig_cli(rig, "submit", "refund", "--input", json.dumps(job_input))
            one_clean_line(code, err, contains=variable)
    assert await rig.client.jobs() == []
    reply = await rig.client.submit("refund", example | {"reason": "x" * 64})
    assert (await rig.client.wait(reply.job_id, timeout=60)).status == "succeeded"


async def test_more_than_a_thousand_followers_may_watch_the_journal_at_once(
    rig: Deployment,
) -> None:
    """Every `rig watch`, SSE client and `RigClient.wait` follows its job with a consumer
    of its own on the journal's stream (kept a few seconds after it ends). nats-server
    2.15 allows a stream 1,000 consumers unless the stream sets more: the journal's does,
    so the 1,001st follower is not refused."""
    js = rig.nc.jetstream()
    stream = rig.names.events_stream
    # A deployment made before the limit (the server's default) has it raised, and no
    # other stream is touched.
    info = await js.stream_info(stream)
    info.config.max_consumers = -1
    await js.update_stream(info.config)
    work = (await js.stream_info(rig.names.work_stream)).config
    await ensure_topology(js, rig.names)
    assert (await js.stream_info(stream)).config.max_consumers == EVENTS_MAX_CONSUMERS
    assert (await js.stream_info(rig.names.work_stream)).config == work
    made = []
    for n in range(1_050):
        info = await js.add_consumer(
            stream,
            ConsumerConfig(
                filter_subject=rig.names.events(f"job-{n}"),
                ack_policy=AckPolicy.NONE,
                inactive_threshold=60.0,
                mem_storage=True,
            ),
        )
        made.append(info.name)
    assert len(set(made)) == 1_050
    for name in made:
        await js.delete_consumer(stream, name)


SIZES = {"RIG_MAX_INPUT_BYTES": "2048", "RIG_MAX_RESULT_BYTES": "4096"}
SIZES |= {"RIG_MAX_ANSWER_BYTES": "1024"}


def input_of(size: int) -> dict[str, Any]:
    """A hoarder's input whose stored form (msgpack) is exactly `size` bytes."""
    for pad in range(size):
        value = {"size": 10, "x": "a" * pad}
        if len(encode(value)) == size:
            return value
    raise AssertionError(f"no input of {size} bytes")


def answer_of(size: int) -> dict[str, Any]:
    """A hoarder's input that makes its model answer exactly `size` bytes."""
    bare = len(json.dumps({"edge": "fetch", "args": {"size": 10, "pad": ""}}))
    return {"size": 10, "pad": size - bare}


def result_of(size: int) -> dict[str, Any]:
    """A hoarder's input whose tool result (JSON) is exactly `size` bytes."""
    return {"size": size - len('{"blob":""}')}


async def test_an_input_result_and_answer_one_byte_over_get_their_typed_error(
    rig: Deployment,
) -> None:
    """With the size limits lowered by their variables, each value one byte over its limit
    is refused where it enters, with its own code (an input over NATS and HTTP, before
    any job is kept; a tool's result at its executor; a model's answer at its agent),
    and the same at the limit passes; the processes serve on."""
    rig.extra_env.update(SIZES)
    await rig.spawn(*HOARDER)
    base, _ = await start_gateway(rig)
    most = {name: int(value) for name, value in SIZES.items()}
    async with aiohttp.ClientSession() as http:
        over = {"agent": "hoarder", "input": input_of(most["RIG_MAX_INPUT_BYTES"] + 1)}
        reply = await rig.nc.request(rig.names.api_submit, json.dumps(over).encode(), timeout=10)
        error = decode(reply.data)[0]["error"]
        assert error["code"] == "payload_too_large" and "RIG_MAX_INPUT_BYTES" in error["message"]
        async with http.post(f"{base}/v1/jobs", json=over) as response:
            problem = await response.json()
            assert (response.status, problem["code"]) == (413, "payload_too_large")
        assert await rig.client.jobs() == []  # nothing of it was kept
        # A signal's data and a person's arguments are inputs too: refused before the
        # job they name is even looked for.
        big = input_of(most["RIG_MAX_INPUT_BYTES"] + 1)
        for subject, request in (
            (rig.names.api_signal, {"job_id": "nope", "name": "go", "data": big}),
            (rig.names.api_resolve, {"job_id": "nope", "edge": "go", "args": big}),
        ):
            reply = await rig.nc.request(subject, json.dumps(request).encode(), timeout=10)
            assert decode(reply.data)[0]["error"]["code"] == "payload_too_large"
        signal = {"data": big}
        async with http.post(f"{base}/v1/jobs/nope/signals/go", json=signal) as response:
            assert (response.status, (await response.json())["code"]) == (
                413,
                "payload_too_large",
            )
        at = {"agent": "hoarder", "input": input_of(most["RIG_MAX_INPUT_BYTES"])}
        async with http.post(f"{base}/v1/jobs", json=at) as response:
            assert response.status == 202, await response.text()
            accepted = (await response.json())["job_id"]
    assert (await rig.client.wait(accepted, timeout=rig.within())).status == "succeeded"

    async def run(job_input: dict[str, Any]) -> tuple[str, list[Event]]:
        reply = await rig.client.submit("hoarder", job_input)
        info = await rig.client.wait(reply.job_id, timeout=rig.within())
        return info.status, await rig.client.journal(reply.job_id)

    status, journal = await run(result_of(most["RIG_MAX_RESULT_BYTES"] + 1))
    [result] = [e for e in journal if e.type == "tool_result"]
    assert status == "failed" and result.data["error"]["code"] == "result_too_large"
    assert result.data["error"]["bytes"] == most["RIG_MAX_RESULT_BYTES"] + 1
    status, journal = await run(answer_of(most["RIG_MAX_ANSWER_BYTES"] + 1))
    [decision] = [e for e in journal if e.type == "decision"]
    assert status == "failed" and decision.data["fallback"] and decision.data["reasks"] > 0
    assert decision.data["reason"].startswith("answer_too_large: the answer is 1025 bytes")
    # At each limit, the same job goes through; the processes served on.
    for job_input in (result_of(most["RIG_MAX_RESULT_BYTES"]), answer_of(1024)):
        status, _ = await run(job_input)
        assert status == "succeeded"
