"""Traces: one per job, across every process and hop, in OpenTelemetry's terms.

Off unless the standard variables ask for it: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_TRACES_EXPORTER=otlp`); spans go out by
OTLP over HTTP, sampled by `OTEL_TRACES_SAMPLER` (default: always, following the parent),
with the `OTEL_*` settings the SDK reads (`pip install 'rig[otel]'`). Off, every call
here is OpenTelemetry's no-op API: no span, no header.

How a job is one trace: every message Rig publishes carries `traceparent` (W3C Trace
Context) in its headers, and whoever handles it continues from there, so a redelivered
message, handled by another process after a crash, continues the same trace. The job's
own context (trace id and the id its root span will have) is made when it is submitted,
under the caller's `traceparent` if it sent one, and kept in the job's snapshot; the
root span itself is sent when the job ends, from its acceptance to its end.

Spans, by the OpenTelemetry GenAI and messaging conventions: `job {agent}` (the root);
`send {subject}` (PRODUCER) and `process {subject}` (CONSUMER) per message;
`invoke_agent {agent}` per step; `chat {model}` (CLIENT) per model request;
`execute_tool {tool}`; `verify {verifier}` with a `gen_ai.evaluation.result` event;
`transition {agent}` for each of the supervisor's; `waiting_human {agent}`. Prompts and
answers are recorded only with `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import random
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from protocols import ConfigError

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER_NAME = "rig"
_enabled: bool | None = None
# A span id (and trace id) the next span must have: a job's root, made at its end.
_preset: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "rig_preset_ids", default=None
)


def wanted() -> bool:
    """Whether the environment asks for traces (the standard OTEL_* variables)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def enabled() -> bool:
    return bool(_enabled)


def capture_content() -> bool:
    value = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    return value.strip().lower() == "true"


def start(service: str) -> None:
    """Set up this process's tracer provider if the environment asks for traces."""
    global _enabled
    if _enabled is not None or not wanted():
        _enabled = bool(_enabled)
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    except ImportError:
        raise ConfigError(
            "OTEL_* asks for traces, but the OpenTelemetry SDK is not installed: "
            "pip install 'rig[otel]'"
        ) from None

    class _Ids(RandomIdGenerator):
        """Random ids, except for a span made with preset ones (a job's root)."""

        def generate_span_id(self) -> int:
            preset = _preset.get()
            return preset[1] if preset else super().generate_span_id()

        def generate_trace_id(self) -> int:
            preset = _preset.get()
            return preset[0] if preset else super().generate_trace_id()

    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or f"rig-{service}",
            "service.namespace": "rig",
            "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
        }
    )
    provider = TracerProvider(resource=resource, id_generator=_Ids())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _enabled = True


def stop() -> None:
    """Send what is buffered and stop (at the process's end)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if _enabled and shutdown is not None:
        shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer(_TRACER_NAME)


# --- context on the wire ------------------------------------------------------------


def inject(headers: dict[str, str]) -> dict[str, str]:
    """`headers` with the current span's `traceparent` (and `tracestate`) added."""
    if _enabled:
        _PROPAGATOR.inject(headers)
    return headers


def inject_for(headers: dict[str, str], traceparent: str | None) -> dict[str, str]:
    """`inject`, or, with no current span (a person's request), the job's own context."""
    if not _enabled:
        return headers
    if trace.get_current_span().get_span_context().is_valid or not traceparent:
        _PROPAGATOR.inject(headers)
    else:
        headers["traceparent"] = traceparent
    return headers


def extract(headers: Mapping[str, str] | None) -> otel_context.Context | None:
    """The context a message's headers carry, if any."""
    if not _enabled or not headers or "traceparent" not in headers:
        return None
    return _PROPAGATOR.extract(dict(headers))


def from_traceparent(value: str | None) -> otel_context.Context | None:
    return extract({"traceparent": value}) if value else None


# --- a job's own context ----------------------------------------------------------------


def new_job_context(parent: Mapping[str, str] | None) -> tuple[str, str | None] | None:
    """A job's `traceparent` (its trace, the span id its root will have, and whether it
    is sampled), and the caller's span it continues, if any; None when traces are off.
    An unsampled job still gets one (flags 00), so that every process follows the one
    decision instead of starting traces of its own."""
    if not _enabled:
        return None
    caller = extract(parent)
    span_context = trace.get_current_span(caller).get_span_context() if caller else None
    parent_value = None
    if span_context is not None and span_context.is_valid:
        trace_id = span_context.trace_id
        sampled = bool(span_context.trace_flags.sampled)
        parent_value = f"00-{trace_id:032x}-{span_context.span_id:016x}-{'01' if sampled else '00'}"
    else:
        trace_id = random.getrandbits(128) or 1
        sampler = getattr(trace.get_tracer_provider(), "sampler", None)
        sampled = (
            sampler is None or sampler.should_sample(None, trace_id, "job").decision.is_sampled()
        )
    root = random.getrandbits(64) or 1
    return f"00-{trace_id:032x}-{root:016x}-{'01' if sampled else '00'}", parent_value


def sampled(traceparent: str) -> bool:
    return traceparent.endswith("-01")


def root_ids(traceparent: str) -> tuple[int, int]:
    _version, trace_id, span_id, _flags = traceparent.split("-")
    return int(trace_id, 16), int(span_id, 16)


def emit_root(
    traceparent: str,
    parent: str | None,
    name: str,
    *,
    start_s: float,
    end_s: float,
    attributes: dict[str, Any],
    error: str | None = None,
) -> None:
    """Send a job's root span, with the ids its children have pointed at all along."""
    if not _enabled or not sampled(traceparent):
        return
    token = _preset.set(root_ids(traceparent))
    try:
        span = tracer().start_span(
            name,
            context=from_traceparent(parent) or otel_context.Context(),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=int(start_s * 1e9),
        )
    finally:
        _preset.reset(token)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=int(end_s * 1e9))


def emit_span(
    traceparent: str,
    name: str,
    *,
    start_s: float,
    end_s: float,
    attributes: dict[str, Any],
) -> None:
    """A finished span under a job's root (a person's wait, known only at its end)."""
    if not _enabled or not sampled(traceparent):
        return
    span = tracer().start_span(
        name,
        context=from_traceparent(traceparent),
        attributes=attributes,
        start_time=int(start_s * 1e9),
    )
    span.end(end_time=int(end_s * 1e9))


@contextlib.contextmanager
def within(traceparent: str | None) -> Iterator[None]:
    """Make a job's root the current span's parent within the body (for what is sent
    before any span of the job exists: its StartJob)."""
    parent = from_traceparent(traceparent) if _enabled else None
    if parent is None:
        yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: otel_context.Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: dict[str, Any] | None = None,
    links: list[Link] | None = None,
) -> Iterator[Span | None]:
    """A span around the body (current within it), or nothing when traces are off."""
    if not _enabled:
        yield None
        return
    with tracer().start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes, links=links
    ) as current:
        yield current


def current_ids() -> tuple[str, str] | None:
    """The current span's trace and span id, as hex, for a log line."""
    if not _enabled:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
