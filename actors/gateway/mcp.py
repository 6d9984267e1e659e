"""Rig's agents as MCP tools: the gateway's `/mcp`, over Streamable HTTP.

Each registered agent is a tool (its input schema from the agent's `input_model`, its
description the agent's); `tools/call` submits a job of it and answers with the job's
result once it ends, with a progress notification per journal event when the caller
sent a `progressToken` (the answer is then a Server-Sent Events stream). A job that
waits for a person, or is still running when the call's wait is over, is answered with
its id and resource (`/v1/jobs/{id}`) to follow up. A call repeated in the same session
with the same request id, or under the same `Idempotency-Key` header, is the same job.
A call whose `_meta` has `"rig/thread": T` is a turn of thread T (`rig submit --thread`):
it waits for the turn before it, and its context carries the thread's earlier turns.

What it speaks: JSON-RPC 2.0, one message per POST; `initialize` (protocol versions
2025-11-25, 2025-06-18 and 2025-03-26), `ping`, `tools/list`, `tools/call`;
notifications are accepted and need no answer; a GET (a stream the server would start)
is 405, as the transport allows. It keeps no session state: the `Mcp-Session-Id` it
gives names the session's calls, nothing more, so any replica answers any request.
Behind the same API keys as the rest of the gateway.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from actors.runtime.client import SETTLED_STATUSES, RigClient
from protocols import (
    TERMINAL_STATUSES,
    Event,
    JobInfo,
    RigError,
    SchemaError,
    UnknownAgentError,
    check_token,
)

PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
# How long a tools/call waits for its job before answering with the job to follow up.
CALL_WAIT_S = 60.0
SESSION = "Mcp-Session-Id"

# JSON-RPC's error codes.
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602


# The `_meta` key of a call that is a turn of a thread.
THREAD_META = "rig/thread"


class McpEndpoint:
    """`/mcp` of one gateway: `handle` is its aiohttp handler."""

    def __init__(self, rig: RigClient, version: str, job_id: Callable[[str], str]) -> None:
        self.rig = rig
        self.version = version
        self.job_id = job_id  # an idempotency key's job id (the gateway's rule)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "DELETE":  # the end of a session: there is nothing to drop
            return web.Response(status=200)
        if request.method != "POST":
            return web.Response(status=405, headers={"Allow": "POST, DELETE"})
        try:
            message = json.loads(await request.read())
        except ValueError:
            return _error(None, PARSE_ERROR, "the body is not JSON", status=400)
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return _error(None, INVALID_REQUEST, "one JSON-RPC 2.0 message per POST", status=400)
        if "method" not in message or "id" not in message:
            return web.Response(status=202)  # a notification, or an answer: nothing to say
        ident, method = message["id"], message["method"]
        params = message.get("params") or {}
        if not isinstance(params, dict):
            return _error(ident, INVALID_PARAMS, "params must be an object")
        handlers: dict[str, Callable[..., Awaitable[web.StreamResponse]]] = {
            "initialize": self.initialize,
            "ping": self.ping,
            "tools/list": self.tools_list,
            "tools/call": self.tools_call,
        }
        handler = handlers.get(str(method))
        if handler is None:
            return _error(ident, METHOD_NOT_FOUND, f"no method {method!r} here")
        try:
            return await handler(request, ident, params)
        except RigError as exc:
            return _error(ident, INVALID_PARAMS, exc.message, data=exc.to_dict())

    async def initialize(
        self, request: web.Request, ident: Any, params: dict[str, Any]
    ) -> web.Response:
        asked = params.get("protocolVersion")
        version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
        result = {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "rig", "version": self.version},
            "instructions": "Each tool is an agent of this Rig deployment: calling it runs a "
            "job of the agent on the arguments and answers with the job's result.",
        }
        return _result(ident, result, headers={SESSION: uuid.uuid4().hex})

    async def ping(self, request: web.Request, ident: Any, params: dict[str, Any]) -> web.Response:
        return _result(ident, {})

    async def tools_list(
        self, request: web.Request, ident: Any, params: dict[str, Any]
    ) -> web.Response:
        tools = [
            {
                "name": info.name,
                "description": info.description or f"Run a job of agent {info.name}.",
                "inputSchema": info.input_schema or {"type": "object"},
                "annotations": {"readOnlyHint": False, "openWorldHint": True},
            }
            for info in await self.rig.agents()
        ]
        return _result(ident, {"tools": tools})

    async def tools_call(
        self, request: web.Request, ident: Any, params: dict[str, Any]
    ) -> web.StreamResponse:
        name, arguments = params.get("name"), params.get("arguments") or {}
        if not isinstance(name, str) or not isinstance(arguments, dict):
            return _error(ident, INVALID_PARAMS, "tools/call takes a name and an arguments object")
        meta = params.get("_meta") or {}
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        key = request.headers.get("Idempotency-Key")
        session = request.headers.get(SESSION)
        if key is None and session is not None:
            key = f"mcp:{session}:{json.dumps(ident)}"  # this session's call, asked again
        thread = meta.get(THREAD_META) if isinstance(meta, dict) else None
        if thread is not None and not isinstance(thread, str):
            return _error(ident, INVALID_PARAMS, f"_meta {THREAD_META!r} is a thread's id")
        try:
            check_token(name, what="tool name")
            reply = await self.rig.submit(
                name,
                arguments,
                job_id=self.job_id(key) if key is not None else None,
                thread=thread,
            )
        except UnknownAgentError:
            return _error(ident, INVALID_PARAMS, f"no tool {name!r}: it is no agent here")
        except SchemaError as exc:  # the model's arguments: a result it can correct
            return _result(ident, _failed(exc.message))
        if token is None or "text/event-stream" not in request.headers.get("Accept", ""):
            info = await self._wait(reply.job_id)
            return _result(ident, _answer(info))
        return await self._stream(request, ident, reply.job_id, token)

    async def _wait(self, job_id: str) -> JobInfo:
        info = await self.rig.status(job_id)
        if info.status not in SETTLED_STATUSES:
            try:
                info = await self.rig.wait(job_id, timeout=CALL_WAIT_S)
            except TimeoutError:
                info = await self.rig.status(job_id)
        return info

    async def _stream(
        self, request: web.Request, ident: Any, job_id: str, token: Any
    ) -> web.StreamResponse:
        """The call's answer as an SSE stream: a progress notification per journal event
        of the job (until it ends, waits for a person, or the call's wait is over), then
        the result."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        count = 0
        try:
            async for event in self.rig.events(job_id, timeout=CALL_WAIT_S, until_parked=True):
                count += 1
                note = {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": token, "progress": count, "message": said(event)},
                }
                await response.write(_sse(note))
        except TimeoutError:
            pass  # answered below with the job to follow up
        info = await self.rig.status(job_id)
        await response.write(_sse({"jsonrpc": "2.0", "id": ident, "result": _answer(info)}))
        await response.write_eof()
        return response


def _answer(info: JobInfo) -> dict[str, Any]:
    """A `CallToolResult` for the job as it stands."""
    resource = f"/v1/jobs/{info.job_id}"
    if info.status not in TERMINAL_STATUSES:
        waiting = info.waiting.reason if info.waiting else ""
        text = (
            f"job {info.job_id} is {info.status}"
            + (f": {waiting}" if waiting else "")
            + f"; follow it at {resource}, or call again with the same request id"
        )
        pending = {"job_id": info.job_id, "status": info.status, "resource": resource}
        return {"content": [{"type": "text", "text": text}], "structuredContent": pending}
    result = info.result or {}
    output = result.get("output")
    structured: dict[str, Any] = {
        "job_id": info.job_id,
        "status": info.status,
        "state": info.state,
        "output": output,
        "result": result,
        "resource": resource,
    }
    if info.status == "succeeded":
        text = json.dumps(output if output is not None else result.get("results"))
        return {"content": [{"type": "text", "text": text}], "structuredContent": structured}
    why = (info.error or {}).get("message", info.status)
    failed = _failed(f"job {info.job_id} ended {info.status}: {why}")
    return failed | {"structuredContent": structured}


def _failed(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}


def said(event: Event) -> str:
    """A journal event in a few words, for a progress notification."""
    data = event.data
    what = data.get("edge") or data.get("tool") or data.get("status") or data.get("target") or ""
    return f"step {event.step}: {event.type}" + (f" {what}" if what else "")


def _result(
    ident: Any, result: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"jsonrpc": "2.0", "id": ident, "result": result}, headers=headers)


def _error(
    ident: Any, code: int, message: str, *, status: int = 200, data: Any = None
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return web.json_response({"jsonrpc": "2.0", "id": ident, "error": error}, status=status)


def _sse(message: dict[str, Any]) -> bytes:
    return f"event: message\ndata: {json.dumps(message)}\n\n".encode()
