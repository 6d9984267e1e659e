"""The supervisor's schedules: `rig.api.schedule`, and each tick's firing.

Schedules live in `RIG_SCHEDULES` (one record each, changed by compare-and-set); their
ticks are `ScheduleTick` messages on `rig.work.timer`, which any supervisor replica
handles (`actors/jobs/schedules.py` says which ticks fire). A tick's job is submitted
through the supervisor's own submit, under the tick's job id: fired twice, it is one job.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from actors.jobs.rules import check_input
from actors.jobs.schedules import check_spec, due, jitter, ticks_after
from actors.runtime.metrics import TIMERS_RESENT, child
from actors.runtime.nats import kv_latest, kv_read
from protocols import (
    TERMINAL_STATUSES,
    CancelRequest,
    JobStateError,
    RetryableError,
    SubmitRequest,
    UnknownScheduleError,
    decode_as,
    encode,
    msg_id,
)
from protocols._schedules import (
    Schedule,
    ScheduleReply,
    ScheduleRequest,
    ScheduleTick,
    tick_job_id,
)

if TYPE_CHECKING:
    from actors.jobs.supervisor import Supervisor

# Compare-and-set attempts on a schedule's record before the message is tried again later.
_CAS_ATTEMPTS = 8
# How long after it is due a tick waits for the record of its schedule's generation.
_UNWRITTEN_S = 30.0


class Scheduler:
    """What a supervisor does with schedules (it holds one)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self._bucket: KeyValue | None = None

    async def bucket(self) -> KeyValue:
        if self._bucket is None:
            self._bucket = await self.sup.js.key_value(self.sup.names.schedules_bucket)
        return self._bucket

    async def read(self, name: str) -> tuple[Schedule | None, int]:
        data, revision = await kv_read(await self.bucket(), name)
        return (decode_as(Schedule, data)[0] if data else None), revision

    async def _write(self, schedule: Schedule, revision: int) -> bool:
        """Compare-and-set the record (`revision` 0: create); whether it was written."""
        bucket = await self.bucket()
        try:
            if revision == 0:
                await bucket.create(schedule.name, encode(schedule))
            else:
                await bucket.update(schedule.name, encode(schedule), last=revision)
        except KeyWrongLastSequenceError:
            return False
        except Exception as exc:  # create over a live key raises another error
            if "wrong last sequence" in str(exc) or "key exists" in str(exc):
                return False
            raise
        return True

    # --- rig.api.schedule ----------------------------------------------------------------

    async def request(self, request: ScheduleRequest) -> ScheduleReply:
        if request.op == "list":
            return ScheduleReply(schedules=await self._all())
        assert request.name is not None
        name = request.name
        if request.op == "add":
            return ScheduleReply(schedules=[await self._add(request)])
        if request.op == "trigger":
            schedule, _ = await self._known(name)
            job_id = f"sched-{name}-now-{int(time.time() * 1000) % 10**10}"
            await self._submit(schedule, job_id, {"schedule": name, "tick": "now"})
            return ScheduleReply(schedules=[schedule], job_id=job_id)
        if request.op == "delete":
            schedule, _ = await self._known(name)
            await (await self.bucket()).delete(name)  # its pending tick finds nothing
            return ScheduleReply(schedules=[schedule])
        if request.op == "get":
            return ScheduleReply(schedules=[(await self._known(name))[0]])
        return ScheduleReply(schedules=[await self._pause(name, request.op == "pause")])

    async def _known(self, name: str) -> tuple[Schedule, int]:
        schedule, revision = await self.read(name)
        if schedule is None:
            raise UnknownScheduleError(f"no schedule {name!r} (rig schedule ls)", name=name)
        return schedule, revision

    async def _all(self) -> list[Schedule]:
        found = [
            decode_as(Schedule, data)[0]
            async for _name, data in kv_latest(self.sup.js, self.sup.names.schedules_bucket)
        ]
        return sorted(found, key=lambda schedule: schedule.name)

    async def _add(self, request: ScheduleRequest) -> Schedule:
        """Add a schedule, or replace one of the same name (its pending tick is void)."""
        assert request.name is not None and request.spec is not None
        spec = request.spec
        info = await self.sup._agent(spec.agent)  # UnknownAgentError for a typo
        check_spec(spec)
        check_input(info, spec.input)
        self.sup._fits(spec.input, "a schedule's input")
        for _attempt in range(_CAS_ATTEMPTS):
            old, revision = await self.read(request.name)
            schedule = Schedule(
                name=request.name,
                spec=spec,
                generation=(old.generation + 1) if old else 1,
            )
            schedule.next_at = await self._arm(schedule, time.time())
            if await self._write(schedule, revision):
                return schedule
        raise RetryableError(f"schedule {request.name!r} kept changing: add it again")

    async def _pause(self, name: str, pause: bool) -> Schedule:
        for _attempt in range(_CAS_ATTEMPTS):
            schedule, revision = await self._known(name)
            if schedule.paused == pause:
                return schedule  # paused (or running) already: nothing changes
            schedule.paused, schedule.generation = pause, schedule.generation + 1
            schedule.next_at = None if pause else await self._arm(schedule, time.time())
            if await self._write(schedule, revision):
                return schedule
        raise RetryableError(f"schedule {name!r} kept changing: ask again")

    async def _arm(self, schedule: Schedule, after: float) -> float | None:
        """Send the schedule's first tick after `after` (of its generation); its time."""
        ticks = ticks_after(schedule.spec, after)
        if not ticks:
            return None  # past its end
        await self._send(schedule, ticks[0])
        return ticks[0]

    async def _send(self, schedule: Schedule, at: float, again: int | None = None) -> None:
        """Send tick `at` (`again`: once more, by the timer sweep at that time)."""
        tick = ScheduleTick(
            name=schedule.name,
            generation=schedule.generation,
            at=at,
            due=at + jitter(schedule.name, at, schedule.spec.jitter_s),
        )
        kind = f"tick-{int(at)}" + (f"-swept-{again}" if again is not None else "")
        ident = msg_id(f"sched-{schedule.name}", schedule.generation, kind)
        await self.sup.publish(self.sup.names.timer, tick, msg_id=ident)

    async def overdue(self, grace: float) -> int:
        """Send again the next tick of each running schedule overdue by more than `grace`
        s (the timer sweep, `actors/jobs/sweep.py`: a lost tick would end its chain); how
        many were sent. A tick handled already is dropped as it comes."""
        now, sent = time.time(), 0
        for schedule in await self._all():
            at = schedule.next_at
            if schedule.paused or at is None:
                continue
            if at + jitter(schedule.name, at, schedule.spec.jitter_s) + grace < now:
                await self._send(schedule, at, again=int(now))
                self.sup.log.warning("schedule.tick_resent", schedule=schedule.name, at=at)
                child(TIMERS_RESENT, "schedule_tick").inc()
                sent += 1
        return sent

    # --- ticks ----------------------------------------------------------------------------

    async def on_tick(self, tick: ScheduleTick) -> None:
        """Fire the jobs tick `tick.at` owes (with the ticks found late, by the schedule's
        missed-fire policy), send the next tick, then record it."""
        schedule, _revision = await self.read(tick.name)
        if schedule is None or schedule.generation < tick.generation:
            # Its record is written after the tick is sent (a crash loses no tick), so a
            # tick due at once can come first: asked again until the write is surely
            # over (else the add that sent it failed, or the schedule was deleted).
            if time.time() < tick.due + _UNWRITTEN_S:
                raise RetryableError("its schedule is not written yet", delay=0.5, routine=True)
        if schedule is None or schedule.paused or schedule.generation != tick.generation:
            self.sup.log.info("schedule.tick_void", schedule=tick.name, at=tick.at)
            return
        if schedule.last_tick is not None and tick.at <= schedule.last_tick:
            return  # handled already (a redelivery, or a duplicate of a sent tick)
        fire, skipped, newest = due(schedule, tick.at, time.time())
        fired: list[str] = []
        last_job = schedule.last_job
        for at in fire:
            job_id = await self._fire(schedule, at, last_job)
            if job_id is None:
                skipped += 1
            else:
                fired.append(job_id)
                last_job = job_id
        following = ticks_after(schedule.spec, newest)
        if following:  # sent before the record is written: a crash loses no tick
            await self._send(schedule, following[0])
        for _attempt in range(_CAS_ATTEMPTS):
            current, revision = await self.read(tick.name)
            if current is None or current.generation != tick.generation:
                return
            if current.last_tick is not None and current.last_tick >= newest:
                return  # another replica recorded it
            current.last_tick, current.last_job = newest, last_job
            current.fired += len(fired)
            current.skipped += skipped
            current.next_at = following[0] if following else None
            if await self._write(current, revision):
                self.sup.log.info(
                    "schedule.fired", schedule=tick.name, at=tick.at, jobs=fired, skipped=skipped
                )
                return
        raise RetryableError(f"schedule {tick.name!r} kept changing", delay=0.05)

    async def _fire(self, schedule: Schedule, at: float, previous: str | None) -> str | None:
        """Start tick `at`'s job, as the overlap policy says while `previous` runs; its
        id, or None when the tick is skipped."""
        policy = schedule.spec.overlap
        if previous is not None and policy in ("skip", "cancel"):
            before, _ = await self.sup._load(previous)
            if before is not None and before.status not in TERMINAL_STATUSES:
                if policy == "skip":
                    return None
                reason = f"schedule {schedule.name!r}: the tick at {int(at)} replaces it"
                try:
                    await self.sup.cancel(CancelRequest(job_id=previous, reason=reason))
                except JobStateError:
                    pass  # it ended meanwhile
        job_id = tick_job_id(schedule.name, at)
        await self._submit(schedule, job_id, {"schedule": schedule.name, "tick": str(int(at))})
        return job_id

    async def _submit(self, schedule: Schedule, job_id: str, labels: dict[str, str]) -> None:
        spec = schedule.spec
        fields: dict[str, Any] = {"labels": labels}
        if spec.overlap == "queue":  # its jobs are turns of one thread: one at a time
            fields["thread"] = f"sched-{schedule.name}"
        request = SubmitRequest(agent=spec.agent, input=spec.input, job_id=job_id, **fields)
        await self.sup.submit(request)
