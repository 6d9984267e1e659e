"""`rig gateway` (`actors:Gateway`): Rig over HTTP, on the journal Rig already keeps.

    POST /v1/jobs                  {agent, input, job_id?, limits?, webhook?, sampling?} -> 202
    GET  /v1/jobs/{id}             the job's status (as `rig status`)
    GET  /v1/jobs/{id}/wait        long poll until terminal or parked (?timeout=30)
    GET  /v1/jobs/{id}/events      Server-Sent Events: the journal from the start (or after
                                   `Last-Event-ID` / `?after=N`), live, ending after the
                                   terminal status; `?tokens=true` adds the model's tokens
    POST /v1/jobs/{id}/cancel      {reason?}
    POST /v1/jobs/{id}/resolve     {edge, args?, note?, by?, limits?}
    POST /v1/jobs/{id}/signals/{name}  {data?, by?}
    GET  /v1/jobs                  ?agent=&status=&parent=&limit=&cursor= (newest first, paged)
    GET  /v1/inbox                 ?agent=
    GET  /v1/threads/{id}          a thread: its running, waiting and ended turns
    GET  /v1/agents                registered agents and their live processes
    GET  /v1/agents/{name}         one agent: its graph as JSON and Mermaid
    GET  /v1/providers             model providers: breakers, calls by the live agents
    GET  /healthz, /readyz
    GET  /console/                 the web console (docs/guide/console.md); `/` leads there
    POST /mcp                      Rig's agents as MCP tools (Streamable HTTP: gateway/mcp.py)
    POST /a2a/{agent}              Rig's agents over A2A 1.0 (JSON-RPC; gateway/a2a.py), their
                                   cards at /a2a/{agent}/.well-known/agent-card.json

Every error is an RFC 9457 problem document (`application/problem+json`) whose `code` is
the error code the NATS API replies with. A POST with an `Idempotency-Key` header and no
`job_id` gets the job id the key names, so the same key and body are one job however
often they are sent, and another body under the key is `409 job_conflict`. A resolve
sent again under its `Idempotency-Key` is answered again, not applied again; one that
names the `step` of the wait it was shown is refused (`409 job_moved`) once the job has
left it.

An SSE event's `id` is its sequence in the events stream, so a client that lost its
connection resumes with `Last-Event-ID` on any replica, for as long as the stream keeps
the journal. A client that does not read is cut off after `WRITE_TIMEOUT_S` rather than
hold anything up; it resumes by id. The gateway holds no state: run as many as you like.

It binds `RIG_GATEWAY_HOST` (default 127.0.0.1) and `RIG_GATEWAY_PORT` (default 8080).
With a keys file (`RIG_GATEWAY_KEYS`, default `$RIG_HOME/gateway-keys`, see
`actors.gateway.keys`) every route but `/healthz`, `/readyz` and `/openapi.json` needs
`Authorization: Bearer <key>`, and a request without a valid one gets the same 401
whatever it asked. Without a keys file it binds loopback only. With
`RIG_WEBHOOK_SECRET` it also delivers the jobs' webhooks (`actors.gateway.webhooks`).
"""

# Long: one ROUTES table drives the app and its OpenAPI document; its handlers, the SSE
# stream and the webhook consumer share the app's state and are read together.

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import importlib.metadata
import ipaddress
import json
import math
import resource
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats.errors
import structlog
from aiohttp import web
from nats.js.api import ConsumerConfig, DeliverPolicy
from opentelemetry.trace import SpanKind
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from actors.deploy.health import stream_health
from actors.gateway.a2a import CARD, A2aEndpoint
from actors.gateway.keys import RELOAD_S, KeyRing, keys_path, load_keys
from actors.gateway.mcp import McpEndpoint
from actors.gateway.webhooks import WebhookSender, WebhookSettings, refused
from actors.runtime import tracing as tracing
from actors.runtime.actor import Actor, Delivery, Inbox
from actors.runtime.client import SETTLED_STATUSES, RigClient
from actors.runtime.credentials import makes_topology
from protocols import (
    TERMINAL_STATUSES,
    ConfigError,
    Event,
    Graph,
    Header,
    JobInfo,
    Names,
    PayloadTooLargeError,
    RigConnectionError,
    RigError,
    Sampling,
    SchemaError,
    ThreadRecord,
    UnknownAgentError,
    WebhookDelivery,
    _permissions as permissions,
    check_token,
    decode,
    decode_as,
    validate,
)
from protocols._http import (
    HttpAccepted,
    HttpAgent,
    HttpAgentDetail,
    HttpAgents,
    HttpCancel,
    HttpInbox,
    HttpJobs,
    HttpOk,
    HttpProblem,
    HttpProviders,
    HttpResolve,
    HttpSignal,
    HttpSubmit,
    limits_of,
)
from protocols._permissions import Role
from protocols._schedules import ScheduleReply, ScheduleSpec

