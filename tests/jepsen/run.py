"""A Jepsen-style run: Rig on three hosts, a workload, a nemesis, a history and a verdict.

    scripts/jepsen [--time 5m] [--faults partition,kill,...] [--together] [--seed N]
                   [--profile always|default] [--rate JOBS_PER_S] [--out DIR]
    scripts/jepsen --replay DIR     # the same run again: its seed, faults and options
    scripts/jepsen --check DIR      # the checker again, on what a run saved

A run saves everything to its folder (`--out`, default `.jepsen/<seed>-<time>`):
options.json, plan.json (the faults), history.jsonl, bank.jsonl, jobs.json,
journals.json and verdict.json (suspects.json and stuck.json when a job gives cause);
the hosts' logs and the servers' folders are under work/. Exit 0 when the
verdict is valid, 1 when a promise broke, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nats.js.api import DeliverPolicy

from actors.runtime.client import RigClient
from protocols import (
    TERMINAL_STATUSES,
    Event,
    JobSnapshot,
    RigError,
    UnknownJobError,
    decode_as,
)
from tests.jepsen.checker import Verdict, check_folder
from tests.jepsen.cluster import ROOT, Cluster, cluster_on_hosts
from tests.jepsen.hosts import can_make_hosts
from tests.jepsen.nemesis import KINDS, Nemesis, plan
from tests.jepsen.workload import History, Workload


@dataclass(frozen=True)
class Options:
    seed: int
    seconds: float = 90.0  # of workload and faults
    kinds: tuple[str, ...] = KINDS
    together: bool = True  # faults overlap
    profile: str = "always"
    rate: float = 3.0  # submits per second
    settle_s: float = 90.0  # the bound on reaching an end once the faults stopped


async def run(options: Options, folder: Path) -> Verdict:
    """One run; everything it saw is saved in `folder`, then checked from there."""
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} holds a run already: give another folder")
    folder.mkdir(parents=True, exist_ok=True)
    faults = plan(options.seed, options.seconds, options.kinds, together=options.together)
    (folder / "options.json").write_text(json.dumps(asdict(options), indent=2) + "\n")
    (folder / "plan.json").write_text(json.dumps([asdict(f) for f in faults], indent=1) + "\n")
    history = History(folder / "history.jsonl")
    try:
        async with cluster_on_hosts(
            folder / "work", profile=options.profile, seed=options.seed
        ) as cluster:
            assert cluster.client is not None
            rng = random.Random(options.seed)
            workload = Workload(cluster.client, history, rng, options.rate)
            nemesis = Nemesis(cluster, history)
            began = time.time()
            doing = asyncio.create_task(nemesis.run(faults))
            await workload.run(options.seconds)
            doing.cancel()  # no fault starts from now on (before healing, not after)
            await asyncio.gather(doing, return_exceptions=True)
            await nemesis.heal()  # what is still on when the workload stops
            healed = time.time()
            settled = await _settle(cluster.client, workload.submitted, options.settle_s)
            times = {"began": began, "healed": healed, "settled_s": round(settled, 1)}
            await _save(cluster, workload.submitted, folder, times)
    finally:
        history.close()
    verdict = check_folder(folder)
    (folder / "verdict.json").write_text(json.dumps(verdict.as_json(), indent=1) + "\n")
    return verdict


UNANSWERED = "unanswered"  # the status of a job the cluster would not tell of in time


async def _statuses(
    client: RigClient, job_ids: list[str], patience: float = 30.0
) -> dict[str, dict[str, Any] | None]:
    """Each job's status (None: no such job), asked again for up to `patience` seconds
    while the cluster does not answer."""
    bound = asyncio.Semaphore(16)

    async def one(job_id: str) -> dict[str, Any] | None:
        give_up = time.monotonic() + patience
        async with bound:
            while True:
                try:
                    info = await client.status(job_id)
                except UnknownJobError:
                    return None
                except (RigError, TimeoutError) as exc:
                    if time.monotonic() > give_up:
                        return {"status": UNANSWERED, "state": None, "reason": str(exc)}
                    await asyncio.sleep(0.5)  # a cluster that just healed: ask again
                    continue
                reason = info.waiting.reason if info.waiting is not None else None
                return {"status": info.status, "state": info.state, "reason": reason}

    found = await asyncio.gather(*(one(job_id) for job_id in job_ids))
    return dict(zip(job_ids, found, strict=True))


def _settled(job: dict[str, Any] | None) -> bool:
    return job is None or job["status"] in (*TERMINAL_STATUSES, "waiting_human")


async def _settle(client: RigClient, job_ids: list[str], bound: float) -> float:
    """Wait, up to `bound` seconds, until every job is terminal or waits for a person and
    its journal says so last; how long that took. (A job's snapshot is written before the
    events its transition publishes: a supervisor cut off just after the write sends them
    when its publish times out and is tried again, seconds later.)"""
    began = time.monotonic()
    waiting = list(dict.fromkeys(job_ids))
    while waiting and time.monotonic() < began + bound:
        statuses = await _statuses(client, waiting)
        waiting = [job_id for job_id, job in statuses.items() if not _settled(job)]
        told = {job_id: job["status"] for job_id, job in statuses.items() if job and _settled(job)}
        said = await _journals_say(client, list(told))
        waiting += [job_id for job_id, status in told.items() if said[job_id] != status]
        if waiting:
            await asyncio.sleep(1.0)
    return time.monotonic() - began


async def _journals_say(client: RigClient, job_ids: list[str]) -> dict[str, str | None]:
    """The status each job's journal says last (its last event, from the stream's
    leader), None when that is not a status or cannot be read now."""
    js = client.nc.jetstream()
    bound = asyncio.Semaphore(16)

    async def one(job_id: str) -> str | None:
        async with bound:
            try:
                event, _seq = await _last_event(client, js, job_id)
            except Exception:  # no event yet, or the cluster did not answer: not yet
                return None
            return event.data.get("status") if event.type == "status" else None

    said = await asyncio.gather(*(one(job_id) for job_id in job_ids))
    return dict(zip(job_ids, said, strict=True))


async def _last_event(client: RigClient, js: Any, job_id: str) -> tuple[Event, int]:
    """The job's last journal event, read from the stream's leader, and its sequence."""
    msg = await js.get_last_msg(client.names.events_stream, client.names.events(job_id))
    return decode_as(Event, msg.data or b"")[0], msg.seq


async def _stored(kv: Any, job_id: str) -> tuple[JobSnapshot, int]:
    """The job's stored snapshot and its revision."""
    entry = await kv.get(job_id)
    return decode_as(JobSnapshot, entry.value or b"")[0], entry.revision


