"""When a schedule's ticks fall and which fire (`actors.jobs.schedules`), without NATS."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from actors.jobs.schedules import check_spec, due, jitter, ticks_after
from protocols import SchemaError
from protocols._schedules import Schedule, ScheduleSpec, tick_job_id


def spec(**fields: object) -> ScheduleSpec:
    return ScheduleSpec.model_validate({"agent": "a", **fields})


def test_every_n_seconds_ticks_on_multiples_from_its_start() -> None:
    assert ticks_after(spec(every_s=15), 100.0, 3) == [105.0, 120.0, 135.0]
    assert ticks_after(spec(every_s=15), 105.0) == [120.0]  # strictly after
    assert ticks_after(spec(every_s=10, start_at=1003.0), 0.0, 2) == [1003.0, 1013.0]
    assert ticks_after(spec(every_s=10, end_at=125.0), 100.0, 5) == [110.0, 120.0]


def test_a_cron_ticks_in_its_time_zone_across_a_dst_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    nightly = spec(cron="30 2 * * *", timezone="Europe/Berlin")
    before = datetime(2027, 3, 27, 12, 0, tzinfo=berlin).timestamp()
    ticks = [datetime.fromtimestamp(t, berlin) for t in ticks_after(nightly, before, 3)]
    # 02:30 does not exist on 28 March 2027 (clocks go 02:00 -> 03:00): one tick a day all
    # the same, at 02:30 local on the days that have it.
    assert [t.day for t in ticks] == [28, 29, 30]
    assert [(t.hour, t.minute) for t in ticks[1:]] == [(2, 30), (2, 30)]
    seconds = spec(cron="*/2 * * * * *")  # six fields: seconds first
    assert ticks_after(seconds, 1000.0, 3) == [1002.0, 1004.0, 1006.0]


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"cron": "61 * * * *"}, "cron '61 \\* \\* \\* \\*'"),
        ({"every_s": 5, "timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_a_bad_clock_is_a_typed_error(fields: dict[str, object], words: str) -> None:
    with pytest.raises(SchemaError, match=words):
        check_spec(spec(**fields))


def test_a_spec_names_one_clock() -> None:
    with pytest.raises(ValueError, match="give cron or every_s"):
        spec()
    with pytest.raises(ValueError, match="give cron or every_s"):
        spec(cron="* * * * *", every_s=60)


@pytest.mark.parametrize(
    ("missed", "fired", "skipped"),
    [
        ("all", [100.0, 110.0, 120.0, 130.0], 0),
        ("once", [130.0], 3),
        ("skip", [], 4),  # every one later than the grace
    ],
)
def test_ticks_found_late_fire_by_the_missed_policy(
    missed: str, fired: list[float], skipped: int
) -> None:
    late = Schedule(name="s", spec=spec(every_s=10, missed=missed, grace_s=5))
    assert due(late, 100.0, 136.0) == (fired, skipped, 130.0)  # 130 is 6 s late


def test_a_tick_on_time_fires_and_all_catches_up_at_most_its_bound() -> None:
    on_time = Schedule(name="s", spec=spec(every_s=10))
    assert due(on_time, 100.0, 100.4) == ([100.0], 0, 100.0)
    bounded = Schedule(name="s", spec=spec(every_s=1, missed="all", catch_up=3))
    fire, skipped, newest = due(bounded, 100.0, 1000.0)
    assert fire == [998.0, 999.0, 1000.0] and newest == 1000.0 and skipped == 898


def test_jitter_is_the_same_on_every_replica_and_within_its_spread() -> None:
    spreads = [jitter("s", 100.0 + n, 30.0) for n in range(50)]
    assert spreads == [jitter("s", 100.0 + n, 30.0) for n in range(50)]
    assert all(0 <= j < 30 for j in spreads) and len(set(spreads)) == 50
    assert jitter("s", 100.0, 0) == 0.0
    assert tick_job_id("nightly", 1796631154.7) == "sched-nightly-1796631154"
