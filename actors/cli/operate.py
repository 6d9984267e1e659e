"""`rig top`, `rig ps`, `rig dlq`, `rig webhooks`, `rig ledger`: watching a deployment and
repairing what it could not do alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.cli.common import (
    EXIT_OK,
    ago,
    help_of,
    json_value,
    parse_duration,
    print_json,
    table,
    usage_error,
    with_client,
)
from actors.runtime.loop import run_async
from actors.runtime.settings import RigConfig

if TYPE_CHECKING:  # each command imports what it needs: `rig --help` starts at once
    from actors.runtime.client import RigClient


def add(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Add this family's verbs to `rig`'s parser (`common`: the options every verb takes)."""
    top = verbs.add_parser(
        "top",
        parents=[common],
        help="a live view: throughput, jobs by status, queues, each process's rates",
        description="Redrawn every second from what the deployment answers: every "
        "process's counters (as `rig ps` reads them), the work stream's consumers "
        "(pending, in work, redelivered) and the jobs by status (counted from the job "
        "index, every --jobs-every seconds). Ctrl-C stops it.",
    )
    top.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    top.add_argument("--frames", type=int, help="stop after N frames (default: run until Ctrl-C)")
    top.add_argument(
        "--jobs-every", type=float, default=5.0, metavar="S", help="count the jobs every S seconds"
    )
    top.set_defaults(run=_top)
    dlq = verbs.add_parser(
        "dlq",
        help="list and replay dead letters",
        description="Messages an actor could not accept, kept with the reason.",
    )
    dlq.set_defaults(run=help_of(dlq))
    dlq_verbs = dlq.add_subparsers(title="commands", metavar="COMMAND")
    dlq_ls = dlq_verbs.add_parser("ls", parents=[common], help="list dead letters, oldest first")
    dlq_ls.add_argument("--limit", type=int, default=100, help="the newest N (default 100)")
    dlq_ls.set_defaults(run=_dlq_ls)
    replay = dlq_verbs.add_parser(
        "replay",
        parents=[common],
        help="publish a dead letter's message again",
        description="Publish the original message of dead letter ID (from `rig dlq ls`) to "
        "its subject again, then delete the letter (unless --keep).",
    )
    replay.add_argument("letter_id", metavar="ID", type=int)
    replay.add_argument("--keep", action="store_true", help="keep the dead letter")
    replay.set_defaults(run=_dlq_replay)
    ps = verbs.add_parser(
        "ps",
        parents=[common],
        help="list the live actor processes",
        description="Asks every actor process of this deployment (RIG_PREFIX) what it is "
        "and what it counted (a broadcast each answers on <prefix>.actors.stats), and lists "
        "the answers that come within --listen seconds.",
    )
    ps.add_argument("--kind", help="only this kind: supervisor, agent, tools, verifier, gateway")
    ps.add_argument(
        "--listen",
        type=float,
        default=2.0,
        metavar="S",
        help="wait at most S seconds for answers (default 2; it stops once they stop)",
    )
    ps.set_defaults(run=_ps)
    webhooks = verbs.add_parser(
        "webhooks",
        help="what became of the jobs' webhooks",
        description="Webhooks are POSTed by `rig gateway` when a job submitted with one ends "
        "or waits for a person: retried with backoff, then dead-lettered (`rig dlq ls`).",
    )
    webhooks.set_defaults(run=help_of(webhooks))
    webhooks_verbs = webhooks.add_subparsers(title="commands", metavar="COMMAND")
    webhooks_ls = webhooks_verbs.add_parser(
        "ls", parents=[common], help="list webhooks, newest first: delivered, retrying, dead"
    )
    webhooks_ls.add_argument("--job", metavar="JOB", help="only the webhooks of JOB")
    webhooks_ls.add_argument(
        "--failed", action="store_true", help="only those not delivered (retrying or dead)"
    )
    webhooks_ls.add_argument("--limit", type=int, default=100, help="the newest N (default 100)")
    webhooks_ls.set_defaults(run=_webhooks_ls)
    ledger = verbs.add_parser(
        "ledger",
        help="inspect and prune the tool-call ledger",
        description="The idempotency ledger: this host's ($RIG_HOME/ledger.sqlite3, or "
        "--file), or with RIG_LEDGER=cluster the cluster's (its replicated bucket, as the "
        "admin).",
    )
    ledger.set_defaults(run=help_of(ledger))
    ledger_verbs = ledger.add_subparsers(title="commands", metavar="COMMAND")
    file_option = argparse.ArgumentParser(add_help=False)
    file_option.add_argument(
        "--file", type=Path, help="the ledger file (default: $RIG_HOME/ledger.sqlite3)"
    )
    ls = ledger_verbs.add_parser(
        "ls", parents=[common, file_option], help="list records, newest first"
    )
    ls.add_argument("--state", choices=["in_progress", "succeeded", "failed", "unknown"])
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(run=_ledger_ls)
    show = ledger_verbs.add_parser("show", parents=[common, file_option], help="one record")
    show.add_argument("key", metavar="KEY")
    show.set_defaults(run=_ledger_show)
    settle_cmd = ledger_verbs.add_parser(
        "settle",
        parents=[common, file_option],
        help="say whether an unknown call's effect happened",
        description="Settle a record in state unknown (its run died mid-call and the tool "
        "has no reconcile): --happened RESULT records the result, so the call answers "
        "from it; --not-happened lets the call run again. Then resolve the parked job "
        "(`rig resolve`), or let its next call proceed.",
    )
    settle_cmd.add_argument("key", metavar="KEY")
    outcome = settle_cmd.add_mutually_exclusive_group(required=True)
    outcome.add_argument(
        "--happened", metavar="JSON|@FILE|-", help="it happened; this is its result (JSON)"
    )
    outcome.add_argument("--not-happened", action="store_true", help="it did not happen")
    settle_cmd.add_argument(
        "--by", default=os.environ.get("USER", ""), help="who says so (default $USER)"
    )
    settle_cmd.set_defaults(run=_ledger_settle)
    prune_cmd = ledger_verbs.add_parser(
        "prune",
        parents=[common, file_option],
        help="delete finished records of ended jobs, older than a duration",
        description="Delete succeeded and failed records not updated for DURATION (e.g. 30d, "
        "12h, 90m, 3600s) whose job has ended (the deployment is asked, as the admin: a "
        "job still running or parked for a person may take the same call again). "
        "In-progress and unknown records are never deleted.",
    )
    prune_cmd.add_argument("--older-than", required=True, metavar="DURATION")
    prune_cmd.set_defaults(run=_ledger_prune)


