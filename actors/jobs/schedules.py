"""When a schedule's ticks fall, and which of them fire: pure, like `rules.py`.

A schedule's ticks are a chain of `ScheduleTick` messages on `rig.work.timer`, one at a
time: the supervisor that handles tick T fires the jobs it owes, sends tick T+1, and
only then writes the schedule's record. Each job's id is `tick_job_id(name, tick)`, so a
tick fired again (a redelivery, two replicas, a restart) is the same job; a tick whose
record says it was handled already (`last_tick`) is dropped, which also ends a chain
that a late duplicate of a next tick would have forked; a tick of an older generation
(the schedule was paused, resumed or added again since) is void.

Missed ticks (the deployment was down, a supervisor died holding the tick): every tick
from T up to now is due; `skip` fires those not later than `grace_s`, `once` fires the
newest alone, `all` fires each (the newest `catch_up` of them).
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from protocols import SchemaError
from protocols._schedules import Schedule, ScheduleSpec


def check_spec(spec: ScheduleSpec) -> None:
    """A `SchemaError` saying what is wrong with a spec's clock (its cron, its zone)."""
    zone = _zone(spec)
    if spec.cron is not None:
        try:
            CronSim(spec.cron, datetime.now(zone))
        except CronSimError as exc:
            raise SchemaError(f"cron {spec.cron!r}: {exc}") from None


def ticks_after(spec: ScheduleSpec, after: float, count: int = 1) -> list[float]:
    """The first `count` ticks strictly after `after` (epoch seconds), none before
    `start_at` nor after `end_at`."""
    after = max(after, (spec.start_at or after + 1) - 1)
    found: list[float] = []
    if spec.every_s is not None:
        anchor = spec.start_at if spec.start_at is not None else 0.0
        step = spec.every_s
        first = anchor + (math.floor((after - anchor) / step) + 1) * step
        found = [first + n * step for n in range(count)]
    else:
        assert spec.cron is not None
        start = datetime.fromtimestamp(after, _zone(spec))
        for when in CronSim(spec.cron, start):
            tick = when.timestamp()
            if tick > after:
                found.append(tick)
            if len(found) == count:
                break
    return [t for t in found if spec.end_at is None or t <= spec.end_at]


def jitter(name: str, at: float, spread: float) -> float:
    """How much later than `at` tick `at` fires: the same on every replica and retry."""
    if spread <= 0:
        return 0.0
    digest = hashlib.sha256(f"{name}:{at!r}".encode()).digest()
    return spread * int.from_bytes(digest[:8], "big") / 2**64


def due(schedule: Schedule, at: float, now: float) -> tuple[list[float], int, float]:
    """For tick `at` handled at `now`: the ticks to fire, how many are skipped, and the
    newest tick handled (the next one comes after it)."""
    spec = schedule.spec
    count, newer = _until(spec, at, now, spec.catch_up)
    late = [at, *newer][-spec.catch_up - 1 :]  # the newest, all that may fire
    count += 1
    newest = late[-1]
    match spec.missed:
        case "all":
            fire = late[-spec.catch_up :]
        case "once":
            fire = [newest]
        case _:
            fire = [t for t in late if now - t <= spec.grace_s + spec.jitter_s]
    return fire, count - len(fire), newest


def _until(spec: ScheduleSpec, after: float, now: float, most: int) -> tuple[int, list[float]]:
    """How many ticks fall after `after` up to `now`, and the newest `most` of them (the
    older ones are walked over in chunks, and counted)."""
    found: list[float] = []
    count = 0
    while True:
        chunk = [t for t in ticks_after(spec, after, 64) if t <= now]
        count += len(chunk)
        found = (found + chunk)[-most:]
        if len(chunk) < 64:
            return count, found
        after = chunk[-1]


def _zone(spec: ScheduleSpec) -> tzinfo:
    if spec.timezone in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SchemaError(f"unknown time zone {spec.timezone!r} (an IANA name)") from None