MAX_BODY_BYTES = 1 << 20  # a request body past this is 413
WRITE_TIMEOUT_S = 10.0  # an SSE client whose buffer stays full this long is cut off
SSE_BUFFER_BYTES = 32 * 1024  # per SSE client, in the gateway and in the kernel each
KEEP_ALIVE_S = 15.0  # an SSE comment when nothing else was sent for this long
RETRY_MS = 2000  # what an SSE client waits before it reconnects
_TOKEN_TICK_S = 0.05  # how soon a token reaches an SSE client that asked for tokens
MAX_WAIT_S = 300.0  # the longest long poll
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})  # no API key needed
# The web console: static files, open like the document (they hold no data: the page asks
# for the API key and sends it with every API request). Its policy lets the page load and
# ask nothing but this gateway.
CONSOLE_DIR = Path(__file__).parent / "console"
CONSOLE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "graph.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

# The HTTP status of each error code the NATS API replies with.
_STATUS = {
    "schema_error": 400,
    "decode_error": 400,
    "invalid_name": 400,
    "protocol_error": 400,
    "graph_error": 400,
    "unknown_agent": 404,
    "unknown_job": 404,
    "unknown_thread": 404,
    "unknown_schedule": 404,
    "not_found": 404,
    "job_state": 409,
    "job_moved": 409,
    "job_conflict": 409,
    "payload_too_large": 413,
    "busy": 429,
    "unsupported_media_type": 415,
    "connection_error": 503,
    "unavailable": 503,
    "timeout": 504,
}


class Problem(Exception):
    """An HTTP error that is not one of Rig's own (a missing route, a wrong media type)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


_MEMBERS = ("type", "title", "status", "detail", "code")


def problem(
    status: int,
    code: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An RFC 9457 problem document; the error's own details are extension members (one
    named like a standard member, a job's `status` say, gets a `rig_` prefix)."""
    body = {
        (f"rig_{key}" if key in _MEMBERS else key): value for key, value in (extra or {}).items()
    }
    body |= {
        "type": f"/problems/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail,
        "code": code,
    }
    return web.json_response(
        body, status=status, content_type="application/problem+json", headers=headers
    )


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _cross_site(request: web.Request) -> bool:
    """Whether a browser sent this request from a page of another origin. A page may
    send a POST to any address without asking first (a form, or `fetch` with a simple
    content type), and without keys nothing else would stop it; programs send neither
    header, and the console's own requests are same-origin."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    own = f"{request.scheme}://{request.host}"
    return origin.lower() != own.lower()


@web.middleware
async def traced(request: web.Request, handler: Any) -> web.StreamResponse:
    """A SERVER span per request (HTTP conventions), continuing the caller's
    `traceparent`; what it submits continues this span. Nothing when traces are off."""
    if not tracing.enabled():
        return await handler(request)  # type: ignore[no-any-return]
    route = request.match_info.route.resource
    template = route.canonical if route is not None else request.path
    attributes = {
        "http.request.method": request.method,
        "url.path": request.path,
        "http.route": template,
    }
    with tracing.span(
        f"{request.method} {template}",
        parent=tracing.extract(dict(request.headers)),
        kind=SpanKind.SERVER,
        attributes=attributes,
    ) as span:
        response = await handler(request)
        if span is not None:
            span.set_attribute("http.response.status_code", response.status)
        return response  # type: ignore[no-any-return]


@web.middleware
async def problems(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error as a problem document; the process keeps serving."""
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except Problem as exc:
        return problem(exc.status, exc.code, exc.detail)
    except RigError as exc:
        details = exc.to_dict()
        code = details.pop("code")
        message = details.pop("message")
        response = problem(_STATUS.get(code, 500), code, message, details)
        if code in ("busy", "unavailable"):  # when to come back, as HTTP says it
            response.headers["Retry-After"] = str(math.ceil(float(details["retry_after"])))
        return response
    except TimeoutError as exc:
        return problem(504, "timeout", str(exc) or "timed out")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = "not_found" if exc.status == 404 else f"http_{exc.status}"
        return problem(exc.status, code, exc.reason)
    except Exception as exc:  # a bug of ours: logged, and said as little as possible
        structlog.get_logger("rig.gateway").error(
            "gateway.internal_error", path=request.path, error=repr(exc), exc_info=exc
        )
        return problem(500, "internal_error", "the gateway failed; its log says why")


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # "path", "query" or "header"
    schema: dict[str, Any]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    """One route: what registers it, and what the OpenAPI document says of it."""

    method: str
    path: str
    handler: str
    summary: str
    ok: int = 200
    answer: type[BaseModel] | None = None  # None: Server-Sent Events
    body: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()


