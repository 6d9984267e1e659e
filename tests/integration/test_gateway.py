"""`rig gateway` over real HTTP: gateway processes (`actors:Gateway`) on a real server,
spoken to with aiohttp as any web backend would."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import resource
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from actors.gateway.app import WRITE_TIMEOUT_S
from actors.gateway.keys import add_key, revoke_key
from actors.testing import Deployment, eventually
from protocols import Event
from tests.conftest import REFUND, outside_tool
from tests.integration.test_cli import rig_cli
from tests.integration.test_llm import llm_config, start_chaos
from tests.support.chain import CHAIN

pytestmark = pytest.mark.integration

OVER_LIMIT = {"order_id": "A-1001", "amount": 650.0, "reason": "never arrived"}  # a person


async def start_gateway(rig: Deployment) -> tuple[str, asyncio.subprocess.Process]:
    """A gateway on a port it picks itself (`RIG_GATEWAY_PORT=0`), and the URL it logged:
    no other process can take that port between a check and the bind."""
    rig.extra_env["RIG_GATEWAY_PORT"] = "0"
    [proc] = await rig.spawn("actors:Gateway")  # it announces itself once it listens
    lines = rig.log_of("actors:Gateway").read_text().splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    *_, url = [line["url"] for line in logged if line["event"] == "gateway.listening"]
    return str(url), proc


async def sse(
    http: aiohttp.ClientSession, url: str, *, after: int | None = None
) -> AsyncIterator[dict[str, str]]:
    """The events of an SSE stream, as dicts of their fields."""
    headers = {"Last-Event-ID": str(after)} if after is not None else {}
    async with http.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        fields: dict[str, str] = {}
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if not line:
                if "data" in fields:
                    yield fields
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")


async def journal(rig: Deployment, job_id: str) -> list[Event]:
    return [event async for event in rig.client.events(job_id, timeout=60)]


async def test_a_job_over_http_202_then_its_events_to_the_end(
    rig: Deployment, http: aiohttp.ClientSession
) -> None:
    await rig.spawn(*REFUND)
    base, _ = await start_gateway(rig)
    async with http.post(
        f"{base}/v1/jobs", json={"agent": "refund", "input": {"order_id": "A-1001", "amount": 5}}
    ) as response:
        assert response.status == 202
        body = await response.json()
        assert response.headers["Location"] == f"/v1/jobs/{body['job_id']}"
    assert body["status"] == "accepted" and body["links"]["events"].endswith("/events")
    streamed = [event async for event in sse(http, base + body["links"]["events"])]
    events = [Event.model_validate_json(event["data"]) for event in streamed]
    # The same journal `rig watch` shows, in order, each event once, typed and numbered.
    assert events == await journal(rig, body["job_id"])
    assert [event["event"] for event in streamed] == [event.type for event in events]
    ids = [int(event["id"]) for event in streamed]
    assert ids == sorted(set(ids))
    assert events[-1].data["status"] == "succeeded"
    async with http.get(base + body["links"]["wait"]) as response:
        assert (await response.json())["status"] == "succeeded"
    async with http.get(f"{base}/v1/jobs/{body['job_id']}") as response:
        assert (await response.json())["state"] == "done"


async def test_a_stream_resumes_on_another_replica_after_a_kill(
    rig: Deployment, http: aiohttp.ClientSession
) -> None:
    """Fifty jobs park for a person while their streams run on gateway one; it is
    SIGKILLed; a person resolves them through gateway two, where each stream resumes
    from the last id it saw: every event once, none missing."""
    await rig.spawn(*REFUND)
    one, first = await start_gateway(rig)
    two, _ = await start_gateway(rig)
    jobs = []
    for _ in range(50):
        async with http.post(
            f"{one}/v1/jobs", json={"agent": "refund", "input": OVER_LIMIT}
        ) as response:
            jobs.append((await response.json())["job_id"])

    async def until_parked(job_id: str) -> list[dict[str, str]]:
        seen = []
        async for event in sse(http, f"{one}/v1/jobs/{job_id}/events"):
            seen.append(event)
            if json.loads(event["data"])["data"].get("status") == "waiting_human":
                return seen
        raise AssertionError("the stream ended before the job parked")

    before = await asyncio.gather(*(until_parked(job_id) for job_id in jobs))
    first.send_signal(signal.SIGKILL)
    await first.wait()
    for job_id in jobs:
        async with http.post(
            f"{two}/v1/jobs/{job_id}/resolve", json={"edge": "approve", "by": "test"}
        ) as response:
            assert response.status == 200, await response.text()

    async def resumed(job_id: str, seen: list[dict[str, str]]) -> list[dict[str, str]]:
        url = f"{two}/v1/jobs/{job_id}/events"
        return [event async for event in sse(http, url, after=int(seen[-1]["id"]))]

    after = await asyncio.gather(*(resumed(j, s) for j, s in zip(jobs, before, strict=True)))
    for job_id, head, tail in zip(jobs, before, after, strict=True):
        events = [Event.model_validate_json(event["data"]) for event in head + tail]
        assert events == await journal(rig, job_id)  # none missing, none twice
        assert events[-1].data["status"] == "succeeded"


async def test_one_idempotency_key_is_one_job(rig: Deployment, http: aiohttp.ClientSession) -> None:
    await rig.spawn(*REFUND)
    base, _ = await start_gateway(rig)
    body = {"agent": "refund", "input": {"order_id": "A-1002", "amount": 7}}
    headers = {"Idempotency-Key": "order-A-1002-refund-1"}
    ids = set()
    for _ in range(10):  # a client retrying after timeouts
        async with http.post(f"{base}/v1/jobs", json=body, headers=headers) as response:
            assert response.status == 202
            ids.add((await response.json())["job_id"])
    assert len(ids) == 1
    other = body | {"input": {"order_id": "A-1002", "amount": 70}}
    async with http.post(f"{base}/v1/jobs", json=other, headers=headers) as response:
        assert response.status == 409
        assert response.content_type == "application/problem+json"
        problem = await response.json()
    assert problem["code"] == "job_conflict" and problem["status"] == 409
    jobs = await rig.client.jobs(agent="refund")
    assert [job.job_id for job in jobs] == list(ids)


async def test_bad_requests_get_problem_documents_and_the_gateway_keeps_serving(
    rig: Deployment, http: aiohttp.ClientSession
) -> None:
    await rig.spawn(*REFUND)
    base, _ = await start_gateway(rig)
    job = {"agent": "refund", "input": {"order_id": "A-1001", "amount": 5}}

    async def problem(method: str, path: str, **kwargs: Any) -> tuple[int, str]:
        async with http.request(method, base + path, **kwargs) as response:
            assert response.content_type == "application/problem+json", await response.text()
            body = await response.json()
            assert body["status"] == response.status and body["detail"]
            return response.status, str(body["code"])

    as_json = {"Content-Type": "application/json"}
    assert await problem("POST", "/v1/jobs", data=b"{not", headers=as_json) == (
        400,
        "decode_error",
    )
    assert await problem("POST", "/v1/jobs", data=b'{"a": NaN}', headers=as_json) == (
        400,
        "decode_error",
    )
    assert await problem(
        "POST", "/v1/jobs", data=json.dumps(job), headers={"Content-Type": "text/plain"}
    ) == (415, "unsupported_media_type")
    assert await problem("POST", "/v1/jobs", json={"agent": "refund"}) == (400, "schema_error")
    assert await problem("POST", "/v1/jobs", json=job | {"extra": 1}) == (400, "schema_error")
    assert await problem("POST", "/v1/jobs", json=job | {"agent": "nobody"}) == (
        404,
        "unknown_agent",
    )
    big = io.BytesIO(json.dumps(job | {"input": {"blob": "x" * (2 << 20)}}).encode())
    assert await problem("POST", "/v1/jobs", data=big, headers=as_json) == (
        413,
        "payload_too_large",
    )
    assert await problem("GET", "/v1/jobs/no-such-job") == (404, "unknown_job")
    assert await problem("GET", "/v1/jobs/a.b") == (400, "invalid_name")
    assert await problem("GET", "/v1/jobs/no-such-job/events") == (404, "unknown_job")
    assert await problem("GET", "/v1/nothing-here") == (404, "not_found")
    assert await problem("GET", "/v1/agents/nobody") == (404, "unknown_agent")
    assert await problem("GET", "/v1/jobs?cursor=not-ours") == (400, "schema_error")
    async with http.post(f"{base}/v1/jobs", json=job) as response:
        job_id = (await response.json())["job_id"]
    assert await problem("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "soon"}) == (
        400,
        "schema_error",
    )
    assert await problem("GET", f"/v1/jobs/{job_id}/wait?timeout=-1") == (400, "schema_error")
    assert await problem("POST", f"/v1/jobs/{job_id}/resolve", json={"edge": "approve"}) == (
        409,
        "job_state",
    )
    async with http.get(f"{base}/readyz") as response:  # still serving
        assert response.status == 200 and (await response.json()) == {"ok": True}


async def test_a_property_based_tester_finds_no_server_error_and_nothing_undocumented(
    rig: Deployment, http: aiohttp.ClientSession, api_key: str, tmp_path: Path
) -> None:
    """schemathesis, driven by the gateway's own OpenAPI document, against the live
    gateway: every response is documented (status, content type, schema) and none is a
    5xx, whatever the bodies, ids, headers and query strings."""
    await rig.spawn(*REFUND)
    base, _ = await start_gateway(rig)
    async with http.get(f"{base}/openapi.json") as response:
        document = await response.json()
    assert (
        document["openapi"].startswith("3.1") and "/v1/jobs/{job_id}/events" in (document["paths"])
    )
    checks = (
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance"
    )
    proc = await asyncio.create_subprocess_exec(
        outside_tool("schemathesis"),
        "run",
        f"{base}/openapi.json",
        "--checks",
        checks,
        "--max-examples",
        "30",
        "--seed",
        "7",
        # One worker: hypothesis parses lambdas' source with `ast`, which is not safe
        # across threads in CPython 3.11 ("AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--generation-deterministic",
        "--header",
        f"Authorization: Bearer {api_key}",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 600)
    assert proc.returncode == 0, out.decode()[-6000:]
    async with http.get(f"{base}/readyz") as response:
        assert response.status == 200


async def test_tokens_stream_between_the_journals_events(
    rig: Deployment, http: aiohttp.ClientSession
) -> None:
    """`?tokens=true`: the model's tokens as `token` events (no id: they are not stored),
    as they stream, among the journal's events."""
    server = await start_chaos("--main-path", "1", "--latency-p50", "1.0")
    try:
        llm_config(rig, server.url, stream=True)
        await rig.spawn(*CHAIN)
        base, _ = await start_gateway(rig)
        async with http.post(
            f"{base}/v1/jobs", json={"agent": "chain", "input": {"n": 3}}
        ) as response:
            events_url = base + (await response.json())["links"]["events"] + "?tokens=true"
        streamed = [event async for event in sse(http, events_url)]
    finally:
        server.proc.terminate()
        await server.proc.wait()
    tokens = [event for event in streamed if event.get("event") == "token"]
    assert tokens and all("id" not in event for event in tokens)
    text = "".join(json.loads(event["data"])["text"] for event in tokens)
    assert '"edge": "finish"' in text  # the last step's answer, streamed (1 s a call)
    journal_ids = [int(event["id"]) for event in streamed if "id" in event]
    assert journal_ids == sorted(set(journal_ids))
    assert json.loads(streamed[-1]["data"])["data"]["status"] == "succeeded"