def _top(args: argparse.Namespace) -> int:
    from actors.cli.top import render, run_top

    prefix = RigConfig.from_env().names.prefix
    if not 0.2 <= args.interval <= 3600:
        raise usage_error("--interval must be from 0.2 to 3600 seconds")
    if args.frames is not None and args.frames < 1:
        raise usage_error("--frames must be at least 1")
    live = sys.stdout.isatty() and not args.json

    def draw(now: Any, before: Any) -> None:
        if args.json:
            print_json(now.to_dict(before))
            return
        frame = render(now, before, prefix)
        if live:  # home, clear the screen, draw
            print("\x1b[H\x1b[2J" + frame, flush=True)
        else:
            print(frame + "\n", flush=True)

    async def go(rig: RigClient) -> None:
        await run_top(
            rig, interval=args.interval, frames=args.frames, jobs_every=args.jobs_every, draw=draw
        )

    with_client(go, role="admin")
    return EXIT_OK


def _dlq_ls(args: argparse.Namespace) -> int:
    letters = with_client(lambda rig: rig.dead_letters(limit=args.limit), role="admin")
    if args.json:
        print_json(
            [
                {
                    "id": seq,
                    **letter.model_dump(mode="json", exclude={"data"}),
                    "size": len(letter.data),
                }
                for seq, letter in letters
            ]
        )
        return EXIT_OK
    if not letters:
        print("no dead letters")
    for seq, letter in letters:
        print(f"{seq:<6} {ago(letter.ts):>8} ago  {letter.actor}  {letter.subject}")
        print(
            f"       {letter.error.get('code')}: {letter.reason}  ({letter.deliveries} deliveries)"
        )
    return EXIT_OK


def _dlq_replay(args: argparse.Namespace) -> int:
    letter = with_client(lambda rig: rig.replay(args.letter_id, keep=args.keep), role="admin")
    if args.json:
        print_json({"id": args.letter_id, "subject": letter.subject, "kept": args.keep})
    else:
        print(f"replayed dead letter {args.letter_id} to {letter.subject}")
    return EXIT_OK


def _ps(args: argparse.Namespace) -> int:
    if not 0 < args.listen <= 60:
        raise usage_error("--listen must be more than 0 and at most 60 seconds")
    found = with_client(lambda rig: rig.actors(listen=args.listen))
    if args.kind:
        found = [actor for actor in found if actor.kind == args.kind]
    if args.json:
        print_json([actor.to_dict() for actor in found])
        return EXIT_OK
    if not found:
        print("no live actors" + (f" of kind {args.kind}" if args.kind else ""))
        return EXIT_OK
    rows = [
        (
            actor.kind,
            ",".join(actor.serves) or "-",
            f"{actor.host}:{actor.pid}",
            *(str(actor.counts.get(name, 0)) for name in _PS_COUNTS),
        )
        for actor in found
    ]
    header = ("KIND", "SERVES", "HOST:PID", "HANDLED", "RETRIED", "ERRORS", "DEAD")
    for line in table(rows, header=header, right=range(3, 7)):
        print(line)
    return EXIT_OK


