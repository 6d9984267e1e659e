"""Timers and leases run on the NATS servers' clock: a process whose own clock jumps, or
that set a timer while its clock was wrong, does not move them (found by the Jepsen
harness's clock fault, seed 20261207: a job's signal timeout set by a supervisor whose
clock ran 229 s ahead fired 229 s late)."""

from __future__ import annotations

import time

import pytest

from actors.jobs.supervisor import timer_due
from actors.runtime.actor import Delivery
from actors.runtime.clock import ServerClock
from protocols import DeadlineCheck, SignalTimeout
from protocols._schedules import ScheduleTick


def stored(at: float) -> Delivery:
    return Delivery("rig.work.timer", {}, "json", 1, 1, at, at)


def test_a_timer_waits_what_its_sender_meant_from_when_the_server_stored_it() -> None:
    # The sender's clock ran 229 s ahead: it meant 15 s.
    check = SignalTimeout(job_id="j", step=2, at=1_000_244.0, armed=1_000_229.0)
    assert timer_due(check, stored(1_000_000.0)) == 1_000_015.0
    # From before `armed` existed, or read with no server time: its own `at`.
    assert timer_due(DeadlineCheck(job_id="j", at=5.0), stored(1.0)) == 5.0
    assert timer_due(check, stored(0.0)) == check.at
    # A schedule's tick is a time of day.
    tick = ScheduleTick(name="n", generation=1, at=10.0, due=11.0)
    assert timer_due(tick, stored(3.0)) == 11.0


def test_the_offset_is_the_smallest_of_the_window_and_a_jump_back_counts_at_once() -> None:
    clock = ServerClock(window=60.0)
    assert clock.offset() == 0.0
    now = time.time()
    clock.observe(now + 0.004, now)  # 4 ms on the way
    clock.observe(now + 2.5, now)  # waited in a backlog: not the clock
    assert clock.offset() == pytest.approx(0.004, abs=1e-6)
    clock.observe(now - 300.0, now)  # this clock jumped back five minutes
    assert clock.offset() == pytest.approx(-300.0)
    assert clock.now() == pytest.approx(time.time() + 300.0, abs=0.5)


def test_a_jump_ahead_counts_once_the_older_offsets_left_the_window() -> None:
    seconds = iter([0.0, 1.0, 2.0, 11.5])
    clock = ServerClock(window=10.0, monotonic=lambda: next(seconds))
    now = time.time()
    clock.observe(now + 0.001, now)
    clock.observe(now + 120.0, now)  # the clock jumped two minutes ahead
    clock.observe(now + 120.0, now)
    assert clock.offset() == pytest.approx(0.001, abs=1e-6)  # not yet: a backlog looks the same
    clock.observe(now + 120.0, now)  # 11.5 s on: the small offset left the window
    assert clock.offset() == pytest.approx(120.0)
