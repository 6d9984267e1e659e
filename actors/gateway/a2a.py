"""Rig's agents over A2A (protocol 1.0, JSON-RPC binding): the gateway's `/a2a/{agent}`.

Each registered agent has an Agent Card at `/a2a/{agent}/.well-known/agent-card.json`
(`GET /a2a` lists them); its JSON-RPC endpoint is `/a2a/{agent}`. A task is a Rig job:

- `SendMessage` submits a job of the agent (the message's data part is its input, or
  its text, for an agent that takes one string) and waits for it to end or ask for
  input (`returnImmediately`: answers at once); the same `messageId` again is the same
  job (its id is the message id's, hashed).
- `SendStreamingMessage` and `SubscribeToTask` send the task, then a status update per
  journal event (SSE, each event's `id` its place in the journal: `Last-Event-ID`
  resumes on any gateway).
- `TASK_STATE_INPUT_REQUIRED` is a job waiting for a person, or for a signal; a message
  with its `taskId` continues it: the signal's data, or a person's edge (a data part
  `{"edge": ..., "args": ...}`, or the edge's name as text).
- `GetTask` and `CancelTask` are `rig status` and `rig cancel`; the task's artifacts are
  the job's result (`output`, what the model answered, and `results`, the tools'); its
  `contextId` is kept with the job (its `a2a.context` label) and names its thread: the
  tasks of a context are turns of one conversation (one at a time, each with the ones
  before it in its context).

Push notifications (a gateway with `RIG_WEBHOOK_SECRET`): a task's push configs are kept
in `RIG_PUSH`; each status the job's webhooks would tell of (its end, a wait for a
person or a signal) is POSTed to each config's url by the webhook machinery (at least
once, retried, recorded, signed per Standard Webhooks, with the config's token in
`X-A2A-Notification-Token` and its `authentication` as `Authorization`).

Every method answers with A2A's typed JSON-RPC errors (`TaskNotFound` -32001 and so on);
what it does not do says so (`UnsupportedOperation`, `ExtendedAgentCardNotConfigured`).
Behind the same API keys as the rest of the gateway (the cards are public, and say so).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from nats.js.kv import KeyValue
from pydantic import BaseModel, ValidationError

from actors.gateway.mcp import said as in_words
from actors.gateway.webhooks import WebhookSender, refused
from actors.runtime.client import SETTLED_STATUSES, RigClient
from actors.runtime.nats import kv_latest
from protocols import (
    PUSH_LABEL,
    TERMINAL_STATUSES,
    AgentInfo,
    BusyError,
    Event,
    InvalidNameError,
    JobConflictError,
    JobInfo,
    JobStateError,
    RetryableError,
    RigConnectionError,
    RigError,
    SchemaError,
    UnavailableError,
    UnknownAgentError,
    UnknownJobError,
    WebhookDelivery,
    WebhookTarget,
    check_token,
    decode_as,
    encode,
    explain,
)

PROTOCOL = "1.0"
CARD = "/.well-known/agent-card.json"
VERSION_HEADER = "A2A-Version"
# How long a blocking SendMessage waits for its task to end or ask for input, and how
# long one stream lasts (then it ends; its client resumes with Last-Event-ID).
CALL_WAIT_S = 60.0
STREAM_S = 300.0
# How long a gateway trusts its copy of the agents' registry (a new agent is read at once).
AGENTS_S = 5.0
# The job's labels that hold what A2A names and Rig does not.
CONTEXT, MESSAGE = "a2a.context", "a2a.message"

# JSON-RPC's errors, and A2A's (the specification's section on error codes).
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
INTERNAL_ERROR = -32603
TASK_NOT_FOUND, TASK_NOT_CANCELABLE, PUSH_NOT_SUPPORTED = -32001, -32002, -32003
UNSUPPORTED, CONTENT_TYPE, NO_EXTENDED_CARD, VERSION_NOT_SUPPORTED = -32004, -32005, -32007, -32009

STATES = {
    "accepted": "TASK_STATE_SUBMITTED",
    "running": "TASK_STATE_WORKING",
    "waiting_human": "TASK_STATE_INPUT_REQUIRED",
    "succeeded": "TASK_STATE_COMPLETED",
    "cancelled": "TASK_STATE_CANCELED",
}
FINAL = {"TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"}


class A2aError(Exception):
    """A JSON-RPC error to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


