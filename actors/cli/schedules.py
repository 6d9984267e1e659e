"""`rig schedule`: jobs of an agent started on a clock.

rig schedule add nightly --agent reconcile --input '{}' --cron "0 2 * * *" --tz Europe/Berlin
rig schedule add triage --agent triage --input '{}' --every 15m --overlap queue
rig schedule ls
rig schedule pause nightly | resume nightly | trigger nightly | delete nightly
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from actors.cli.common import (
    EXIT_OK,
    ago,
    help_of,
    json_object,
    parse_duration,
    print_json,
    table,
    usage_error,
    with_client,
)

if TYPE_CHECKING:  # each command imports what it needs: `rig --help` starts at once
    from protocols._schedules import Schedule


def add(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Add `rig schedule` to `rig`'s parser (`common`: the options every verb takes)."""
    schedule = verbs.add_parser(
        "schedule",
        help="run an agent on a clock: add, ls, show, pause, resume, trigger, delete",
        description="A schedule starts one job of an agent per tick (a cron expression, or "
        "every N seconds), exactly once per tick whatever the supervisors do: the job's id "
        "is the schedule's name and the tick's time.",
    )
    schedule.set_defaults(run=help_of(schedule))
    ops = schedule.add_subparsers(title="commands", metavar="COMMAND")
    added = ops.add_parser(
        "add",
        parents=[common],
        help="add a schedule (or replace one of the same name)",
        description="Add schedule NAME: a job of --agent with --input at each tick. Adding "
        "a name again replaces its schedule; its pending tick is void.",
    )
    added.add_argument("name", metavar="NAME")
    added.add_argument("--agent", required=True, help="the agent whose jobs it starts")
    added.add_argument("--input", default="{}", metavar="JSON|@FILE|-", help="each job's input")
    clock = added.add_mutually_exclusive_group(required=True)
    clock.add_argument("--cron", metavar="EXPR", help='e.g. "0 * * * *" (6 fields: seconds first)')
    clock.add_argument("--every", metavar="DURATION", help="e.g. 15m, 1h, 30s")
    added.add_argument("--tz", default="UTC", help="the cron's time zone (IANA), default UTC")
    added.add_argument("--start", metavar="ISO", help="no tick before (e.g. 2027-01-01T00:00Z)")
    added.add_argument("--end", metavar="ISO", help="no tick after")
    added.add_argument("--jitter", metavar="DURATION", help="fire each tick up to this much later")
    added.add_argument(
        "--missed",
        choices=["skip", "once", "all"],
        default="skip",
        help="ticks found late (the deployment was down): skip them (default), run once "
        "for all, or run all (at most --catch-up)",
    )
    added.add_argument("--catch-up", type=int, default=10, metavar="N", help="with --missed all")
    added.add_argument(
        "--overlap",
        choices=["skip", "queue", "cancel", "allow"],
        default="skip",
        help="while the previous tick's job runs: skip this tick (default), queue it, "
        "cancel the previous, or allow both",
    )
    added.set_defaults(run=_add)
    ls = ops.add_parser("ls", parents=[common], help="list the schedules")
    ls.set_defaults(run=_ls)
    for verb, what in (
        ("show", "one schedule, and what its ticks did"),
        ("pause", "stop firing (its pending tick is void)"),
        ("resume", "fire again, from the next tick"),
        ("trigger", "start one job now, whatever the clock says"),
        ("delete", "remove a schedule"),
    ):
        one = ops.add_parser(verb, parents=[common], help=what)
        one.add_argument("name", metavar="NAME")
        one.set_defaults(run=_one, op="get" if verb == "show" else verb)


def _when(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        message = f"{option} {text!r}: give a date and time, e.g. 2027-01-01T02:00Z"
        raise usage_error(message) from None


def _add(args: argparse.Namespace) -> int:
    spec: dict[str, Any] = {
        "agent": args.agent,
        "input": json_object(args.input, "--input"),
        "timezone": args.tz,
        "missed": args.missed,
        "catch_up": args.catch_up,
        "overlap": args.overlap,
    }
    if args.cron is not None:
        spec["cron"] = args.cron
    else:
        every = parse_duration(args.every)
        if every < 1 or every != int(every):
            raise usage_error(f"--every {args.every!r}: a whole number of seconds, 1 s or more")
        spec["every_s"] = int(every)
    if args.jitter is not None:
        spec["jitter_s"] = parse_duration(args.jitter, zero=True)
    for key, option in (("start_at", "--start"), ("end_at", "--end")):
        at = _when(getattr(args, key.split("_")[0]), option)
        if at is not None:
            spec[key] = at
    reply = with_client(lambda rig: rig.schedule("add", args.name, spec))
    return _show(reply.schedules, args.json)


def _ls(args: argparse.Namespace) -> int:
    reply = with_client(lambda rig: rig.schedule("list"))
    if args.json:
        print_json([s.model_dump(mode="json") for s in reply.schedules])
        return EXIT_OK
    rows = [
        [
            s.name,
            s.spec.agent,
            s.spec.cron or f"every {s.spec.every_s} s",
            "paused" if s.paused else _at(s.next_at),
            str(s.fired),
            str(s.skipped),
            s.last_job or "-",
        ]
        for s in reply.schedules
    ]
    header = ["name", "agent", "clock", "next", "fired", "skipped", "last job"]
    for line in table(rows, header=header, right={4, 5}):
        print(line)
    return EXIT_OK


def _one(args: argparse.Namespace) -> int:
    reply = with_client(lambda rig: rig.schedule(args.op, args.name))
    if args.op == "trigger" and not args.json:
        print(f"started {reply.job_id}")
        return EXIT_OK
    return _show(reply.schedules, args.json, job_id=reply.job_id)


def _show(schedules: list[Schedule], as_json: bool, job_id: str | None = None) -> int:
    if as_json:
        found = [s.model_dump(mode="json") for s in schedules]
        print_json(found[0] | ({"job_id": job_id} if job_id else {}) if found else {})
        return EXIT_OK
    for s in schedules:
        clock = s.spec.cron or f"every {s.spec.every_s} s"
        state = "paused" if s.paused else f"next {_at(s.next_at)}"
        print(f"schedule {s.name}: agent {s.spec.agent}, {clock} ({s.spec.timezone}), {state}")
        print(
            f"  missed {s.spec.missed}, overlap {s.spec.overlap}; fired {s.fired}, skipped "
            f"{s.skipped}; last job {s.last_job or '-'}"
        )
        print(f"  input {json.dumps(s.spec.input)[:200]}")
    return EXIT_OK


def _at(when: float | None) -> str:
    if when is None:
        return "-"
    stamp = datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")
    left = when - time.time()
    return f"{stamp} (in {left:.0f} s)" if left >= 0 else f"{stamp} ({ago(when)} ago)"