async def _save(
    cluster: Cluster, job_ids: list[str], folder: Path, times: dict[str, float]
) -> None:
    assert cluster.client is not None
    unique = list(dict.fromkeys(job_ids))
    jobs = await _statuses(cluster.client, unique)
    journals = await _journals(cluster.client, set(unique))
    (folder / "jobs.json").write_text(json.dumps(jobs, indent=0) + "\n")
    (folder / "journals.json").write_text(json.dumps(journals) + "\n")
    with (folder / "bank.jsonl").open("w") as out:
        for request in cluster.bank.requests:
            out.write(json.dumps(request) + "\n")
    (folder / "times.json").write_text(json.dumps(times) + "\n")
    suspects = await _read_again(cluster.client, jobs, journals)
    if suspects:
        (folder / "suspects.json").write_text(json.dumps(suspects, indent=1) + "\n")
    stuck = await _stuck_state(cluster.client, jobs)
    if stuck:
        (folder / "stuck.json").write_text(json.dumps(stuck, indent=1) + "\n")


async def _stuck_state(client: RigClient, jobs: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """For the jobs that had not settled: what their stored snapshots wait for (phase,
    step, timers' inputs, the cause and outbox of their last transition), and the state
    of every consumer of the work stream (delivered, acknowledged, pending), which says
    whether a message that would move them is still on its way (seed 9: a timer the
    servers had dropped from the timer consumer's pending set)."""
    waiting = [job_id for job_id, job in jobs.items() if job is not None and not _settled(job)]
    if not waiting:
        return {}
    js = client.nc.jetstream()
    found: dict[str, Any] = {"jobs": {}, "consumers": {}}
    kv = await js.key_value(client.names.jobs_bucket)
    for job_id in waiting:
        try:
            snapshot, _revision = await _stored(kv, job_id)
            found["jobs"][job_id] = snapshot.model_dump(
                mode="json",
                include={
                    "status",
                    "state",
                    "phase",
                    "step",
                    "signal",
                    "deadline",
                    "updated_at",
                    "event_seq",
                    "stall_arm",
                    "cause",
                },
            ) | {"outbox": [o.msg_id for o in snapshot.outbox]}
        except Exception as exc:  # what the server said is the finding
            found["jobs"][job_id] = {"error": repr(exc)}
    try:
        for info in await js.consumers_info(client.names.work_stream):
            found["consumers"][info.name] = {
                "delivered_stream_seq": info.delivered and info.delivered.stream_seq,
                "ack_floor_stream_seq": info.ack_floor and info.ack_floor.stream_seq,
                "num_ack_pending": info.num_ack_pending,
                "num_pending": info.num_pending,
                "num_redelivered": info.num_redelivered,
            }
    except Exception as exc:
        found["consumers"] = {"error": repr(exc)}
    return found


async def _read_again(
    client: RigClient,
    jobs: dict[str, dict[str, Any] | None],
    journals: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """For each job whose journal, as read, does not end as the job did: its last event
    and the stream's state as the stream's leader tells them now, one by one (was the
    event lost, or only missed by the read?)."""
    js = client.nc.jetstream()
    kv = await js.key_value(client.names.jobs_bucket)
    found: dict[str, Any] = {}
    for job_id, job in jobs.items():
        said = [e["data"].get("status") for e in journals.get(job_id, []) if e["type"] == "status"]
        if job is None or job["status"] not in (*TERMINAL_STATUSES, "waiting_human"):
            continue
        if said and said[-1] == job["status"]:
            continue
        try:
            event, seq = await _last_event(client, js, job_id)
            last = event.model_dump(mode="json") | {"seq_in_stream": seq}
        except Exception as exc:  # what the server said is the finding
            last = {"error": repr(exc)}
        try:
            snapshot, revision = await _stored(kv, job_id)
            stored = {
                "event_seq": snapshot.event_seq,
                "cause": snapshot.cause,
                "revision": revision,
                "outbox": [(o.subject, o.msg_id) for o in snapshot.outbox],
            }
        except Exception as exc:
            stored = {"error": repr(exc)}
        found[job_id] = {
            "job": job,
            "journal_read": len(journals.get(job_id, [])),
            "last": last,
            "snapshot": stored,
        }
    return found


async def _journals(client: RigClient, job_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Every event of these jobs, read from the journal's stream in order."""
    js = client.nc.jetstream()
    last = (await js.stream_info(client.names.events_stream)).state.last_seq
    found: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in job_ids}
    if not last:
        return found
    sub = await js.subscribe(
        client.names.events_all, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    try:
        while True:
            msg = await sub.next_msg(timeout=30)
            event = decode_as(Event, msg.data)[0].model_dump(mode="json")
            if event["job_id"] in found:
                found[event["job_id"]].append(event)
            if msg.metadata.sequence.stream >= last:
                return found
    finally:
        await sub.unsubscribe()


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r}: a duration such as 90s, 5m or 1h") from None


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"fault kinds are {', '.join(KINDS)}; not {unknown}")
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/jepsen",
        description="Rig on three hosts (network namespaces) under a nemesis; the history "
        "checked against Rig's promises (docs/design/jepsen.md). Needs root.",
    )
    parser.add_argument(
        "--time",
        type=_duration,
        default=90.0,
        help="how long the workload and faults run (90s, 30m)",
    )
    parser.add_argument(
        "--faults",
        type=_kinds,
        default=KINDS,
        help=f"comma-separated kinds (default all: {','.join(KINDS)})",
    )
    parser.add_argument(
        "--together",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="let faults overlap (default)",
    )
    parser.add_argument("--seed", type=int, help="the plan's seed (default: random, printed)")
    parser.add_argument(
        "--profile",
        choices=("always", "default"),
        default="always",
        help="the servers' sync_interval: always (shipped) or nats-server's default",
    )
    parser.add_argument("--rate", type=float, default=3.0, help="jobs submitted per second")
    parser.add_argument(
        "--settle",
        type=_duration,
        default=90.0,
        help="the bound on every job reaching an end (and its journal saying so) once faults stop",
    )
    parser.add_argument("--out", type=Path, help="the run's folder (default .jepsen/<seed>-<time>)")
    parser.add_argument(
        "--replay", type=Path, metavar="DIR", help="run again with a saved run's options"
    )
    parser.add_argument(
        "--check", type=Path, metavar="DIR", help="check a saved run again; run nothing"
    )
    parser.add_argument(
        "--each",
        action="store_true",
        help="a run per fault kind alone, then one of them all together; a table of verdicts",
    )
    args = parser.parse_args(argv)
    if args.check is not None:
        if not (args.check / "history.jsonl").exists():
            parser.error(f"{args.check} holds no saved run (no history.jsonl)")
        verdict = check_folder(args.check)
        print(verdict.summary())
        return 0 if verdict.valid else 1
    why = can_make_hosts()
    if why is not None:
        parser.error(why)
    if args.replay is not None:
        saved = args.replay / "options.json"
        if not saved.exists():
            parser.error(f"{args.replay} holds no saved run (no options.json)")
        given = json.loads(saved.read_text())
        options = Options(**(given | {"kinds": tuple(given["kinds"])}))
    else:
        seed = args.seed if args.seed is not None else random.randrange(1 << 31)
        options = Options(
            seed, args.time, args.faults, args.together, args.profile, args.rate, args.settle
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = args.out or ROOT / ".jepsen" / f"{options.seed}-{stamp}"
    if folder.exists() and any(folder.iterdir()):
        parser.error(f"{folder} holds a run already: give another --out")
    if args.each:
        return _each(options, folder)
    kinds = ",".join(options.kinds)
    print(
        f"jepsen: seed {options.seed}, {options.seconds:g} s, faults {kinds}, "
        f"profile {options.profile}; saving to {folder}",
        flush=True,
    )
    verdict = asyncio.run(run(options, folder))
    print(verdict.summary())
    print(f"replay: scripts/jepsen --replay {folder}")
    return 0 if verdict.valid else 1


def _each(options: Options, folder: Path) -> int:
    """Each kind alone (not overlapping), then all of them together: a table row each."""
    runs = [
        (kind, dataclasses.replace(options, kinds=(kind,), together=False))
        for kind in options.kinds
    ]
    runs.append(("all together", dataclasses.replace(options, together=True)))
    print(
        f"seed {options.seed}, {options.seconds:g} s each, profile {options.profile}; in {folder}"
    )
    print(
        "| faults | faults done | jobs | payments | submits ok / fail / info | settled in "
        "| verdict |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    valid = True
    for name, each in runs:
        verdict = asyncio.run(run(each, folder / name.replace(" ", "-")))
        valid = valid and verdict.valid
        c = verdict.counts
        submits = " / ".join(str(c.get(f"submit {t}", 0)) for t in ("ok", "fail", "info"))
        said = "valid" if verdict.valid else verdict.summary()
        print(
            f"| {name} | {c['faults']} | {c['jobs']} | {c['payments']} | {submits} "
            f"| {c.get('settled_s', '?')} s | {said} |",
            flush=True,
        )
    return 0 if valid else 1


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM tears the hosts down as Ctrl-C does


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