async def test_without_a_valid_key_a_request_learns_nothing(
    rig: Deployment, http: aiohttp.ClientSession
) -> None:
    """Every /v1 route needs the key; a request without it (or with a wrong or revoked
    one) gets the same 401 whatever it asked, so it cannot tell a job or a route exists."""
    await rig.spawn(*REFUND)
    base, _ = await start_gateway(rig)
    async with http.post(
        f"{base}/v1/jobs", json={"agent": "refund", "input": {"order_id": "A-1001", "amount": 5}}
    ) as response:
        job_id = (await response.json())["job_id"]
    asks = [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", "/v1/jobs/no-such-job"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("GET", "/v1/no-such-route"),
        ("GET", "/v1/jobs"),
    ]
    other = add_key(rig.home / "other-keys", "elsewhere")  # a real key, of another file
    answers = set()
    async with aiohttp.ClientSession() as stranger:
        for headers in (
            {},
            {"Authorization": f"Bearer {other}"},
            {"Authorization": f"Basic {other}"},
            {"Authorization": "Bearer"},
        ):
            for method, path in asks:
                async with stranger.request(method, base + path, headers=headers) as response:
                    assert response.status == 401, (method, path, headers)
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
                    assert response.content_type == "application/problem+json"
                    answers.add(await response.text())
        assert len(answers) == 1 and job_id not in answers.pop()
        async with stranger.get(f"{base}/healthz") as response:  # probes need no key
            assert response.status == 200
        # A revoked key stops working without a restart.
        revoke_key(rig.home / "gateway-keys", "tests")

        async def refused() -> bool:
            async with http.get(f"{base}/v1/jobs/{job_id}") as response:
                return response.status == 401

        await eventually(refused, timeout=20, message="the revoked key refused")