_JOB_ID = Param("job_id", "path", {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"})
_ROUTES_OF_A_JOB = (400, 404, 503)
_SCHEDULE = Param("name", "path", {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,40}$"})
ROUTES = (
    Route(
        "POST",
        "/v1/jobs",
        "submit",
        "Start a job; answered once it is stored",
        ok=202,
        answer=HttpAccepted,
        body=HttpSubmit,
        params=(
            Param(
                "Idempotency-Key",
                "header",
                {"type": "string", "minLength": 1, "maxLength": 255},
                "the same key and body are one job; another body under the key is 409",
            ),
        ),
        errors=(400, 404, 409, 413, 415, 429, 503),
    ),
    Route(
        "GET",
        "/v1/jobs",
        "jobs",
        "Jobs, newest first",
        answer=HttpJobs,
        params=(
            Param("agent", "query", {"type": "string"}),
            Param("status", "query", {"type": "string"}, "a status, or `active`"),
            Param("parent", "query", {"type": "string"}, "only the child jobs it started"),
            Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),
            Param("cursor", "query", {"type": "string"}, "from the previous page's `next`"),
        ),
        errors=(400, 503),
    ),
    Route(
        "GET",
        "/v1/jobs/{job_id}",
        "status",
        "A job's status",
        answer=JobInfo,
        params=(_JOB_ID,),
        errors=_ROUTES_OF_A_JOB,
    ),
    Route(
        "GET",
        "/v1/jobs/{job_id}/wait",
        "wait",
        "Long poll: the status once the job is terminal or waits for a person, or when "
        "`timeout` seconds passed",
        answer=JobInfo,
        params=(
            _JOB_ID,
            Param(
                "timeout",
                "query",
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WAIT_S},
            ),
        ),
        errors=(*_ROUTES_OF_A_JOB, 504),
    ),
    Route(
        "GET",
        "/v1/jobs/{job_id}/events",
        "events",
        "The job's journal as Server-Sent Events (id: the event's stream sequence)",
        answer=None,
        params=(
            _JOB_ID,
            Param("Last-Event-ID", "header", {"type": "string", "pattern": "^[0-9]{1,19}$"}),
            Param("after", "query", {"type": "integer", "minimum": 0}),
            Param("tokens", "query", {"type": "boolean"}),
        ),
        errors=_ROUTES_OF_A_JOB,
    ),
    Route(
        "POST",
        "/v1/jobs/{job_id}/cancel",
        "cancel",
        "End a job that has not ended as `cancelled`",
        answer=JobInfo,
        body=HttpCancel,
        params=(_JOB_ID,),
        errors=(*_ROUTES_OF_A_JOB, 409, 415),
    ),
    Route(
        "POST",
        "/v1/jobs/{job_id}/resolve",
        "resolve",
        "A person takes an edge of a job waiting for one",
        answer=JobInfo,
        body=HttpResolve,
        params=(
            _JOB_ID,
            Param(
                "Idempotency-Key",
                "header",
                {"type": "string", "minLength": 1, "maxLength": 255},
                "a resolve carried out under the key is answered again, not applied again",
            ),
        ),
        errors=(*_ROUTES_OF_A_JOB, 409, 415),
    ),
    Route(
        "POST",
        "/v1/jobs/{job_id}/signals/{name}",
        "signal",
        "Deliver a signal to a job waiting for it (a state with `wait_for`)",
        answer=JobInfo,
        body=HttpSignal,
        params=(
            _JOB_ID,
            Param("name", "path", {"type": "string"}, "the signal's name"),
            Param(
                "Idempotency-Key",
                "header",
                {"type": "string", "minLength": 1, "maxLength": 255},
                "a signal delivered under the key is answered again, not delivered again",
            ),
        ),
        errors=(*_ROUTES_OF_A_JOB, 409, 415),
    ),
    Route(
        "GET",
        "/v1/inbox",
        "inbox",
        "The jobs waiting for a person",
        answer=HttpInbox,
        params=(Param("agent", "query", {"type": "string"}),),
        errors=(400, 503),
    ),
    Route(
        "GET",
        "/v1/threads/{thread}",
        "thread",
        "A thread: the turn that runs, those waiting, the ended turns it keeps",
        answer=ThreadRecord,
        params=(Param("thread", "path", {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"}),),
        errors=(400, 404, 503),
    ),
    Route(
        "GET", "/v1/schedules", "schedules", "Every schedule", answer=ScheduleReply, errors=(503,)
    ),
    Route(
        "PUT",
        "/v1/schedules/{name}",
        "schedule_put",
        "Add a schedule (or replace the one of this name: its pending tick is void)",
        answer=ScheduleReply,
        body=ScheduleSpec,
        params=(_SCHEDULE,),
        errors=(400, 404, 413, 415, 503),
    ),
    Route(
        "GET",
        "/v1/schedules/{name}",
        "schedule_get",
        "One schedule, and what its ticks did",
        answer=ScheduleReply,
        params=(_SCHEDULE,),
        errors=(400, 404, 503),
    ),
    Route(
        "DELETE",
        "/v1/schedules/{name}",
        "schedule_delete",
        "Remove a schedule",
        answer=ScheduleReply,
        params=(_SCHEDULE,),
        errors=(400, 404, 503),
    ),
    *(
        Route(
            "POST",
            f"/v1/schedules/{{name}}/{op}",
            f"schedule_{op}",
            what,
            answer=ScheduleReply,
            params=(_SCHEDULE,),
            errors=(400, 404, 503),
        )
        for op, what in (
            ("pause", "Stop firing a schedule (its pending tick is void)"),
            ("resume", "Fire a paused schedule again, from its next tick"),
            ("trigger", "Start one job of a schedule now, whatever its clock says"),
        )
    ),
    Route("GET", "/v1/agents", "agents", "Registered agents", answer=HttpAgents, errors=(503,)),
    Route(
        "GET",
        "/v1/agents/{name}",
        "agent",
        "One agent: its graph as JSON and as Mermaid, its budget, its live processes",
        answer=HttpAgentDetail,
        params=(Param("name", "path", {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"}),),
        errors=(400, 404, 503),
    ),
    Route(
        "GET",
        "/v1/providers",
        "providers",
        "The model providers: each one's breaker, and its calls by the live agents",
        answer=HttpProviders,
        errors=(503,),
    ),
    Route("GET", "/healthz", "healthz", "The process serves", answer=HttpOk),
    Route("GET", "/readyz", "readyz", "NATS is reachable", answer=HttpOk, errors=(503,)),
)


def _is_open(path: str) -> bool:
    """Whether `path` needs no API key: the probes, the document, the console's files, the
    agents' A2A cards (which say what key their endpoints want)."""
    if path == "/a2a" or (path.startswith("/a2a/") and path.endswith(CARD)):
        return True
    return path in _OPEN_PATHS or path == "/" or path.startswith("/console/")


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of `ROUTES`, its schemas generated from the models."""
    answers = {HttpProblem} | {route.answer for route in ROUTES if route.answer is not None}
    bodies = {route.body for route in ROUTES if route.body is not None}
    _, schemas = models_json_schema(
        [(model, "serialization") for model in sorted(answers, key=lambda m: m.__name__)]
        + [(model, "validation") for model in sorted(bodies, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    problem_ref = {"$ref": "#/components/schemas/HttpProblem"}
    paths: dict[str, Any] = {}
    for route in ROUTES:
        ok: dict[str, Any] = {"description": route.summary}
        if route.answer is None:
            ok["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
        else:
            ref = {"$ref": f"#/components/schemas/{route.answer.__name__}"}
            ok["content"] = {"application/json": {"schema": ref}}
        if route.handler == "submit":  # what a client does next with the job id
            ok["links"] = {
                handler: {
                    "operationId": handler,
                    "parameters": {"job_id": "$response.body#/job_id"},
                }
                for handler in ("status", "wait", "cancel", "resolve")
            }
        responses: dict[str, Any] = {str(route.ok): ok}
        guarded = route.path not in _OPEN_PATHS
        changes = route.method not in _SAFE_METHODS  # a cross-site page's request: 403
        extra = {*((401,) if guarded else ()), *((403,) if changes else ())}
        for status in sorted({*route.errors, *extra}):
            responses[str(status)] = {
                "description": "a problem document",
                "content": {"application/problem+json": {"schema": problem_ref}},
            }
        operation: dict[str, Any] = {
            "operationId": route.handler,
            "summary": route.summary,
            "responses": responses,
            "security": [{"apiKey": []}] if guarded else [],
        }
        if route.params:
            operation["parameters"] = [
                {
                    "name": param.name,
                    "in": param.where,
                    "required": param.where == "path",
                    "schema": param.schema,
                    **({"description": param.description} if param.description else {}),
                }
                for param in route.params
            ]
        if route.body is not None:
            ref = {"$ref": f"#/components/schemas/{route.body.__name__}"}
            operation["requestBody"] = {
                "required": route.body is not HttpCancel,
                "content": {"application/json": {"schema": ref}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Rig", "version": _version()},
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a key from `rig keys add NAME`; needed when the gateway "
                    "has a keys file (always, off loopback)",
                }
            },
        },
    }


def _version() -> str:
    try:
        return importlib.metadata.version("rig")
    except importlib.metadata.PackageNotFoundError:
        return "0"


class Gateway(Actor):
    """Rig over HTTP: see the module's docstring. Consumes nothing; serves HTTP."""

    kind = "gateway"
    splits_work = False  # it sends the supervisor nothing: any split of its work will do
    name = "gateway"

    @classmethod
    def role_name(cls) -> str:
        return "gateway"

    @classmethod
    def role(cls, names: Names, graphs: list[Graph]) -> Role:
        return permissions.gateway(names)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host, self.port = self.config.gateway_host, self.config.gateway_port
        self.idle_s = self.config.gateway_idle_s
        self._runner: web.AppRunner | None = None
        self._sender: WebhookSender | None = None
        self._a2a: A2aEndpoint | None = None  # `app` makes it
        self._keys: KeyRing | None = None
        self._reload: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        path = keys_path(self.config)
        if path.exists():
            self._keys = await asyncio.to_thread(load_keys, path)
            self._reload = asyncio.create_task(self._reload_keys(path))
            self.log.info("gateway.keys", file=str(path), keys=len(self._keys.hashes))
        elif _loopback(self.host):
            self.log.warning(
                "gateway.no_keys",
                file=str(path),
                why="no keys file: every process on this machine may call the gateway",
            )
        else:
            raise ConfigError(
                f"binding {self.host} needs API keys, and {path} does not exist: make one "
                "with `rig keys add NAME` (or bind 127.0.0.1)"
            )
        self.webhooks = WebhookSettings.of(self.config)
        if self.webhooks.secret is not None:
            records = await self.bucket(self.names.webhooks_bucket)
            self._sender = WebhookSender(self.webhooks, records)
        else:
            self.log.info("gateway.webhooks_off", why="no RIG_WEBHOOK_SECRET")
        self.rig = RigClient(
            self.nc,
            self.config,
            outage_patience=5.0,  # then a 503 with Retry-After: the HTTP client decides
            makes_topology=makes_topology(self.config, self.role_name()),
        )
        files = _raise_file_limit()
        self._runner = web.AppRunner(
            self.app(),
            access_log=None,
            handler_cancellation=True,
            keepalive_timeout=self.idle_s,  # also bounds a connection that sends nothing
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, shutdown_timeout=2.0)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the one bound, when asked for 0 (any)
        self.log.info("gateway.listening", url=f"http://{self.host}:{self.port}", open_files=files)

    async def on_stop(self) -> None:
        if self._reload is not None:
            self._reload.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._sender is not None:
            await self._sender.close()

    def inboxes(self) -> list[Inbox]:
        """Webhooks to deliver, shared by every gateway that can sign them."""
        if self._sender is None:
            return []
        return [
            Inbox(
                durable=self.names.webhook_durable,
                subject=self.names.webhook,
                model=WebhookDelivery,
                handler=self.on_webhook,
                max_deliver=self.webhooks.attempts,
            )
        ]

    async def on_webhook(self, delivery: WebhookDelivery, how: Delivery) -> None:
        assert self._sender is not None
        if delivery.url:
            await self._sender.deliver(delivery, how.attempt)
        if delivery.push and self._a2a is not None:  # an A2A task's push configs
            await self._a2a.push(delivery, how.attempt)

    async def _reload_keys(self, path: Path) -> None:
        """Read the keys file again when it changes: a revoked key stops working soon."""
        seen = await asyncio.to_thread(_stamp, path)
        while True:
            await asyncio.sleep(RELOAD_S)
            stamp = await asyncio.to_thread(_stamp, path)
            if stamp == seen:
                continue
            seen = stamp
            try:
                self._keys = await asyncio.to_thread(load_keys, path)
            except ConfigError as exc:  # keep the keys we have; say why
                self.log.error("gateway.keys_unreadable", error=exc.message)
                continue
            self.log.info("gateway.keys_reloaded", keys=len(self._keys.hashes))

    @web.middleware
    async def authorize(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A bearer API key on every route but the probes, the document and the console's
        files; a request without a valid one learns nothing else, not even whether its
        route exists. With or without keys, a browser's request that changes something
        must come from a page of this gateway's own origin (`cross_site`)."""
        if request.method not in _SAFE_METHODS and _cross_site(request):
            return problem(
                403,
                "cross_site",
                "a request that changes something may not come from another site's page "
                "(its Origin or Sec-Fetch-Site says so): send it from a program, or from "
                "the console this gateway serves",
            )
        if self._keys is None or _is_open(request.path):
            return await handler(request)  # type: ignore[no-any-return]
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or self._keys.check(key.strip()) is None:
            return problem(
                401,
                "unauthorized",
                "send a valid API key: Authorization: Bearer <key> (rig keys add NAME)",
                headers={"WWW-Authenticate": 'Bearer realm="rig"'},
            )
        return await handler(request)  # type: ignore[no-any-return]

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[traced, self.authorize, problems], client_max_size=MAX_BODY_BYTES
        )
        for route in ROUTES:
            app.router.add_route(route.method, route.path, getattr(self, route.handler))
        mcp = McpEndpoint(self.rig, _version(), idempotent_job_id)
        app.router.add_route("*", "/mcp", mcp.handle)  # Rig's agents as MCP tools
        self._a2a = A2aEndpoint(self.rig, _version(), idempotent_job_id, sender=self._sender)
        self._a2a.routes(app)  # and over A2A
        app.router.add_get("/openapi.json", self.openapi_json)
        app.router.add_get("/", self.to_console)
        app.router.add_get("/console/", self.console)
        app.router.add_get("/console/{name}", self.console)
        return app

    async def openapi_json(self, request: web.Request) -> web.Response:
        return web.json_response(self._document)

    @functools.cached_property
    def _document(self) -> dict[str, Any]:
        return openapi()

    # --- jobs ----------------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.Response:
        body = validate(HttpSubmit, await _body(request))
        job_id = body.job_id
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            if job_id is not None:
                raise SchemaError("give job_id or an Idempotency-Key header, not both")
            job_id = idempotent_job_id(key)
        webhook = body.webhook.url if body.webhook else None
        if webhook is not None and self._sender is None:
            raise Problem(
                400,
                "webhooks_off",
                "this gateway cannot sign webhooks: it has no RIG_WEBHOOK_SECRET",
            )
        if webhook is not None:  # an address given as such is checked now; a name, as it connects
            host = (urlsplit(webhook).hostname or "").strip("[]")
            if _is_address(host) and (why := refused(host, self.webhooks.allow)) is not None:
                raise Problem(400, "webhook_refused", f"the webhook's destination: {why}")
        sampling = body.sampling or Sampling()
        reply = await self.rig.submit(
            body.agent,
            body.input,
            job_id=job_id,
            webhook=webhook,
            seed=sampling.seed,
            cache=sampling.cache,
            labels=body.labels,
            thread=body.thread,
            thread_busy=body.thread_busy,
            concurrency_key=body.concurrency_key,
            concurrency_limit=body.concurrency_limit,
            priority=body.priority,
            **limits_of(body),
        )
        location = f"/v1/jobs/{reply.job_id}"
        links = {"self": location, "events": f"{location}/events", "wait": f"{location}/wait"}
        accepted = HttpAccepted(job_id=reply.job_id, warning=reply.warning, links=links)
        return _json(accepted, status=202, headers={"Location": location})

    async def status(self, request: web.Request) -> web.Response:
        return _json(await self.rig.status(_job_id(request)))

    async def wait(self, request: web.Request) -> web.Response:
        """Until the job is terminal or waits for a person, or `timeout` passes: the
        status either way (a client asks again while it is `running`)."""
        job_id = _job_id(request)
        timeout = _number(request, "timeout", 30.0, high=MAX_WAIT_S)
        info = await self.rig.status(job_id)
        if info.status not in SETTLED_STATUSES:
            with contextlib.suppress(TimeoutError):
                info = await self.rig.wait(job_id, timeout=timeout)
        return _json(info)

    async def cancel(self, request: web.Request) -> web.Response:
        body = validate(HttpCancel, await _body(request, empty_ok=True))
        return _json(await self.rig.cancel(_job_id(request), reason=body.reason))

    async def resolve(self, request: web.Request) -> web.Response:
        body = validate(HttpResolve, await _body(request))
        key = request.headers.get("Idempotency-Key")
        info = await self.rig.resolve(
            _job_id(request),
            body.edge,
            args=body.args,
            note=body.note,
            by=body.by,
            step=body.step,
            # Retried with the same key, a resolve carried out already is answered again.
            resolve_id=hashlib.sha256(key.encode()).hexdigest() if key is not None else None,
            **limits_of(body),
        )
        return _json(info)

    async def signal(self, request: web.Request) -> web.Response:
        body = validate(HttpSignal, await _body(request, empty_ok=True))
        key = request.headers.get("Idempotency-Key")
        info = await self.rig.signal(
            _job_id(request),
            check_token(request.match_info["name"], what="signal name"),
            body.data,
            by=body.by,
            # Sent again with the same key, a signal delivered already is answered again.
            signal_id=hashlib.sha256(key.encode()).hexdigest() if key is not None else None,
        )
        return _json(info)

    async def jobs(self, request: web.Request) -> web.Response:
        agent = request.query.get("agent")
        status = request.query.get("status")
        limit = max(1, int(_number(request, "limit", 50, high=1000)))
        before = _cursor(request.query.get("cursor"))
        parent = request.query.get("parent")
        if parent is not None:
            check_token(parent, what="parent job id")
        found, counts = await self.rig.job_page(
            agent=agent, status=status, limit=limit, before=before, parent=parent
        )
        following = None
        if len(found) == limit:
            last = found[-1]
            query = {**request.query, "cursor": cursor_of(last.created_at, last.job_id)}
            following = str(request.rel_url.with_query(query))
        return _json(HttpJobs(jobs=found, next=following, counts=dict(counts)))

    async def thread(self, request: web.Request) -> web.Response:
        return _json(await self.rig.thread(request.match_info["thread"]))

    async def schedules(self, request: web.Request) -> web.Response:
        return _json(await self.rig.schedule("list"))

    async def schedule_put(self, request: web.Request) -> web.Response:
        spec = validate(ScheduleSpec, await _body(request))
        name = request.match_info["name"]
        return _json(await self.rig.schedule("add", name, spec.model_dump(exclude_unset=True)))

    async def schedule_get(self, request: web.Request) -> web.Response:
        return _json(await self.rig.schedule("get", request.match_info["name"]))

    async def schedule_delete(self, request: web.Request) -> web.Response:
        return _json(await self.rig.schedule("delete", request.match_info["name"]))

    async def schedule_pause(self, request: web.Request) -> web.Response:
        return _json(await self.rig.schedule("pause", request.match_info["name"]))

    async def schedule_resume(self, request: web.Request) -> web.Response:
        return _json(await self.rig.schedule("resume", request.match_info["name"]))

    async def schedule_trigger(self, request: web.Request) -> web.Response:
        return _json(await self.rig.schedule("trigger", request.match_info["name"]))

    async def inbox(self, request: web.Request) -> web.Response:
        return _json(HttpInbox(jobs=await self.rig.inbox(request.query.get("agent"))))

    async def agents(self, request: web.Request) -> web.Response:
        infos, live = await self.rig.agents(), await self.rig.live_agents()
        agents = [
            HttpAgent(
                name=info.name,
                description=info.description,
                example_input=info.example_input,
                input_schema=info.input_schema,
                graph_version=info.graph.version,
                live=live.get(info.name, 0),
            )
            for info in infos
        ]
        return _json(HttpAgents(agents=agents))

    async def agent(self, request: web.Request) -> web.Response:
        name = check_token(request.match_info["name"], what="agent name")
        found = [info for info in await self.rig.agents() if info.name == name]
        if not found:
            raise UnknownAgentError(f"no agent named {name!r} has registered", agent=name)
        [info] = found
        live = await self.rig.live_agents()
        detail = HttpAgentDetail(
            name=info.name,
            description=info.description,
            example_input=info.example_input,
            input_schema=info.input_schema,
            graph_version=info.graph.version,
            live=live.get(info.name, 0),
            graph=info.graph,
            mermaid=info.graph.to_mermaid(info.name),
            budget=info.budget,
            on_exhausted=info.on_exhausted,
            on_stuck=info.on_stuck,
        )
        return _json(detail)

    async def providers(self, request: web.Request) -> web.Response:
        return _json(HttpProviders(providers=await self.rig.providers()))

    async def console(self, request: web.Request) -> web.StreamResponse:
        """The console's files (actors/gateway/console): the page and what it loads."""
        name = request.match_info.get("name") or "index.html"
        kind = CONSOLE_FILES.get(name)
        if kind is None:
            raise Problem(404, "not_found", f"the console has no file {name!r}")
        body = await asyncio.to_thread((CONSOLE_DIR / name).read_bytes)
        headers = {
            "Content-Type": kind,
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CONSOLE_CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        return web.Response(body=body, headers=headers)

    async def to_console(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/console/")

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(HttpOk())

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready when NATS answers and the streams a job needs (work, journal, snapshots)
        each have a leader: in a cluster, a majority of their copies. A copy that lags
        does not make it unready (the majority works on); `rig cluster status` says."""
        try:
            await self.nc.flush(timeout=2)
        except (nats.errors.Error, OSError) as exc:
            raise RigConnectionError(f"NATS is not ready: {exc!r}") from None
        streams = (self.names.work_stream, self.names.events_stream, f"KV_{self.names.jobs_bucket}")
        found = await asyncio.gather(*(stream_health(self.js, s, timeout=2) for s in streams))
        leaderless = [h for h in found if h.error]
        if leaderless:
            raise RigConnectionError(
                "NATS is not ready: no leader answers for "
                f"{', '.join(h.name for h in leaderless)} ({leaderless[0].error})"
            )
        return _json(HttpOk())

    # --- the journal as Server-Sent Events -------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        job_id = _job_id(request)
        after = _after(request)
        tokens = request.query.get("tokens", "false").lower() in ("1", "true", "yes")
        await self.rig.status(job_id)  # 404 before the stream starts, for a job not known
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        _bound_buffers(request)
        stream = _Stream(response)
        await stream.send(f"retry: {RETRY_MS}\n\n")
        token_sub = None
        if tokens:

            async def on_token(msg: Any) -> None:
                step = (msg.headers or {}).get(Header.STEP, "")
                token = {"text": msg.data.decode(errors="replace")}
                text = json.dumps(token | ({"step": int(step)} if step.isdigit() else {}))
                stream.later(f"event: token\ndata: {text}\n\n")

            token_sub = await self.nc.subscribe(self.names.tokens(job_id), cb=on_token)
        start = (
            ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1)
            if after
            else ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        subject = self.names.events(job_id)
        sub = await self.js.subscribe(subject, ordered_consumer=True, config=start)
        # With tokens, look for them often; without, wake only to keep the line alive.
        tick = _TOKEN_TICK_S if tokens else KEEP_ALIVE_S
        seen = 0  # a journal event stored twice (a re-send) is sent once
        try:
            while True:
                await stream.flush_later()
                try:
                    msg = await sub.next_msg(timeout=tick)
                except nats.errors.TimeoutError:
                    if stream.idle() >= KEEP_ALIVE_S:
                        await stream.send(": keep-alive\n\n")
                    continue
                event = decode_as(Event, msg.data)[0]
                if event.seq <= seen:
                    continue
                seen = event.seq
                data = event.model_dump_json()
                seq = msg.metadata.sequence.stream
                await stream.send(f"id: {seq}\nevent: {event.type}\ndata: {data}\n\n")
                if event.type == "status" and event.data.get("status") in TERMINAL_STATUSES:
                    break
        except ConnectionResetError:
            pass  # the client left: it resumes by id
        except _Gone:  # its buffer is full: cut it off (it resumes by id) and hold nothing
            self.log.info("gateway.client_too_slow", job_id=job_id, seconds=WRITE_TIMEOUT_S)
            if request.transport is not None:
                request.transport.abort()
            return response
        except Exception as exc:  # the stream has begun: no problem document now
            self.log.error("gateway.stream_failed", job_id=job_id, error=repr(exc), exc_info=exc)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if token_sub is not None:
                with contextlib.suppress(Exception):
                    await token_sub.unsubscribe()
        try:
            await stream.flush_later()
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await response.write_eof()
        except ConnectionResetError:
            pass
        except (_Gone, TimeoutError):
            if request.transport is not None:
                request.transport.abort()
        return response


class _Gone(Exception):
    """The SSE client stopped reading."""


class _Stream:
    """One SSE response: writes that give up on a client that does not read, and token
    events queued (bounded) by the NATS callback for the writer to send."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self._later: asyncio.Queue[str] = asyncio.Queue(maxsize=1024)
        self._sent_at = time.monotonic()

    def idle(self) -> float:
        """Seconds since the last write."""
        return time.monotonic() - self._sent_at

    async def send(self, text: str) -> None:
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await self.response.write(text.encode())
        except TimeoutError:
            raise _Gone from None
        self._sent_at = time.monotonic()

    def later(self, text: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # tokens are best effort, not journal
            self._later.put_nowait(text)

    async def flush_later(self) -> None:
        while not self._later.empty():
            await self.send(self._later.get_nowait())


def _json(model: BaseModel, *, status: int = 200, **kwargs: Any) -> web.Response:
    return web.json_response(
        model.model_dump(mode="json", exclude_none=False), status=status, **kwargs
    )


def cursor_of(created_at: float, job_id: str) -> str:
    """An opaque page cursor: where the previous page ended."""
    return base64.urlsafe_b64encode(f"{created_at!r}/{job_id}".encode()).decode().rstrip("=")


def _cursor(raw: str | None) -> tuple[float, str] | None:
    if raw is None:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        created, job_id = text.split("/", 1)
        return float(created), check_token(job_id, what="job id")
    except (ValueError, UnicodeDecodeError, RigError):
        raise SchemaError("cursor is not one this gateway gave (take `next` as it is)") from None


def idempotent_job_id(key: str) -> str:
    """The job id an `Idempotency-Key` names (any text: hashed into a valid id)."""
    if not key or len(key) > 255:
        raise SchemaError("Idempotency-Key must be 1 to 255 characters")
    return "idem-" + hashlib.sha256(key.encode()).hexdigest()[:32]


async def _body(request: web.Request, *, empty_ok: bool = False) -> Any:
    """The JSON body (NaN and other non-plain values refused), or a problem."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLargeError(
            f"the body is larger than {MAX_BODY_BYTES} bytes", limit=MAX_BODY_BYTES
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLargeError(
            f"the body is larger than {MAX_BODY_BYTES} bytes", limit=MAX_BODY_BYTES
        ) from None
    if not raw and empty_ok:
        return {}
    if request.content_type not in ("application/json", ""):
        raise Problem(415, "unsupported_media_type", "send the body as application/json")
    value, _ = decode(raw, {"Content-Type": "application/json"})  # DecodeError: a 400
    return value


def _job_id(request: web.Request) -> str:
    return check_token(request.match_info["job_id"], what="job id")


def _after(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.query.get("after") or "0"
    if not raw.isdigit() or len(raw) > 19:
        raise SchemaError(f"Last-Event-ID (or after) must be an event id, not {raw[:40]!r}")
    return int(raw)


def _number(request: web.Request, name: str, default: float, *, high: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SchemaError(f"{name} must be a number, not {raw[:40]!r}") from None
    if not 0 < value <= high:
        raise SchemaError(f"{name} must be more than 0 and at most {high:g}")
    return value


def _bound_buffers(request: web.Request) -> None:
    """A small, bounded buffer for one SSE client, in the process and in the kernel: a
    client that does not read fills it soon, and is then cut off by the write timeout."""
    transport = request.transport
    if transport is None:
        return
    transport.set_write_buffer_limits(high=SSE_BUFFER_BYTES)
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SSE_BUFFER_BYTES)


def _raise_file_limit() -> int:
    """Lift this process's open-file limit to the hard one (each connection is a file);
    return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