Handler = Callable[[web.Request, AgentInfo, Any, dict[str, Any]], Awaitable[web.StreamResponse]]


class PushConfig(BaseModel):
    """A task's push notification config, as `RIG_PUSH` keeps it (`<task>.<id>`)."""

    id: str
    task_id: str
    context_id: str
    url: str
    token: str = ""
    scheme: str = ""
    credentials: str = ""

    def wire(self) -> dict[str, Any]:
        found: dict[str, Any] = {"taskId": self.task_id, "id": self.id, "url": self.url}
        if self.token:
            found["token"] = self.token
        if self.scheme:  # its credentials are not read back: they were the client's to keep
            found["authentication"] = {"scheme": self.scheme}
        return found


class A2aEndpoint:
    """`/a2a` of one gateway: the cards, and each agent's JSON-RPC endpoint. `sender`:
    the gateway's webhook sender, when it can sign (push notifications need one)."""

    def __init__(
        self,
        rig: RigClient,
        version: str,
        job_id: Callable[[str], str],
        *,
        sender: WebhookSender | None = None,
    ) -> None:
        self.rig = rig
        self.version = version
        self.job_id = job_id  # an idempotency key's job id (the gateway's rule)
        self.sender = sender
        self._pushes: KeyValue | None = None
        self._agents: tuple[float, dict[str, AgentInfo]] = (0.0, {})

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/a2a", self.listing)
        app.router.add_get("/a2a/{agent}" + CARD, self.card)
        app.router.add_post("/a2a/{agent}", self.handle)

    # --- cards -------------------------------------------------------------------------

    async def listing(self, request: web.Request) -> web.Response:
        base = _base(request)
        agents = [
            {"name": info.name, "card": f"{base}/a2a/{info.name}{CARD}"}
            for info in await self.rig.agents()
        ]
        return web.json_response({"agents": agents})

    async def card(self, request: web.Request) -> web.Response:
        info = await self._agent(request.match_info["agent"])
        if info is None:
            return web.json_response({"error": "no such agent"}, status=404)
        card = agent_card(info, _base(request), self.version, push=self.sender is not None)
        return web.json_response(card)

    # --- JSON-RPC ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            message = json.loads(await request.read())
        except ValueError:
            return _error(None, PARSE_ERROR, "the body is not JSON")
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return _error(None, INVALID_REQUEST, "one JSON-RPC 2.0 request object per POST")
        ident = message.get("id")
        method, params = message.get("method"), message.get("params", {})
        if not isinstance(method, str) or not isinstance(ident, str | int | None):
            return _error(ident, INVALID_REQUEST, "a request has a method (a string) and an id")
        if not isinstance(params, dict):
            return _error(ident, INVALID_PARAMS, "params must be an object")
        asked = request.headers.get(VERSION_HEADER, PROTOCOL)
        if asked.split(".")[:2] != PROTOCOL.split("."):
            return _error(
                ident, VERSION_NOT_SUPPORTED, f"A2A-Version {asked} is not served: only {PROTOCOL}"
            )
        handlers: dict[str, Handler] = {
            "SendMessage": self.send,
            "SendStreamingMessage": self.send_streaming,
            "GetTask": self.get_task,
            "CancelTask": self.cancel_task,
            "SubscribeToTask": self.subscribe,
            "ListTasks": self.unsupported,
            "GetExtendedAgentCard": self.no_extended_card,
            "CreateTaskPushNotificationConfig": self.create_push,
            "GetTaskPushNotificationConfig": self.get_push,
            "ListTaskPushNotificationConfigs": self.list_push,
            "DeleteTaskPushNotificationConfig": self.delete_push,
        }
        handler = handlers.get(method)
        if handler is None:
            return _error(ident, METHOD_NOT_FOUND, f"no method {method!r} (A2A {PROTOCOL})")
        try:
            info = await self._agent(request.match_info["agent"])
            if info is None:
                raise A2aError(INVALID_PARAMS, f"no agent {request.match_info['agent']!r} here")
            return await handler(request, info, ident, params)
        except A2aError as exc:
            return _error(ident, exc.code, exc.message)
        except UnknownJobError as exc:
            return _error(ident, TASK_NOT_FOUND, exc.message)
        except (UnavailableError, BusyError, RigConnectionError) as exc:  # ask again later
            return _error(ident, INTERNAL_ERROR, exc.message)
        except RigError as exc:
            return _error(ident, INVALID_PARAMS, exc.message)

    async def send(
        self, request: web.Request, info: AgentInfo, ident: Any, params: dict[str, Any]
    ) -> web.Response:
        job, context = await self._start(info, params)
        if isinstance(job, dict):  # refused before it became a job
            return _result(ident, {"task": job})
        if not _config(params).get("returnImmediately"):
            job = await self._settled(job.job_id)
        return _result(ident, {"task": task(job, context)})

    async def send_streaming(
        self, request: web.Request, info: AgentInfo, ident: Any, params: dict[str, Any]
    ) -> web.StreamResponse:
        job, context = await self._start(info, params)
        if isinstance(job, dict):
            return _result(ident, {"task": job})
        return await self._stream(request, ident, job, context, after=_last_event_id(request))

    async def get_task(
        self, request: web.Request, info: AgentInfo, ident: Any, params: dict[str, Any]
    ) -> web.Response:
        job = await self._task(info, params.get("id"))
        return _result(ident, task(job, _context(job)))

    async def cancel_task(
        self, request: web.Request, info: AgentInfo, ident: Any, params: dict[str, Any]
    ) -> web.Response:
        job = await self._task(info, params.get("id"))
        if job.status in TERMINAL_STATUSES:
            raise A2aError(TASK_NOT_CANCELABLE, f"task {job.job_id} already ended: {job.status}")
        try:
            job = await self.rig.cancel(job.job_id, reason="canceled by an A2A client")
        except JobStateError as exc:  # it ended meanwhile
            raise A2aError(TASK_NOT_CANCELABLE, exc.message) from None
        return _result(ident, task(job, _context(job)))

    async def subscribe(
        self, request: web.Request, info: AgentInfo, ident: Any, params: dict[str, Any]
    ) -> web.StreamResponse:
        job = await self._task(info, params.get("id"))
        after = _last_event_id(request)
        if job.status in TERMINAL_STATUSES and after is None:
            raise A2aError(UNSUPPORTED, f"task {job.job_id} already ended: {job.status}")
        return await self._stream(request, ident, job, _context(job), after=after)

    async def unsupported(
        self, request: web.Request, info: AgentInfo, ident: Any, params: dict[str, Any]
    ) -> web.Response:
        raise A2aError(UNSUPPORTED, "ListTasks is not served: follow a task by its id")

    async def no_extended_card(
        self, request: web.Request, info: AgentInfo, ident: Any, params: dict[str, Any]
    ) -> web.Response:
        raise A2aError(NO_EXTENDED_CARD, "the card is the same for every caller")

    async def create_push(
        self, request: web.Request, info: AgentInfo, ident: Any, params: dict[str, Any]
    ) -> web.Response:
        job = await self._task(info, params.get("taskId"))
        config = self._task_push(job, params)
        await self._keep(config)
        return _result(ident, config.wire())

    async def get_push(
        self, request: web.Request, info: AgentInfo, ident: Any, params: dict[str, Any]
    ) -> web.Response:
        job = await self._task(info, params.get("taskId"))
        name = params.get("id")
        found = [c for c in await self._configs(job.job_id) if c.id == name]
        if not found:
            raise A2aError(TASK_NOT_FOUND, f"task {job.job_id} has no push config {name!r}")
        return _result(ident, found[0].wire())

    async def list_push(
        self, request: web.Request, info: AgentInfo, ident: Any, params: dict[str, Any]
    ) -> web.Response:
        job = await self._task(info, params.get("taskId"))
        configs = [config.wire() for config in await self._configs(job.job_id)]
        return _result(ident, {"configs": configs})

    async def delete_push(
        self, request: web.Request, info: AgentInfo, ident: Any, params: dict[str, Any]
    ) -> web.Response:
        job = await self._task(info, params.get("taskId"))
        name = params.get("id")
        if not any(c.id == name for c in await self._configs(job.job_id)):
            raise A2aError(TASK_NOT_FOUND, f"task {job.job_id} has no push config {name!r}")
        await (await self._push_bucket()).delete(f"{job.job_id}.{name}")
        return _result(ident, {})

    # --- push notifications ------------------------------------------------------------

    async def _push_bucket(self) -> KeyValue:
        if self._pushes is None:
            self._pushes = await self.rig.js.key_value(self.rig.names.push_bucket)
        return self._pushes

    async def _configs(self, task_id: str) -> list[PushConfig]:
        found = []
        bucket = self.rig.names.push_bucket
        async for _key, value in kv_latest(self.rig.js, bucket, f"{task_id}.*"):
            with contextlib.suppress(RigError):
                found.append(decode_as(PushConfig, value)[0])
        return found

    def _task_push(self, job: JobInfo, params: dict[str, Any]) -> PushConfig:
        """A push config for a task that exists, checked (not yet kept)."""
        if PUSH_LABEL not in (job.labels or {}):
            raise A2aError(
                PUSH_NOT_SUPPORTED,
                f"task {job.job_id} was not started over A2A by a gateway that pushes",
            )
        return self._push_config(job.job_id, _context(job), params)

    def _push_config(self, task_id: str, context: str, params: dict[str, Any]) -> PushConfig:
        """A push config for the task, checked (not yet kept)."""
        if self.sender is None:
            raise A2aError(
                PUSH_NOT_SUPPORTED,
                "this gateway cannot sign push notifications (no webhook secret)",
            )
        url = params.get("url")
        try:
            WebhookTarget(url=url)  # http(s), a host, no user or password
        except ValidationError as exc:
            raise A2aError(INVALID_PARAMS, f"the push url: {explain(exc)}") from None
        host = (urlsplit(str(url)).hostname or "").strip("[]")
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)  # an address given as such is checked now
            why = refused(host, self.sender.settings.allow)
            if why is not None:
                raise A2aError(INVALID_PARAMS, f"the push url's destination: {why}")
        name = params.get("id") or uuid.uuid4().hex[:12]
        auth = params.get("authentication") or {}
        token = params.get("token") or ""
        if not isinstance(name, str) or not isinstance(token, str) or not isinstance(auth, dict):
            raise A2aError(INVALID_PARAMS, "id and token are strings, authentication an object")
        try:
            check_token(name, what="push config id")
        except RigError as exc:
            raise A2aError(INVALID_PARAMS, exc.message) from None
        return PushConfig(
            id=name,
            task_id=task_id,
            context_id=context,
            url=str(url),
            token=token[:1024],
            scheme=str(auth.get("scheme") or "")[:64],
            credentials=str(auth.get("credentials") or "")[:4096],
        )

    async def _keep(self, config: PushConfig) -> None:
        """Keep a push config (one of its id again replaces it)."""
        await (await self._push_bucket()).put(f"{config.task_id}.{config.id}", encode(config))

    async def push(self, delivery: WebhookDelivery, attempt: int) -> None:
        """POST a job's status to each of its task's push configs (a config that took it
        on an earlier attempt is skipped); raise as the webhook machinery does, once each
        was tried."""
        assert self.sender is not None
        failed: RigError | None = None
        for config in await self._configs(delivery.job_id):
            webhook_id = f"{delivery.webhook_id}.{config.id}"
            if attempt > 1 and await self.sender.delivered(webhook_id):
                continue
            body, state = push_body(delivery.event, config)
            headers = {"X-A2A-Notification-Token": config.token} if config.token else {}
            if config.scheme and config.credentials:
                headers["Authorization"] = f"{config.scheme} {config.credentials}"
            try:
                await self.sender.post(
                    config.url,
                    json.dumps(body, separators=(",", ":")).encode(),
                    webhook_id=webhook_id,
                    job_id=delivery.job_id,
                    type_=f"a2a.{state}",
                    attempt=attempt,
                    headers=headers,
                )
            except RigError as exc:  # recorded; the others are tried all the same
                failed = failed if isinstance(failed, RetryableError) else exc
        if failed is not None:
            raise failed

    # --- what the methods share --------------------------------------------------------

    async def _agent(self, name: str) -> AgentInfo | None:
        """The agent `name` as registered (the registry read at most every `AGENTS_S`)."""
        try:
            check_token(name, what="agent name")
        except RigError:
            return None
        read_at, agents = self._agents
        if name not in agents or time.monotonic() - read_at > AGENTS_S:
            agents = {info.name: info for info in await self.rig.agents()}
            self._agents = (time.monotonic(), agents)
        return agents.get(name)

    async def _task(self, info: AgentInfo, task_id: Any) -> JobInfo:
        if not isinstance(task_id, str) or not task_id:
            raise A2aError(INVALID_PARAMS, "params.id names the task")
        try:
            check_token(task_id, what="task id")
            job = await self.rig.status(task_id)
        except (UnknownJobError, InvalidNameError):  # an outage is not "no such task"
            raise A2aError(TASK_NOT_FOUND, f"no task {task_id!r}") from None
        if job.agent != info.name:
            raise A2aError(TASK_NOT_FOUND, f"no task {task_id!r} of agent {info.name!r}")
        return job

    async def _start(
        self, info: AgentInfo, params: dict[str, Any]
    ) -> tuple[JobInfo | dict[str, Any], str]:
        """The job a message starts or continues (or, for an input that does not fit the
        agent, the rejected task), and its context."""
        message = params.get("message")
        if not isinstance(message, dict):
            raise A2aError(INVALID_PARAMS, "params.message is the message to send")
        message_id = message.get("messageId")
        if not isinstance(message_id, str) or not 0 < len(message_id) <= 255:
            raise A2aError(INVALID_PARAMS, "message.messageId is 1 to 255 characters")
        parts = message.get("parts")
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
            raise A2aError(INVALID_PARAMS, "message.parts is a list of one or more parts")
        pushes = _config(params).get("taskPushNotificationConfig")  # kept before it runs,
        # so that it gets every status the job has from its start
        if message.get("taskId"):
            job = await self._task(info, message["taskId"])
            if isinstance(pushes, dict):
                await self._keep(self._task_push(job, pushes))
            job = await self._continue(job, message_id, parts)
            return job, _context(job)
        # A message without a context starts one, named after it: the same message sent
        # again is the same job in the same context.
        context = message.get("contextId") or "ctx-" + _id(message_id)[4:]
        if not isinstance(context, str) or len(context) > 256:
            raise A2aError(INVALID_PARAMS, "message.contextId is a string of up to 256")
        job_id = self.job_id(f"a2a:{info.name}:{message_id}")
        labels = {CONTEXT: context, MESSAGE: message_id}
        if self.sender is not None:
            labels[PUSH_LABEL] = "a2a"  # its push configs get its statuses
        push = self._push_config(job_id, context, pushes) if isinstance(pushes, dict) else None
        if push is not None:
            await self._keep(push)
        try:
            value = job_input(info, parts)
            reply = await self.rig.submit(
                info.name, value, job_id=job_id, labels=labels, thread=thread_of(context)
            )
        except SchemaError as exc:
            if push is not None:  # no task: nothing to push
                await (await self._push_bucket()).delete(f"{job_id}.{push.id}")
            return rejected(job_id, context, exc.message), context
        except JobConflictError:
            raise A2aError(
                INVALID_PARAMS,
                f"message {message_id!r} was sent before with other content: a new message "
                "needs a new messageId",
            ) from None
        except UnknownAgentError as exc:
            raise A2aError(INVALID_PARAMS, exc.message) from None
        return await self.rig.status(reply.job_id), context

    async def _continue(
        self, job: JobInfo, message_id: str, parts: list[dict[str, Any]]
    ) -> JobInfo:
        """A follow-up message: a signal's data for a job waiting for one, a person's
        edge for a job waiting for a person."""
        if _id(message_id) in job.handled:
            return job  # this message continued it already: asked again, it is answered
        data = _data(parts)
        text = _text(parts)
        if job.waiting_signal is not None:
            value = data if data is not None else {"text": text}
            return await self.rig.signal(
                job.job_id, job.waiting_signal, value, by="a2a", signal_id=_id(message_id)
            )
        if job.status == "waiting_human" and job.waiting is not None:
            edges = job.waiting.edges
            if data is not None and isinstance(data.get("edge"), str):
                edge, args = data["edge"], data.get("args") or {}
                note = str(data.get("note", ""))
            elif text.strip() in edges:
                edge, args, note = text.strip(), {}, ""
            else:
                raise A2aError(
                    INVALID_PARAMS,
                    f"task {job.job_id} waits for a person to pick one of {', '.join(edges)}: "
                    'send its name as text, or a data part {"edge": ..., "args": {...}}',
                )
            return await self.rig.resolve(
                job.job_id, edge, args=args, note=note, by="a2a", resolve_id=_id(message_id)
            )
        state = STATES.get(job.status, "TASK_STATE_FAILED")
        raise A2aError(
            UNSUPPORTED,
            f"task {job.job_id} is {state}: it takes a message only when it asks for input",
        )

    async def _settled(self, job_id: str) -> JobInfo:
        info = await self.rig.status(job_id)
        if info.status in SETTLED_STATUSES or info.waiting_signal is not None:
            return info
        try:
            async for event in self.rig.events(job_id, timeout=CALL_WAIT_S, until_parked=True):
                if event.type == "signal" and event.data.get("waiting"):
                    break
        except TimeoutError:
            pass  # the task as it stands: its client follows it up
        return await self.rig.status(job_id)

    async def _stream(
        self,
        request: web.Request,
        ident: Any,
        job: JobInfo,
        context: str,
        *,
        after: int | None,
    ) -> web.StreamResponse:
        """The task, then a status update per journal event after `after` (each SSE
        event's id its seq), until the task ends or asks for input."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        if after is None:
            journal = await self.rig.journal(job.job_id)
            after = journal[-1].seq if journal else 0
            job = await self.rig.status(job.job_id)
            await response.write(_sse(ident, {"task": task(job, context)}, seq=after))
            if _ends(job):
                await response.write_eof()
                return response
        else:  # a client resuming: nothing more to say if the task said its last already
            journal = await self.rig.journal(job.job_id)
            if (not journal or journal[-1].seq <= after) and _ends(
                await self.rig.status(job.job_id)
            ):
                await response.write_eof()
                return response
        with contextlib.suppress(TimeoutError):  # a long quiet: the client resumes by id
            async for event in _events_after(self.rig, job.job_id, after):
                for update in updates(event, job.job_id, context):
                    await response.write(_sse(ident, update, seq=event.seq))
                if _final(event):
                    break
        await response.write_eof()
        return response


async def _events_after(rig: RigClient, job_id: str, after: int) -> AsyncIterator[Event]:
    """The job's journal after event `after`, for at most `STREAM_S`."""
    async for event in rig.events(job_id, timeout=STREAM_S):
        if event.seq > after:
            yield event