async def test_another_address_than_loopback_needs_keys(rig: Deployment, tmp_path: Path) -> None:
    rig.extra_env |= {
        "RIG_GATEWAY_HOST": "0.0.0.0",
        "RIG_GATEWAY_KEYS": str(tmp_path / "none-here"),
    }
    [proc] = await rig.spawn("actors:Gateway", ready=False)
    assert await asyncio.wait_for(proc.wait(), 60) == 2
    log = (rig.home / "actors.Gateway.log").read_text()
    assert "needs API keys" in log and "rig keys add" in log
    key = add_key(tmp_path / "keys", "remote")
    rig.extra_env["RIG_GATEWAY_KEYS"] = str(tmp_path / "keys")
    base, _ = await start_gateway(rig)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as client:
        async with client.get(f"{base}/v1/jobs") as response:
            assert response.status == 200


async def test_a_killed_agent_drops_out_of_rig_ps_and_the_agents_route(
    rig: Deployment, http: aiohttp.ClientSession
) -> None:
    await rig.spawn("actors:Supervisor", "actors.examples.refund:RefundTools")
    agents = await rig.spawn(*["actors.examples.refund:RefundAgent"] * 2)
    base, _ = await start_gateway(rig)

    async def live() -> tuple[list[int], int]:
        """The agent pids that answer `$SRV` (what `rig ps` lists), and the route's count."""
        found = await rig.client.actors(listen=2.0)
        async with http.get(f"{base}/v1/agents") as response:
            [refund] = (await response.json())["agents"]
        return sorted(actor.pid for actor in found if actor.kind == "agent"), refund["live"]

    async def both() -> bool:
        return await live() == (sorted(proc.pid for proc in agents), 2)

    await eventually(both, timeout=30, message="both agents live")
    code, out, _ = await rig_cli(rig, "ps", "--json")
    assert code == 0
    kinds = sorted(actor["kind"] for actor in json.loads(out))
    assert kinds == ["agent", "agent", "gateway", "supervisor", "tools"]
    agents[0].send_signal(signal.SIGKILL)
    await agents[0].wait()

    async def one() -> bool:
        return await live() == ([agents[1].pid], 1)

    # $SRV at once (nothing answers for the dead process); the route when its presence
    # key expires (PRESENCE_TTL_S).
    await eventually(one, timeout=40, message="the killed agent gone from both")
    code, out, _ = await rig_cli(rig, "ps", "--json", "--kind", "agent")
    assert code == 0 and [actor["pid"] for actor in json.loads(out)] == [agents[1].pid]


