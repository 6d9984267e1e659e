"""Secrets stay secret: a provider's API key is in no byte Rig stores, logs or replies."""

from __future__ import annotations

import contextlib
import os
import uuid

import aiohttp
from nats.js.errors import NotFoundError

from actors.examples.refund import RefundAgent
from actors.runtime.nats import kv_latest
from actors.testing import Deployment
from tests.integration.test_llm import llm_config, start_chaos

KEY_VAR = "RIG_TEST_PROVIDER_KEY"
ACTORS = {
    "actors:Supervisor": 1,
    "actors.examples.refund:RefundLLMAgent": 1,
    "actors.examples.refund:RefundTools": 1,
    "actors.examples.refund:RefundChecks": 1,
}


async def test_a_providers_api_key_is_in_no_stored_byte(rig: Deployment) -> None:
    """A canary API key, required by the model server (which fails one request in five),
    drives 20 jobs of the model-routed refund agent under `rig up` with debug logs. The
    key went with every request, and no byte of the journal, the dead letters, any KV
    bucket, any log file, the ledger or the server's store holds it."""
    canary = f"sk-canary-{uuid.uuid4().hex}"
    chaos = await start_chaos(
        *("--seed", "5", "--rate-5xx", "0.2", "--main-path", "0.9", "--api-key-env", KEY_VAR),
        env=os.environ | {KEY_VAR: canary},
    )
    llm_config(rig, chaos.url, section="refund-llm", provider={"api_key_env": KEY_VAR})
    rig.extra_env |= {KEY_VAR: canary, "RIG_LOG_LEVEL": "debug"}
    ready = await rig.nc.subscribe(rig.names.actor_ready)
    up = await rig.rig_up(ACTORS)
    try:
        for _ in ACTORS:
            await ready.next_msg(timeout=60)
        jobs = []
        for n in range(20):
            job_input = RefundAgent.example_input | {"amount": 650 if n % 5 == 0 else 20 + n}
            jobs.append((await rig.client.submit("refund-llm", job_input)).job_id)
        ended = [await rig.client.wait(job, timeout=120) for job in jobs]
        assert {info.status for info in ended} <= {"succeeded", "waiting_human", "failed"}
        base = chaos.url.removesuffix("/v1")
        async with aiohttp.ClientSession() as http, http.get(f"{base}/stats") as response:
            stats = await response.json()
        assert stats["requests"] >= 20 and stats.get("unauthorized", 0) == 0, stats
        assert stats.get("5xx", 0) > 0  # the error paths ran too
        stored: list[bytes] = []
        for job in jobs:
            stored += [event.model_dump_json().encode() for event in await rig.client.journal(job)]
        info = await rig.client.js.stream_info(rig.names.dlq_stream)
        for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
            with contextlib.suppress(NotFoundError):  # a letter replayed since (deleted)
                letter = await rig.client.js.get_msg(rig.names.dlq_stream, seq)
                stored.append(letter.data or b"")
        for bucket in (
            rig.names.jobs_bucket,
            rig.names.agents_bucket,
            rig.names.inbox_bucket,
            rig.names.graphs_bucket,
            rig.names.breakers_bucket,
        ):
            stored += [data async for _key, data in kv_latest(rig.client.js, bucket)]
        assert len(stored) > 100
        assert not [data for data in stored if canary.encode() in data]
    finally:
        up.terminate()
        await up.wait()
        chaos.proc.terminate()
        await chaos.proc.wait()
    # Every file: logs, the ledger, `rig up`'s own, and the server's store.
    files = [p for p in [*rig.home.rglob("*"), *rig.server.store.rglob("*")] if p.is_file()]
    assert any(p.suffix == ".log" for p in files) and any("ledger" in p.name for p in files)
    assert [str(p) for p in files if canary.encode() in p.read_bytes()] == []
