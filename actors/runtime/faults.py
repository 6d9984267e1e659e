"""Fault injection for the crash tests: die (or freeze) at a named point.

`RIG_CRASH_AT=after_claim` (a comma-separated list) makes the process exit with status
137, as if SIGKILLed, when it reaches that point; with `RIG_CRASH_MARKER=FILE` it does
so once, leaving FILE behind, so that its restarted self runs normally. Unset (the
default), a crash point costs one set lookup.

`RIG_PAUSE_AT` does the same with SIGSTOP instead of an exit: the process freezes
there until someone sends SIGCONT, like a VM paused past its lease.

Points: `before_claim`, `after_claim`, `after_effect` (the tool returned, its result not
yet recorded), `after_record` (recorded, not yet reported), `after_ack`; the tool points
also as `POINT:TOOL` (one tool's calls only); the supervisor's `after_write_KIND` (a
transition caused by a message of that kind is written, its outbox not yet published)
and `after_write_end` (a job's last transition is written: its end, and what it tells
its parent), each also as `POINT:AGENT` (one agent's jobs only); the agent's
`after_decide` (the model answered, the decision not yet sent), also as `POINT:STATE`.
"""

from __future__ import annotations

import os
import signal

from actors.runtime.settings import Faults

_FAULTS = Faults.from_env()
_POINTS, _PAUSES = _FAULTS.crash_at, _FAULTS.pause_at


def armed(name: str) -> bool:
    """Whether `RIG_CRASH_AT` names this point."""
    return name in _POINTS


def crash_point(name: str, where: str = "") -> None:
    """Exit at once, without cleanup, if `RIG_CRASH_AT` names this point (SIGSTOP if
    `RIG_PAUSE_AT` does). `where` narrows it: `after_effect:issue_refund` is the point
    `after_effect` of tool `issue_refund` only."""
    names = (name, f"{name}:{where}") if where else (name,)
    if not _POINTS.isdisjoint(names) and _first_time(name):
        os._exit(137)
    if not _PAUSES.isdisjoint(names) and _first_time(name):
        os.kill(os.getpid(), signal.SIGSTOP)


def _first_time(name: str) -> bool:
    path = _FAULTS.marker
    if path is None:
        return True
    if path.exists():
        return False
    path.write_text(name)  # a few bytes, just before the process stops
    return True