async def test_jobs_page_newest_first_and_an_agent_shows_its_graph(
    rig: Deployment, http: aiohttp.ClientSession
) -> None:
    await rig.spawn("actors:Supervisor", "actors.examples.refund:RefundAgent")
    base, _ = await start_gateway(rig)
    submitted = []
    for n in range(7):
        async with http.post(
            f"{base}/v1/jobs", json={"agent": "refund", "input": {"order_id": f"A-{n}"}}
        ) as response:
            submitted.append((await response.json())["job_id"])

    async def indexed() -> bool:
        # A job enters the listing's index when it starts (its first status change),
        # a moment after its submit is answered.
        return len(await rig.client.jobs(agent="refund", limit=100)) == len(submitted)

    await eventually(indexed, timeout=rig.within(), message="all 7 jobs listed")
    pages, url = [], f"{base}/v1/jobs?agent=refund&limit=3"
    while url:
        async with http.get(url) as response:
            assert response.status == 200
            page = await response.json()
        pages.append([job["job_id"] for job in page["jobs"]])
        url = base + page["next"] if page["next"] else ""
    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [job_id for page in pages for job_id in page]
    assert listed == [job.job_id for job in await rig.client.jobs(agent="refund", limit=100)]
    assert sorted(listed) == sorted(submitted)  # each once, none left out

    async with http.get(f"{base}/v1/agents/refund") as response:
        agent = await response.json()
    assert agent["live"] == 1 and agent["graph"]["initial"] == "triage"
    assert agent["mermaid"].startswith("---") or "stateDiagram-v2" in agent["mermaid"]
    assert "triage" in agent["mermaid"] and agent["graph_version"]


