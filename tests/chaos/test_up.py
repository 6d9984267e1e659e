"""`rig up` as a user runs it: its own nats-server, ready only when every actor is, and a
server killed under it restarted on the same port and store."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest

from actors.examples.refund import RefundAgent
from actors.runtime.discovery import discover
from actors.testing import eventually
from protocols import Names
from protocols._permissions import inbox_prefix
from tests.conftest import ROOT
from tests.integration.test_cli import RIG, run_rig

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

EXAMPLE = json.dumps(RefundAgent.example_input)


class Up:
    """A `rig up --json` process and the JSON lines it prints."""

    def __init__(self, proc: asyncio.subprocess.Process, env: dict[str, str]) -> None:
        self.proc, self.env = proc, env
        self.seen: list[dict[str, Any]] = []

    async def until(self, event: str, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                assert line, f"rig up exited before {event}: {self.seen}"
                if line.startswith(b"{"):
                    self.seen.append(json.loads(line))
                    if self.seen[-1].get("event") == event:
                        return self.seen[-1]

    async def rig(self, *args: str) -> tuple[int, str, str]:
        return await run_rig(self.env, *args)


async def start_up(tmp_path: Path, *flags: str) -> Up:
    env = {
        **{k: v for k, v in os.environ.items() if k != "RIG_NATS_URL"},
        "RIG_HOME": str(tmp_path / "home"),
        "RIG_PREFIX": "u" + uuid.uuid4().hex[:8],
        "RIG_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),  # where `rig up` writes its nats context
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "actors",
        "up",
        "--json",
        "--port",
        "0",
        "--monitor-port",
        "0",
        "--gateway-port",
        "0",
        *flags,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return Up(proc, env)


async def every_kind_answers_ping(up: Up, gateway: str) -> None:
    """Every process rig up started answers `rig ps`'s ask in its deployment, and its
    gateway serves with the API key rig up made (security on by default)."""
    # As the admin (the `rig up`'s own credentials): the client asks as `rig ps` below.
    admin = Path(up.env["RIG_HOME"]) / "creds" / "admin.nk"
    names = Names(up.env["RIG_PREFIX"])
    nc = await nats.connect(
        up.env["RIG_NATS_URL"],
        nkeys_seed=str(admin),
        inbox_prefix=inbox_prefix(names, "admin"),
    )
    try:
        kinds = [actor.kind for actor in await discover(nc, names)]
        assert sorted(kinds) == ["agent", "gateway", "supervisor", "tools", "verifier"]
    finally:
        await nc.close()
    code, out, _ = await up.rig("ps", "--json")
    listed = json.loads(out)
    assert code == 0 and sorted(actor["kind"] for actor in listed) == sorted(kinds)
    key = (Path(up.env["RIG_HOME"]) / "gateway.key").read_text().strip()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway}/v1/agents") as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {key}"}
        async with http.get(f"{gateway}/v1/agents", headers=headers) as response:
            assert [agent["live"] for agent in (await response.json())["agents"]] == [1]
        async with http.get(f"{gateway}/console/") as response:  # the page needs no key
            assert response.status == 200 and "Rig console" in await response.text()


# The keys of a nats CLI context file (NATS ADR-21, "Context content").
NATS_CONTEXT_KEYS = {
    "description",
    "url",
    "token",
    "user",
    "password",
    "creds",
    "nkey",
    "cert",
    "key",
    "ca",
    "nsc",
    "jetstream_domain",
    "jetstream_api_prefix",
    "jetstream_event_prefix",
    "inbox_prefix",
    "user_jwt",
    "tls_first",
    "windows_cert_store",
    "windows_cert_match_by",
    "windows_cert_match",
    "windows_ca_certs_match",
}


async def the_nats_context_connects_as_the_client(up: Up, tmp_path: Path, url: str) -> None:
    """`rig up` wrote a nats CLI context named as the deployment: only keys of the CLI's
    format, and connecting as it says (what `nats --context` does) a request to the API
    is answered."""
    prefix = up.env["RIG_PREFIX"]
    path = tmp_path / "xdg" / "nats" / "context" / f"{prefix}.json"
    context = json.loads(await asyncio.to_thread(path.read_text))
    assert set(context) <= NATS_CONTEXT_KEYS and context["url"] == url
    assert context["nkey"].endswith("/creds/client.nk")
    nc = await nats.connect(
        context["url"], nkeys_seed=context["nkey"], inbox_prefix=context["inbox_prefix"]
    )
    try:
        request = json.dumps({"job_id": "no-such-job"}).encode()
        reply = await nc.request(f"{prefix}.api.status", request, timeout=10)
    finally:
        await nc.close()
    assert b"unknown_job" in reply.data


async def test_up_is_ready_when_every_actor_is_and_restarts_a_killed_server(
    tmp_path: Path,
) -> None:
    up = await start_up(tmp_path)
    try:
        server = await up.until("server.started")
        ready = await up.until("up.ready")
        up.env["RIG_NATS_URL"] = server["url"]
        # Ready means usable at once: every actor has announced itself.
        started = [e for e in up.seen if e["event"] == "actor.started"]
        assert len(started) == ready["actors"] == 5  # the refund example and a gateway
        assert "announced themselves" in ready["message"]
        assert ready["console"] == ready["gateway"] + "/console/"  # the web console's URL
        await every_kind_answers_ping(up, ready["gateway"])
        code, out, _ = await up.rig("agents", "--json")
        assert code == 0 and json.loads(out)[0]["live"] == 1
        await the_nats_context_connects_as_the_client(up, tmp_path, server["url"])
        code, out, err = await up.rig("submit", "refund", "--input", EXAMPLE, "--wait", "--json")
        assert code == 0 and json.loads(out)["status"] == "succeeded", err
        big = json.dumps({"order_id": "A-1001", "amount": 650, "reason": "never arrived"})
        code, out, _ = await up.rig("submit", "refund", "--input", big, "--wait", "--json")
        assert code == 3 and json.loads(out)["status"] == "waiting_human"
        parked = json.loads(out)["job_id"]

        # `rig logs` finds every actor's lines about that job in the files rig up wrote.
        code, out, _ = await up.rig("logs", parked, "--json")
        lines = [json.loads(line) for line in out.splitlines()]
        assert code == 0 and lines and all(line["job_id"] == parked for line in lines)
        assert {line["file"] for line in lines} >= {"actors.Supervisor-0"}
        code, out, _ = await up.rig("logs", "no-such-job")
        assert code == 0 and out == ""

        os.kill(server["pid"], signal.SIGKILL)
        exited = await up.until("server.exited")
        assert exited["pid"] == server["pid"]
        restarted = await up.until("server.restarted")
        assert restarted["url"] == server["url"] and restarted["pid"] != server["pid"]

        code, out, err = await up.rig(
            "submit", "refund", "--input", EXAMPLE, "--wait", "--json", "--timeout", "60"
        )
        assert code == 0 and json.loads(out)["status"] == "succeeded", err
        code, out, _ = await up.rig("inbox", "--json")
        assert [job["job_id"] for job in json.loads(out)] == [parked]  # survived the kill
        code, out, _ = await up.rig("resolve", parked, "--edge", "approve", "--json")
        assert code == 0
        code, out, _ = await up.rig("watch", parked, "--json")
        assert code == 0 and json.loads(out.splitlines()[-1])["data"]["status"] == "succeeded"
    finally:
        if up.proc.returncode is None:
            up.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(up.proc.wait(), 60)
    assert code == 0


GREETER = (
    "examples.greeter:GreeterAgent",
    "examples.greeter:GreeterTools",
    "examples.greeter:GreeterChecks",
)


async def test_a_class_not_in_the_config_is_admitted_to_a_running_deployment(
    tmp_path: Path,
) -> None:
    """Under `rig up` (security on), an actor class its config does not list is refused
    at start with the command to run; `rig admit` gives it and the classes beside it
    their identities in the running server, without a restart; they then serve the
    greeter's job, and `rig up` keeps them for its next start. Its home (0700) and the
    ledger (0600) are readable by their owner alone."""
    up = await start_up(tmp_path)
    home = Path(up.env["RIG_HOME"])
    started: list[asyncio.subprocess.Process] = []
    try:
        server = await up.until("server.started")
        await up.until("up.ready")
        up.env["RIG_NATS_URL"] = server["url"]
        # What rig up keeps in its home (seeds, the ledger's results) is its user's alone.
        assert home.stat().st_mode & 0o777 == 0o700
        assert (home / "ledger.sqlite3").stat().st_mode & 0o777 == 0o600
        code, _, err = await up.rig("actor", "run", GREETER[0])
        assert code == 2, err
        assert "no NATS identity for role 'agent-greeter'" in err
        assert f"rig admit {GREETER[0]}" in err

        code, out, err = await up.rig("admit", *GREETER, "--json")
        assert code == 0, err
        assert json.loads(out)["roles"] == [
            "agent-greeter",
            "tools-greeter-tools",
            "verifier-greeter-checks",
        ]
        assert json.loads((home / "admitted.json").read_text()) == list(GREETER)
        with (home / "greeter.log").open("ab") as log:
            for target in GREETER:
                started.append(
                    await asyncio.create_subprocess_exec(
                        RIG, "actor", "run", target, env=up.env, cwd=ROOT, stdout=log, stderr=log
                    )
                )

        async def greeter_registered() -> bool:
            code, out, _ = await up.rig("agents", "--json")
            return code == 0 and any(a["name"] == "greeter" for a in json.loads(out))

        await eventually(greeter_registered, timeout=60)
        code, out, err = await up.rig(
            "submit", "greeter", "--input", '{"who": "Ada"}', "--wait", "--json", "--timeout", "60"
        )
        assert code == 0 and json.loads(out)["status"] == "succeeded", (out, err)
    finally:
        for proc in started:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
        if up.proc.returncode is None:
            up.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(up.proc.wait(), 60)
    assert code == 0


async def test_a_taken_monitoring_port_is_named(tmp_path: Path) -> None:
    """A second `rig up` whose monitoring port another process holds says which port,
    and what to pass instead, rather than "nats-server exited while starting"."""
    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        env = {**os.environ, "RIG_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
        env.pop("RIG_NATS_URL", None)
        code, out, err = await run_rig(
            env, "up", "--port", "0", "--monitor-port", str(port), "--no-gateway"
        )
    finally:
        holder.close()
    assert code == 2, (out, err)
    assert f"monitoring port {port} is taken" in err and "--monitor-port" in err
