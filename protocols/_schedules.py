"""Schedules on the wire: jobs of an agent started on a clock (`rig schedule`).

A `Schedule` is kept in `RIG_SCHEDULES` under its name, with what its ticks did so far;
the supervisors fire it, one `ScheduleTick` message at a time on `rig.work.timer`; a
`ScheduleRequest` on `rig.api.schedule` adds, lists, pauses, resumes, deletes or
triggers one. The rules of firing are in `actors/jobs/schedules.py`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from protocols._messages import JobId, Name, ScheduleTick, _Api, _Wire, now

MissedPolicy = Literal["skip", "once", "all"]
OverlapPolicy = Literal["skip", "queue", "cancel", "allow"]
ScheduleOp = Literal["add", "get", "list", "pause", "resume", "delete", "trigger"]

# A tick's job id is `sched-<name>-<tick in epoch seconds>`: the name leaves room for it.
SCHEDULE_NAME_MAX = 40


class ScheduleSpec(_Api):
    """What a schedule runs, and when (`rig schedule add`)."""

    agent: Name
    input: dict[str, Any] = Field(default_factory=dict)
    cron: str | None = Field(
        default=None,
        max_length=200,
        description="a cron expression (5 fields, or 6 with seconds first), in `timezone`",
    )
    every_s: int | None = Field(
        default=None, ge=1, le=366 * 86400, description="or: a tick every this many seconds"
    )
    timezone: str = Field(default="UTC", max_length=64, description="an IANA time zone")
    start_at: float | None = Field(default=None, description="no tick before (epoch s)")
    end_at: float | None = Field(default=None, description="no tick after (epoch s)")
    jitter_s: float = Field(
        default=0.0, ge=0, le=3600, description="each tick fires up to this much later"
    )
    missed: MissedPolicy = Field(
        default="skip",
        description="ticks found late (the deployment was down): `skip` them, run `once` "
        "for all of them, or run `all` (at most `catch_up`)",
    )
    catch_up: int = Field(default=10, ge=1, le=1000)
    grace_s: float = Field(
        default=60.0, ge=0, le=86400, description="how late a tick may fire and not be missed"
    )
    overlap: OverlapPolicy = Field(
        default="skip",
        description="while the previous tick's job runs: `skip` this tick, `queue` it "
        "(the jobs of a schedule are then turns of one thread), `cancel` the previous, "
        "or `allow` both",
    )

    @model_validator(mode="after")
    def _one_clock(self) -> ScheduleSpec:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("give cron or every_s, one of them")
        if self.start_at is not None and self.end_at is not None and self.end_at <= self.start_at:
            raise ValueError("end_at must be after start_at")
        return self


class Schedule(_Wire):
    """A schedule as `RIG_SCHEDULES` keeps it: its spec, and what its ticks did."""

    name: str
    spec: ScheduleSpec
    paused: bool = False
    generation: int = Field(
        default=1, description="changed by each add, pause and resume: older ticks are void"
    )
    created_at: float = Field(default_factory=now)
    next_at: float | None = Field(default=None, description="the next tick (epoch s)")
    last_tick: float | None = Field(default=None, description="the newest tick handled")
    last_job: str | None = Field(default=None, description="the job of the newest tick fired")
    fired: int = 0
    skipped: int = Field(default=0, description="ticks not fired: missed, or overlapping")


class ScheduleRequest(_Api):
    """`rig.api.schedule`: one operation on the schedules."""

    op: ScheduleOp
    name: str | None = Field(
        default=None, min_length=1, max_length=SCHEDULE_NAME_MAX, pattern=r"^[A-Za-z0-9_-]+$"
    )
    spec: ScheduleSpec | None = Field(default=None, description="`add`: the schedule")

    @model_validator(mode="after")
    def _named(self) -> ScheduleRequest:
        if self.op != "list" and self.name is None:
            raise ValueError(f"`{self.op}` names a schedule")
        if self.op == "add" and self.spec is None:
            raise ValueError("`add` gives the schedule's spec")
        return self


class ScheduleReply(_Wire):
    """The schedules an operation leaves (one, or all for `list`), and a triggered job."""

    schedules: list[Schedule] = Field(default_factory=list)
    job_id: JobId | None = None


def tick_job_id(name: str, at: float) -> str:
    """The job of schedule `name`'s tick `at`: the same id however often it is fired."""
    return f"sched-{name}-{int(at)}"


__all__ = [
    "MissedPolicy",
    "OverlapPolicy",
    "Schedule",
    "ScheduleReply",
    "ScheduleRequest",
    "ScheduleSpec",
    "ScheduleTick",
    "tick_job_id",
]
