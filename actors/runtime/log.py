"""structlog set up once per process: console on a terminal, JSON lines otherwise.

Every line a handler logs carries the `actor`, `job_id`, `step`, `subject` and `attempt`
of the message it handles (`MESSAGE_FIELDS`); with traces on, a
line logged within a span also carries its `trace_id` and `span_id`.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

import structlog

from actors.runtime import tracing as tracing
from actors.runtime.settings import RigConfig

_configured = False


def configure_logging(config: RigConfig | None = None, *, fmt: str | None = None) -> None:
    """Configure structlog for this process (idempotent) as `config` says (its
    `log_level`, `log_format` and `log_file`: a file that also gets every line, as JSON,
    for `rig logs`); `fmt` overrides the format."""
    global _configured
    if _configured:
        return
    _configured = True
    config = config or RigConfig.from_env()
    level_name = config.log_level.upper()
    fmt = fmt or config.log_format or ("console" if sys.stderr.isatty() else "json")
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    to_file: list[structlog.typing.Processor] = []
    if config.log_file is not None:
        from actors.runtime.logfiles import JsonFileWriter

        to_file.append(JsonFileWriter(config.log_file))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _message_fields,
            _trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *to_file,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level_name, logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


# The message a handler works on (actor, subject, attempt, job_id, step): one context
# variable holding one dict, set once per message in the message's own task, instead of
# a variable per field bound and cleared each time (scripts/bench profile).
MESSAGE_FIELDS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "rig_message_fields", default=None
)


def _message_fields(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """The fields of the message being handled, on every line its handler logs."""
    fields = MESSAGE_FIELDS.get()
    if fields:
        for key, value in fields.items():
            event.setdefault(key, value)
    return event


def _trace_ids(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """The current span's trace and span id, so a line joins its trace."""
    ids = tracing.current_ids()
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event
