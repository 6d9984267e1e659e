"""Webhooks from `rig gateway`: signed per Standard Webhooks, at least once, retried with
backoff, dead-lettered when the receiver stays down. The receiver is a real HTTP server
that verifies every delivery with the `standardwebhooks` package."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from actors.deploy.up import free_port
from actors.gateway.webhooks import WebhookSettings, new_secret
from actors.testing import Deployment, eventually
from protocols import TERMINAL_STATUSES, ConfigError
from tests.conftest import REFUND
from tests.integration.test_cli import rig_cli
from tests.integration.test_gateway import OVER_LIMIT, start_gateway

pytestmark = pytest.mark.integration

WEBHOOK_STATUSES = (*TERMINAL_STATUSES, "waiting_human")


class Receiver:
    """A webhook endpoint: answers 500 to its first `fail_first` requests, then verifies
    each delivery's signature and keeps it by `webhook-id`."""

    def __init__(self, secret: str, *, fail_first: int = 0) -> None:
        self.verifier = Webhook(secret)
        self.fail_first = fail_first
        self.requests = 0
        self.verified: Counter[str] = Counter()  # webhook-id -> verified deliveries
        self.bodies: dict[str, dict[str, Any]] = {}
        self.forged = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests <= self.fail_first:
            return web.Response(status=500, text="not yet")
        raw = await request.read()
        try:
            body = self.verifier.verify(raw, dict(request.headers))
        except Exception:
            self.forged += 1
            return web.Response(status=400)
        webhook_id = request.headers["webhook-id"]
        self.verified[webhook_id] += 1
        self.bodies[webhook_id] = body
        return web.Response(status=204)


async def serve(receiver: Receiver) -> tuple[str, web.AppRunner]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return f"http://127.0.0.1:{port}/hook", runner


@pytest.fixture
def secret(rig: Deployment) -> str:
    value = new_secret()
    rig.extra_env |= {
        "RIG_WEBHOOK_SECRET": value,
        "RIG_WEBHOOK_BACKOFF_S": "0.05",
        # The receivers here listen on loopback, which a webhook may reach only when the
        # operator allows it.
        "RIG_WEBHOOK_ALLOW": "127.0.0.1",
    }
    return value


@pytest.fixture
async def receiver(secret: str) -> AsyncIterator[tuple[Receiver, str]]:
    endpoint = Receiver(secret, fail_first=3)
    url, runner = await serve(endpoint)
    yield endpoint, url
    await runner.cleanup()


async def rig_json(rig: Deployment, *args: str) -> Any:
    code, out, err = await rig_cli(rig, *args, "--json")
    assert code == 0, err
    return json.loads(out)


async def test_every_end_arrives_verified_once_though_the_first_deliveries_fail(
    rig: Deployment, http: aiohttp.ClientSession, receiver: tuple[Receiver, str]
) -> None:
    endpoint, url = receiver
    await rig.spawn(*REFUND)
    base, _ = await start_gateway(rig)
    jobs: dict[str, dict[str, Any]] = {}
    for n in range(6):
        job_input = OVER_LIMIT if n == 0 else {"order_id": "A-1001", "amount": 5 + n}
        async with http.post(
            f"{base}/v1/jobs",
            json={"agent": "refund", "input": job_input, "webhook": {"url": url}},
        ) as response:
            assert response.status == 202, await response.text()
            jobs[(await response.json())["job_id"]] = job_input
    parked = next(iter(jobs))
    await eventually(lambda: _status_is(rig, parked, "waiting_human"), timeout=60)
    await rig.client.resolve(parked, "approve", by="test")
    # What must arrive: each job's end, and the parked one's wait for a person.
    wanted: dict[str, Any] = {}
    for job_id in jobs:
        assert (await rig.client.wait(job_id, timeout=60)).status == "succeeded"
        journal = [event async for event in rig.client.events(job_id, timeout=60)]
        for event in journal:
            if event.type == "status" and event.data["status"] in WEBHOOK_STATUSES:
                wanted[f"{job_id}.{event.seq}"] = event
    assert len(wanted) == len(jobs) + 1

    async def all_arrived() -> bool:
        return set(endpoint.verified) >= set(wanted)

    await eventually(all_arrived, timeout=90, message="every webhook, verified")
    assert set(endpoint.verified) == set(wanted)  # nothing else was sent
    assert endpoint.requests >= 3 + len(wanted)  # three refused, then each one
    assert endpoint.forged == 0
    for key, event in wanted.items():
        # Each carries the journal's own event, typed by the status.
        assert endpoint.bodies[key]["type"] == f"job.{event.data['status']}"
        assert endpoint.bodies[key]["data"] == event.model_dump(mode="json")
    records = await rig_json(rig, "webhooks", "ls")
    assert {record["webhook_id"] for record in records} == set(endpoint.verified)
    assert all(record["state"] == "delivered" for record in records)
    assert sum(endpoint.verified.values()) >= len(wanted)  # at least once; dedup by id
    assert max(record["attempts"] for record in records) >= 2  # the refused ones came back


