"""The timer sweep: the timers the servers lost, sent again.

A job's timers (its deadline, its stall watchdog, a signal's timeout, its concurrency
key's wake-up) and a schedule's chain of ticks wait on the server: messages of
`rig.work.timer` held back by nak-with-delay. A server can lose such a message's place
in its consumer (nats-server 2.15.1 did around a power cut: docs/design/jepsen.md), and
then nothing would ever move the job. So every `RIG_TIMER_SWEEP_S` each supervisor
reads the jobs of its partitions that run or wait to start (`RIG_RUNNING`, a key per
job) and sends again each timer due longer ago than that (`Rules.overdue`); those that take
partition 0 do the same for the schedules' next ticks (`Scheduler.overdue`). A timer's
handler judges it as it would have judged the lost one, and a timer's cause is its
identity: one that did fire after all is applied once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from actors.runtime.metrics import TIMERS_RESENT, child
from actors.runtime.nats import kv_latest
from protocols import FlowTick, Header, RigError, kv_subject, msg_id

if TYPE_CHECKING:
    from actors.jobs.supervisor import Supervisor


class TimerSweep:
    """What a supervisor does to outlive a lost timer (it holds one)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor

    async def run(self) -> None:
        every = self.sup.config.timer_sweep_s
        while True:
            await asyncio.sleep(every)
            try:
                await self.sweep(grace=every)
            except Exception as exc:  # the servers are away: the next sweep tries again
                self.sup.log.warning("timers.sweep_failed", error=repr(exc))

    async def sweep(self, grace: float) -> int:
        """Send again every timer of this replica's share overdue by more than `grace`
        s; how many were sent."""
        names = self.sup.names
        owned = sorted(self.sup._owned)
        sent = 0
        woken: set[str] = set()  # concurrency keys woken: once each, however many wait
        for partition in owned:
            # The keys first, then the jobs: no consumer stays open while snapshots are read.
            keys = kv_latest(self.sup.js, names.running_bucket, f"{partition}.*")
            for job_id in [key.split(".", 1)[1] async for key, _value in keys]:
                sent += await self._job(job_id, grace, woken)
        if 0 in owned:
            sent += await self.sup.scheduler.overdue(grace)
        return sent

    async def _job(self, job_id: str, grace: float, woken: set[str]) -> int:
        try:
            job, _revision = await self.sup._load(job_id)
            if job is None or job.terminal:
                await self._forget(job_id)  # its end's delete was lost, or it expired
                return 0
            rules = self.sup.rules
            timers = [
                timer
                for timer in rules.overdue(job, await self.sup._graph_of(job), grace)
                if not isinstance(timer, FlowTick) or timer.key not in woken
            ]
            woken |= {timer.key for timer in timers if isinstance(timer, FlowTick)}
            for timer in timers:
                again = msg_id(job_id, job.event_seq, f"swept-{timer.kind}-{int(rules.now)}")
                await self.sup.publish(self.sup.names.timer, timer, msg_id=again)
                child(TIMERS_RESENT, timer.kind).inc()
        except RigError as exc:  # an unreadable snapshot, an agent gone: said, not fatal
            self.sup.log.warning("timers.job_unswept", job_id=job_id, error=exc.message)
            return 0
        if timers:
            kinds = [timer.kind for timer in timers]
            self.sup.log.warning("timers.resent", job_id=job_id, timers=kinds, status=job.status)
        return len(timers)

    async def _forget(self, job_id: str) -> None:
        names = self.sup.names
        headers = {Header.KV_OPERATION: "DEL", Header.TTL: str(int(self.sup.config.retention))}
        subject = kv_subject(names.running_bucket, names.running_key(job_id))
        await self.sup.js.publish(subject, b"", headers=headers)
