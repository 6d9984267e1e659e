"""Fault injection for the crash tests: die with `os._exit` at a named point.

`RIG_CRASH_AT=after_claim` (a comma-separated list) makes the process exit with status
137, as if SIGKILLed, when it reaches that point; with `RIG_CRASH_MARKER=FILE` it does
so once, leaving FILE behind, so that its restarted self runs normally. Unset (the
default), a crash point costs one set lookup.

Points: `before_claim`, `after_claim`, `after_effect` (the tool returned, its result not
yet recorded), `after_record` (recorded, not yet reported), `after_ack`.
"""

from __future__ import annotations

import os
from pathlib import Path

_POINTS = frozenset(p.strip() for p in os.environ.get("RIG_CRASH_AT", "").split(",") if p.strip())


def armed(name: str) -> bool:
    """Whether `RIG_CRASH_AT` names this point."""
    return name in _POINTS


def crash_point(name: str) -> None:
    """Exit at once, without cleanup, if `RIG_CRASH_AT` names this point."""
    if name not in _POINTS:
        return
    marker = os.environ.get("RIG_CRASH_MARKER")
    if marker:
        path = Path(marker)
        if path.exists():
            return
        path.write_text(name)  # a few bytes, just before the process dies
    os._exit(137)