async def raw_connection(base: str) -> socket.socket:
    """A TCP connection to the gateway with a tiny receive window, outside asyncio's
    streams (which would read on our behalf)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return sock


async def test_a_client_that_never_reads_is_cut_off_and_others_are_served(
    rig: Deployment, http: aiohttp.ClientSession, api_key: str
) -> None:
    """A stream whose client reads nothing fills its bounded buffer and is cut off after
    WRITE_TIMEOUT_S (it would resume by id); meanwhile everything else is served."""
    await rig.spawn("actors:Supervisor", "actors.examples.refund:RefundAgent")
    base, _ = await start_gateway(rig)
    job_input = {"order_id": "A-1001", "note": "x" * 240_000}  # one big `accepted` event
    async with http.post(f"{base}/v1/jobs", json={"agent": "refund", "input": job_input}) as r:
        job_id = (await r.json())["job_id"]
    loop = asyncio.get_running_loop()
    sock = await raw_connection(base)
    request = (
        f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: gateway\r\n"
        f"Authorization: Bearer {api_key}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    try:
        # Served meanwhile: the same stream to a client that reads, and the probes.
        async with contextlib.aclosing(sse(http, f"{base}/v1/jobs/{job_id}/events")) as events:
            first = await anext(events)
        assert first["event"] == "accepted" and len(first["data"]) > 240_000
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200
        log = rig.home / "actors.Gateway.log"
        await eventually(
            lambda: _logged(log, "gateway.client_too_slow"),
            timeout=WRITE_TIMEOUT_S + 30,
            message="the gateway cut the client that does not read",
        )
        got = b""
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(30):
                while chunk := await loop.sock_recv(sock, 65536):
                    got += chunk
        assert len(got) < 240_000  # cut off mid-way: the connection is closed, not held
    finally:
        sock.close()
    async with http.get(f"{base}/v1/jobs/{job_id}") as response:
        assert response.status == 200


async def _logged(log: Path, event: str) -> bool:
    return event in await asyncio.to_thread(log.read_text)


async def test_thousands_of_idle_connections_do_not_stop_the_gateway(
    rig: Deployment, http: aiohttp.ClientSession
) -> None:
    """2,000 connections that send nothing (and 100 that send half a request) while a job
    goes through the gateway end to end; then each is closed after RIG_GATEWAY_IDLE_S."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    rig.extra_env["RIG_GATEWAY_IDLE_S"] = "15"
    await rig.spawn(*REFUND)
    base, _ = await start_gateway(rig)
    host, port = base.removeprefix("http://").split(":")
    idle = []
    for n in range(2100):
        reader, writer = await asyncio.open_connection(host, int(port))
        if n % 21 == 0:
            writer.write(b"GET /v1/jobs HTTP/1.1\r\nHost: gateway\r\n")  # and no more
        idle.append((reader, writer))
    try:
        async with http.post(
            f"{base}/v1/jobs",
            json={"agent": "refund", "input": {"order_id": "A-1001", "amount": 5}},
        ) as response:
            assert response.status == 202
            events_url = base + (await response.json())["links"]["events"]
        streamed = [event async for event in sse(http, events_url)]
        assert json.loads(streamed[-1]["data"])["data"]["status"] == "succeeded"

        async def closed(reader: asyncio.StreamReader) -> bytes:
            return await asyncio.wait_for(reader.read(), 60)

        answers = await asyncio.gather(*(closed(reader) for reader, _ in idle))
        assert set(answers) == {b""}  # closed by the gateway, without an answer
    finally:
        for _, writer in idle:
            writer.close()
    async with http.get(f"{base}/readyz") as response:
        assert response.status == 200


async def test_a_page_of_another_site_cannot_cancel_through_a_gateway_without_keys(
    rig: Deployment, tmp_path: Path
) -> None:
    """A gateway without keys (loopback) still refuses a request that changes something
    when a browser sent it from another site's page (its Origin or Sec-Fetch-Site says
    so): 403 `cross_site`, the job untouched. A program's request (neither header) and
    the console's own (same origin) go through."""
    rig.extra_env["RIG_GATEWAY_KEYS"] = str(tmp_path / "no-keys-here")
    await rig.spawn(*REFUND)
    base, _ = await start_gateway(rig)
    reply = await rig.client.submit("refund", OVER_LIMIT)
    await rig.client.wait(reply.job_id, timeout=rig.within(30))  # parked for a person
    cancel = f"{base}/v1/jobs/{reply.job_id}/cancel"
    async with aiohttp.ClientSession() as client:
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            async with client.post(cancel, headers=headers) as response:
                assert response.status == 403, headers
                assert (await response.json())["code"] == "cross_site"
        assert (await rig.client.status(reply.job_id)).status == "waiting_human"
        async with client.post(cancel, headers={"Origin": base}) as response:
            assert response.status == 200, await response.text()
    assert (await rig.client.status(reply.job_id)).status == "cancelled"