# --- the wire: A2A 1.0's JSON (protobuf's JSON mapping: camelCase, enums by name) ------


def agent_card(info: AgentInfo, base: str, version: str, *, push: bool) -> dict[str, Any]:
    """The Agent Card of one agent: its endpoint, a skill from its graph, its input schema
    (an extension), and the gateway's bearer keys as its security scheme."""
    states = list(info.graph.states)
    description = info.description or f"Runs a job of the Rig agent {info.name}."
    skill = {
        "id": info.name,
        "name": info.name,
        "description": f"{description} (states: {', '.join(states)})",
        "tags": ["rig", *states],
        "examples": [json.dumps(info.example_input)] if info.example_input else [],
        "inputModes": ["application/json", "text/plain"],
        "outputModes": ["application/json"],
    }
    extensions = []
    if info.input_schema is not None:
        extensions.append(
            {
                "uri": "https://rig.dev/a2a/input-schema/v1",
                "description": "the JSON schema of the agent's input (a message's data part)",
                "required": False,
                "params": {"inputSchema": info.input_schema},
            }
        )
    return {
        "name": info.name,
        "description": description,
        "version": f"{version}+{info.graph.version}",
        "supportedInterfaces": [
            {
                "url": f"{base}/a2a/{info.name}",
                "protocolBinding": "JSONRPC",
                "protocolVersion": PROTOCOL,
            }
        ],
        "provider": {"organization": "Rig", "url": base},
        "capabilities": {"streaming": True, "pushNotifications": push, "extensions": extensions},
        "securitySchemes": {
            "rig": {
                "httpAuthSecurityScheme": {
                    "scheme": "Bearer",
                    "description": "a Rig gateway API key (rig keys add NAME)",
                }
            }
        },
        "securityRequirements": [{"schemes": {"rig": {"list": []}}}],
        "defaultInputModes": ["application/json", "text/plain"],
        "defaultOutputModes": ["application/json"],
        "skills": [skill],
    }


