"""Limits on what comes in: every one a typed error at every door, and the door stays open."""

from __future__ import annotations

import json

import aiohttp
from nats.js.api import AckPolicy, ConsumerConfig

from actors.examples.refund import RefundAgent
from actors.runtime.nats import EVENTS_MAX_CONSUMERS, ensure_topology
from actors.testing import Deployment
from protocols import decode, encode
from tests.conftest import REFUND
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
