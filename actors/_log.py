"""structlog set up once per process: console on a terminal, JSON lines otherwise.

Handlers bind `actor`, `job`, `step`, `subject` and `attempt` with
`structlog.contextvars`, so every line a handler logs carries them.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import structlog

_configured = False


def configure_logging(*, level: str | None = None, fmt: str | None = None) -> None:
    """Configure structlog for this process (idempotent). `RIG_LOG_LEVEL`, `RIG_LOG_FORMAT`,
    and `RIG_LOG_FILE`: a file that also gets every line, as JSON (for `rig logs`)."""
    global _configured
    if _configured:
        return
    _configured = True
    level_name = (level or os.environ.get("RIG_LOG_LEVEL", "info")).upper()
    fmt = fmt or os.environ.get("RIG_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    to_file: list[structlog.typing.Processor] = []
    if os.environ.get("RIG_LOG_FILE"):
        from actors._logfiles import JsonFileWriter

        to_file.append(JsonFileWriter(Path(os.environ["RIG_LOG_FILE"])))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
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