def task(job: JobInfo, context: str) -> dict[str, Any]:
    """A job as an A2A task: its status, and its result as artifacts once it succeeded."""
    found: dict[str, Any] = {"id": job.job_id, "contextId": context, "status": status(job, context)}
    result = job.result or {}
    if job.status == "succeeded":
        found["artifacts"] = artifacts(result)
    return found


def status(job: JobInfo, context: str) -> dict[str, Any]:
    state = STATES.get(job.status, "TASK_STATE_FAILED")
    if job.status == "running" and job.waiting_signal is not None:
        state = "TASK_STATE_INPUT_REQUIRED"
    found: dict[str, Any] = {"state": state, "timestamp": _when(job.updated_at)}
    said = ""
    if job.waiting_signal is not None:
        said = f"send the data of signal {job.waiting_signal!r} as a message with this taskId"
    elif job.status == "waiting_human" and job.waiting is not None:
        said = (
            f"{job.waiting.reason}; a person picks one of {', '.join(job.waiting.edges)} "
            "(a message with this taskId)"
        )
    elif state == "TASK_STATE_FAILED" or job.status == "cancelled":
        said = f"{job.status}: {(job.error or {}).get('message', '')}".rstrip(": ")
    if said:
        found["message"] = _agent_message(job.job_id, context, said, f"{job.updated_at}")
    return found