_PS_COUNTS = ("handled", "retried", "errors", "dead_letters")


def _webhooks_ls(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise usage_error("--limit must be at least 1")
    records = with_client(lambda rig: rig.webhooks(job_id=args.job))
    if args.failed:
        records = [record for record in records if record.state != "delivered"]
    records = records[: args.limit]
    if args.json:
        print_json([record.model_dump(mode="json") for record in records])
        return EXIT_OK
    if not records:
        print("no webhooks" + (" not delivered" if args.failed else ""))
    for record in records:
        answer = f"HTTP {record.http_status}" if record.http_status else "no answer"
        print(
            f"{record.webhook_id}  {ago(record.ts):>4} ago  {record.type:<22} {record.state:<11}"
            f" {record.attempts} attempt{'s' if record.attempts != 1 else ''}  {answer}  "
            f"{record.url}"
        )
        if record.error and record.state != "delivered":
            print(f"    {record.error}")
    return EXIT_OK


def _in_cluster(args: argparse.Namespace) -> bool:
    """Whether `rig ledger` works on the cluster's ledger (`RIG_LEDGER=cluster`, no
    `--file`): through NATS, as the admin."""
    return args.file is None and RigConfig.from_env().ledger == "cluster"


def _ledger_file(args: argparse.Namespace) -> Path:
    path = args.file or RigConfig.from_env().home / "ledger.sqlite3"
    if not path.exists():
        raise usage_error(f"no ledger at {path} (set RIG_HOME or --file)")
    return Path(path)


def _record_json(record: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(record)


def _ledger_ls(args: argparse.Namespace) -> int:
    from actors.tools.cluster import list_claims
    from actors.tools.ledger import list_records

    if _in_cluster(args):
        records = with_client(
            lambda rig: list_claims(rig.js, rig.names, limit=args.limit, state=args.state),
            role="admin",
        )
    else:
        records = run_async(
            list_records(_ledger_file(args), limit=args.limit, state=args.state), fast=False
        )
    if args.json:
        print_json([_record_json(r) for r in records])
        return EXIT_OK
    rows = [(r.key[:16], r.state, f"epoch {r.epoch}", r.tool, f"job {r.job_id}") for r in records]
    for line in table(rows):
        print(line)
    return EXIT_OK


def _ledger_show(args: argparse.Namespace) -> int:
    from actors.tools.cluster import get_claim
    from actors.tools.ledger import get_record

    if _in_cluster(args):
        record = with_client(lambda rig: get_claim(rig.js, rig.names, args.key), role="admin")
    else:
        record = run_async(get_record(_ledger_file(args), args.key), fast=False)
    if record is None:
        raise usage_error(f"no record with key {args.key!r}")
    if args.json:
        print_json(_record_json(record))
    else:
        for name, value in _record_json(record).items():
            print(f"{name:<12} {json.dumps(value) if isinstance(value, dict) else value}")
    return EXIT_OK


def _ledger_settle(args: argparse.Namespace) -> int:
    from actors.tools.cluster import settle_claim
    from actors.tools.ledger import settle

    result = json_value(args.happened, "--happened") if args.happened is not None else None
    answer = {"happened": not args.not_happened, "result": result, "by": args.by}
    try:
        if _in_cluster(args):
            record = with_client(
                lambda rig: settle_claim(rig.js, rig.names, args.key, **answer), role="admin"
            )
        else:
            record = run_async(settle(_ledger_file(args), args.key, **answer), fast=False)
    except ValueError as exc:
        raise usage_error(f"cannot settle {args.key!r}: {exc}") from None
    if args.json:
        print_json(_record_json(record))
    else:
        print(f"{record.key[:16]}  {record.state}  ({record.owner})")
    return EXIT_OK


def _ledger_prune(args: argparse.Namespace) -> int:
    from actors.tools.cluster import jobs_ended, prune_claims
    from actors.tools.ledger import prune

    seconds = parse_duration(args.older_than, zero=True)
    if _in_cluster(args):
        deleted = with_client(
            lambda rig: prune_claims(
                rig.js, rig.names, older_than=seconds, retention=rig.config.retention
            ),
            role="admin",
        )
    else:
        path = _ledger_file(args)  # the deployment says which jobs have ended

        async def ended(rig: RigClient, job_ids: set[str]) -> set[str]:
            return (await jobs_ended(rig.js, rig.names, job_ids))[0]

        deleted = with_client(
            lambda rig: prune(path, older_than=seconds, ended=lambda ids: ended(rig, ids)),
            role="admin",
        )
    if args.json:
        print_json({"deleted": deleted, "older_than_s": seconds})
    else:
        print(f"deleted {deleted} finished record(s) older than {args.older_than}")
    return EXIT_OK