async def _status_is(rig: Deployment, job_id: str, status: str) -> bool:
    return (await rig.client.status(job_id)).status == status


async def test_a_receiver_down_past_the_attempts_yields_a_dead_letter(
    rig: Deployment, http: aiohttp.ClientSession, secret: str
) -> None:
    rig.extra_env["RIG_WEBHOOK_ATTEMPTS"] = "3"
    await rig.spawn(*REFUND)
    base, _ = await start_gateway(rig)
    nobody = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    async with http.post(
        f"{base}/v1/jobs",
        json={
            "agent": "refund",
            "input": {"order_id": "A-1001", "amount": 5},
            "webhook": {"url": nobody},
        },
    ) as response:
        job_id = (await response.json())["job_id"]

    async def dead() -> list[Any]:
        letters = await rig.client.dead_letters()
        return [letter for _, letter in letters if letter.actor == "webhooks"]

    await eventually(dead, timeout=60, message="the webhook's dead letter")
    [letter] = [item for item in await rig_json(rig, "dlq", "ls") if item["actor"] == "webhooks"]
    assert "attempt 3 of 3" in letter["reason"] and nobody in letter["reason"]
    [record] = await rig_json(rig, "webhooks", "ls", "--failed", "--job", job_id)
    assert record["state"] == "dead_letter" and record["attempts"] == 3
    assert "Connect" in record["error"]
    # The job is not moved by its webhook's letter: it ended, and stays as it ended.
    assert (await rig.client.status(job_id)).status == "succeeded"


async def test_a_webhook_without_a_secret_or_with_a_bad_url_is_refused(
    rig: Deployment, http: aiohttp.ClientSession
) -> None:
    await rig.spawn("actors:Supervisor")
    base, _ = await start_gateway(rig)
    body = {"agent": "refund", "input": {}, "webhook": {"url": "http://127.0.0.1:9/hook"}}
    async with http.post(f"{base}/v1/jobs", json=body) as response:
        assert response.status == 400
        assert (await response.json())["code"] == "webhooks_off"
    for url in ("ftp://example.com/x", "http:///nohost", "http://user:pw@example.com/"):
        body["webhook"] = {"url": url}
        async with http.post(f"{base}/v1/jobs", json=body) as response:
            assert response.status == 400, url
            assert (await response.json())["code"] == "schema_error"


@pytest.mark.parametrize("secret", ["whsec_", "whsec_!!!!", "not-a-secret"])
def test_a_secret_that_is_not_one_stops_the_start_saying_so(secret: str) -> None:
    with pytest.raises(ConfigError, match="RIG_WEBHOOK_SECRET"):
        WebhookSettings(secret=secret).signer()
    assert WebhookSettings(secret=new_secret()).signer() is not None


async def test_a_webhook_to_an_inside_address_is_refused_without_connecting(
    rig: Deployment, http: aiohttp.ClientSession, secret: str
) -> None:
    """Without RIG_WEBHOOK_ALLOW a webhook reaches public addresses only: one given as a
    loopback or metadata address is refused at submission (400 `webhook_refused`); one
    given by a name that resolves to loopback is refused as the socket is made, without
    a connection (the live receiver there hears nothing), and dead-lettered at once
    with the reason, the same whatever listens (no port scanning by delivery records)."""
    del rig.extra_env["RIG_WEBHOOK_ALLOW"]
    endpoint = Receiver(secret)
    url, runner = await serve(endpoint)
    try:
        await rig.spawn(*REFUND)
        base, _ = await start_gateway(rig)
        job = {"agent": "refund", "input": {"order_id": "A-1001", "amount": 5}}
        for inside in (url, "http://169.254.169.254/latest/meta-data", "http://[::1]:80/"):
            async with http.post(f"{base}/v1/jobs", json=job | {"webhook": {"url": inside}}) as r:
                assert r.status == 400, inside
                assert (await r.json())["code"] == "webhook_refused"
        by_name = url.replace("127.0.0.1", "localhost")
        async with http.post(f"{base}/v1/jobs", json=job | {"webhook": {"url": by_name}}) as r:
            assert r.status == 202, await r.text()
            job_id = (await r.json())["job_id"]
        assert (await rig.client.wait(job_id, timeout=rig.within(30))).status == "succeeded"

        async def refused() -> list[Any]:
            records = await rig_json(rig, "webhooks", "ls", "--failed", "--job", job_id)
            return [r for r in records if r["state"] == "dead_letter"]

        [record] = await eventually(refused, timeout=60, message="the refused webhook")
        assert record["attempts"] == 1 and "not a public address" in record["error"]
        assert endpoint.requests == 0
    finally:
        await runner.cleanup()