def artifacts(result: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    output = result.get("output")
    if output is not None:
        parts: list[dict[str, Any]] = [{"data": output, "mediaType": "application/json"}]
        if isinstance(output, dict) and isinstance(output.get("text"), str):
            parts.append({"text": output["text"]})
        found.append({"artifactId": "output", "name": "output", "parts": parts})
    if result.get("results"):
        results = [{"data": result["results"], "mediaType": "application/json"}]
        found.append({"artifactId": "results", "name": "results", "parts": results})
    return found


def updates(event: Event, job_id: str, context: str) -> list[dict[str, Any]]:
    """The stream responses one journal event makes: a status update (progress, as
    `working` with a few words; input-required; the final status, after the result's
    artifacts)."""
    data, base = event.data, {"taskId": job_id, "contextId": context}
    state, said = "TASK_STATE_WORKING", in_words(event)
    found: list[dict[str, Any]] = []
    if event.type == "status":
        job_status = str(data.get("status"))
        state = STATES.get(job_status, "TASK_STATE_FAILED")
        if job_status == "succeeded":
            found += [
                {"artifactUpdate": base | {"artifact": artifact, "lastChunk": True}}
                for artifact in artifacts(data.get("result") or {})
            ]
        if job_status == "waiting_human":
            said = str(data.get("reason") or said)
    elif event.type == "signal" and data.get("waiting"):
        state = "TASK_STATE_INPUT_REQUIRED"
        said = f"send the data of signal {data.get('name')!r} as a message with this taskId"
    status_ = {
        "state": state,
        "timestamp": _when(event.ts),
        "message": _agent_message(job_id, context, said, f"{event.seq}"),
    }
    found.append({"statusUpdate": base | {"status": status_}})
    return found


def push_body(event: Event, config: PushConfig) -> tuple[dict[str, Any], str]:
    """What a push notification says of a journal event, and the state it names: the task
    with its artifacts when it ended, else its status update."""
    *_, update = updates(event, config.task_id, config.context_id)
    status_ = update["statusUpdate"]["status"]
    if status_["state"] in FINAL:
        found = {"id": config.task_id, "contextId": config.context_id, "status": status_}
        if event.data.get("status") == "succeeded":
            found["artifacts"] = artifacts(event.data.get("result") or {})
        return {"task": found}, status_["state"]
    return update, status_["state"]


def rejected(job_id: str, context: str, why: str) -> dict[str, Any]:
    """The task an input that does not fit its agent would have been (it is not kept)."""
    state = {
        "state": "TASK_STATE_REJECTED",
        "timestamp": _when(datetime.now(UTC).timestamp()),
        "message": _agent_message(job_id, context, why, "rejected"),
    }
    return {"id": job_id, "contextId": context, "status": state}


def job_input(info: AgentInfo, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """A message's parts as the agent's input: its data part (an object), or its text,
    for an agent whose input is one string (or a JSON object written as text)."""
    data = _data(parts)
    if data is not None:
        return data
    text = _text(parts)
    if not text and any("raw" in p or "url" in p for p in parts):
        raise A2aError(CONTENT_TYPE, "files are not taken: send a data part or text")
    schema = info.input_schema or {}
    strings = [
        name
        for name, spec in (schema.get("properties") or {}).items()
        if isinstance(spec, dict) and spec.get("type") == "string"
    ]
    required = schema.get("required") or []
    if len(strings) == 1 and set(required) <= set(strings):
        return {strings[0]: text}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    raise SchemaError(
        f"agent {info.name!r} takes a JSON object ({json.dumps(schema)[:300]}): send it "
        "as a data part, or as JSON text"
    )


def thread_of(context: str) -> str:
    """The Rig thread of an A2A context: its tasks are turns of one conversation, run one
    at a time, each with the ones before it in its context."""
    return "a2a-" + uuid.uuid5(uuid.NAMESPACE_URL, f"a2a-context:{context}").hex


def _data(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((p["data"] for p in parts if isinstance(p.get("data"), dict)), None)


def _text(parts: list[dict[str, Any]]) -> str:
    return "\n".join(p["text"] for p in parts if isinstance(p.get("text"), str))


def _agent_message(job_id: str, context: str, text: str, tag: str) -> dict[str, Any]:
    return {
        "messageId": f"{job_id}-{tag}",
        "contextId": context,
        "taskId": job_id,
        "role": "ROLE_AGENT",
        "parts": [{"text": text}],
    }


def _context(job: JobInfo) -> str:
    return (job.labels or {}).get(CONTEXT) or job.job_id


def _config(params: dict[str, Any]) -> dict[str, Any]:
    config = params.get("configuration") or {}
    return config if isinstance(config, dict) else {}


def _ends(job: JobInfo) -> bool:
    return job.status in SETTLED_STATUSES or job.waiting_signal is not None


def _final(event: Event) -> bool:
    """Whether the task's stream ends after `event`: it ended, or asks for input."""
    if event.type == "status":
        return event.data.get("status") in TERMINAL_STATUSES | {"waiting_human"}
    return event.type == "signal" and bool(event.data.get("waiting"))


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _id(message_id: str) -> str:
    """A signal's or resolve's id from a message id (within their length and alphabet)."""
    return "a2a-" + uuid.uuid5(uuid.NAMESPACE_URL, message_id).hex


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        return None
    try:
        return max(int(raw), 0)
    except ValueError:
        raise A2aError(INVALID_PARAMS, "Last-Event-ID is the id of an event received") from None


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _result(ident: Any, result: dict[str, Any]) -> web.Response:
    return web.json_response({"jsonrpc": "2.0", "id": ident, "result": result})


def _error(ident: Any, code: int, message: str) -> web.Response:
    return web.json_response(
        {"jsonrpc": "2.0", "id": ident, "error": {"code": code, "message": message}}
    )


def _sse(ident: Any, result: dict[str, Any], *, seq: int) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": ident, "result": result})
    return f"id: {seq}\nevent: message\ndata: {body}\n\n".encode()
