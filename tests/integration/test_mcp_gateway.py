"""Rig's agents as MCP tools at the gateway's `/mcp`, driven by the official MCP Python
client (the `mcp` SDK) and by the MCP Inspector's command-line mode (npm)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from actors.testing import Deployment
from tests.integration.test_gateway import start_gateway
from tests.support.family import FAMILY
from tests.support.mcp_agents import NPM_BIN

pytestmark = pytest.mark.integration

QUESTION = {"question": "why is the sky blue"}


@contextlib.asynccontextmanager
async def client(base: str, key: str) -> AsyncIterator[Client]:
    """The official client, with the gateway's API key on each request."""
    headers = {"Authorization": f"Bearer {key}"}
    async with create_mcp_http_client(headers) as http:
        transport = streamable_http_client(f"{base}/mcp", http_client=http)
        async with Client(transport) as session:
            yield session


async def test_the_official_client_lists_the_agents_and_calls_one_with_progress(
    rig: Deployment, api_key: str
) -> None:
    await rig.spawn(*FAMILY)
    base, _ = await start_gateway(rig)
    progress: list[tuple[float, str | None]] = []

    async def noted(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, message))

    async with client(base, api_key) as mcp:
        tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
        assert {"asker", "researcher"} <= set(tools)
        assert tools["asker"].input_schema["required"] == ["question"]
        result = await mcp.call_tool("asker", QUESTION, progress_callback=noted)
        assert not result.is_error
        assert result.structured_content is not None
        found = result.structured_content
        assert found["status"] == "succeeded"
        assert found["output"] == {"text": "the researcher says researched: why is the sky blue"}
        assert json.loads(result.content[0].text) == found["output"]
        # A progress notification per event of the job's journal, in order.
        journal = await rig.client.journal(found["job_id"])
        assert [done for done, _ in progress] == list(range(1, len(journal) + 1))
        assert progress[-1][1] == "step 2: status succeeded"
        # Arguments that do not fit the agent's input: a result the model can correct.
        refused = await mcp.call_tool("asker", {"words": 3})
        assert refused.is_error and "input schema" in refused.content[0].text


async def test_a_call_asked_again_is_the_same_job_and_bad_requests_are_typed(
    rig: Deployment, api_key: str, http: aiohttp.ClientSession
) -> None:
    await rig.spawn(*FAMILY)
    base, _ = await start_gateway(rig)

    async def post(message: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with http.post(f"{base}/mcp", data=json.dumps(message), headers=headers) as r:
            return r.status, (await r.json() if r.content_type == "application/json" else None)

    status, init = await post(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-06-18"},
        }
    )
    assert status == 200 and init["result"]["protocolVersion"] == "2025-06-18"
    call = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "asker", "arguments": QUESTION},
    }
    session = {"Mcp-Session-Id": "s-1"}
    first = await post(call, session)
    again = await post(call, session)  # the same request of the same session: a retry
    other = await post(call, {"Mcp-Session-Id": "s-2"})
    ids = [answer[1]["result"]["structuredContent"]["job_id"] for answer in (first, again, other)]
    assert ids[0] == ids[1] != ids[2]
    keyed = [await post(call, {"Idempotency-Key": "k-1"}) for _ in range(2)]
    assert len({answer[1]["result"]["structuredContent"]["job_id"] for answer in keyed}) == 1

    assert (await post({"jsonrpc": "2.0", "method": "notifications/initialized"}))[0] == 202
    status, body = await post({"jsonrpc": "2.0", "id": 2, "method": "nope"})
    assert body["error"]["code"] == -32601
    status, body = await post(
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "ghost"}}
    )
    assert body["error"]["code"] == -32602 and "no tool 'ghost'" in body["error"]["message"]
    async with http.post(f"{base}/mcp", data=b"{nope") as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == -32700
    async with http.get(f"{base}/mcp") as r:
        assert r.status == 405
    async with aiohttp.ClientSession() as stranger:  # no API key
        async with stranger.post(f"{base}/mcp", data=json.dumps(call)) as r:
            assert r.status == 401


async def test_the_mcp_inspector_lists_and_calls_rig_s_agents(
    rig: Deployment, api_key: str
) -> None:
    await rig.spawn(*FAMILY)
    base, _ = await start_gateway(rig)

    async def inspector(*args: str) -> Any:
        proc = await asyncio.create_subprocess_exec(
            str(NPM_BIN / "mcp-inspector"),
            "--cli",
            f"{base}/mcp",
            "--transport",
            "http",
            "--header",
            f"Authorization: Bearer {api_key}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, (out, err)
        return json.loads(out)

    listed = await inspector("--method", "tools/list")
    assert {"asker", "researcher"} <= {tool["name"] for tool in listed["tools"]}
    called = await inspector(
        "--method", "tools/call", "--tool-name", "researcher", "--tool-arg", "question=tides?"
    )
    assert called["structuredContent"]["status"] == "succeeded", called
    assert called["structuredContent"]["output"] == {"text": "researched: tides?"}


async def test_calls_with_a_thread_in_their_meta_are_turns_of_one_conversation(
    rig: Deployment, api_key: str
) -> None:
    await rig.spawn("actors:Supervisor", "tests.support.chat:Chatter")
    base, _ = await start_gateway(rig)
    async with client(base, api_key) as mcp:
        said = []
        for text in ("my parcel came broken", "any news?"):
            result = await mcp.call_tool("chatter", {"text": text}, meta={"rig/thread": "mcp-1"})
            assert not result.is_error and result.structured_content is not None
            said.append(result.structured_content["output"]["seen"])
        alone = await mcp.call_tool("chatter", {"text": "hello"})  # no thread: no history
        assert alone.structured_content is not None
    assert said == [[], ["my parcel came broken"]]
    assert alone.structured_content["output"]["seen"] == []
    record = await rig.client.thread("mcp-1")
    assert [turn.input["text"] for turn in record.turns] == ["my parcel came broken", "any news?"]
