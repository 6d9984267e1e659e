"""What every family of `rig` commands shares: exit codes, the client connection, the
way a result and an error are printed, and the parsing of durations, JSON and budgets."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.runtime.loop import run_async
from actors.runtime.settings import RigConfig, seconds_of
from protocols import (
    Event,
    JobInfo,
    RigError,
    SchemaError,
    loads,
)

if TYPE_CHECKING:  # each command imports what it needs: `rig --help` starts at once
    from actors.runtime.client import RigClient

EXIT_OK, EXIT_JOB_NOT_SUCCEEDED, EXIT_ERROR, EXIT_WAITING = 0, 1, 2, 3
EXIT_FOUND = 1  # a check that found problems (`rig graph --lint`)
# What a shell reports for a program a closed pipe stopped (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141


def help_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """For a verb given without its sub-verb: show that verb's help, exit 2."""

    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_ERROR

    return show


def exit_for(status: str) -> int:
    if status == "succeeded":
        return EXIT_OK
    return EXIT_WAITING if status == "waiting_human" else EXIT_JOB_NOT_SUCCEEDED


def limits_of(args: argparse.Namespace) -> dict[str, Any]:
    """The budget options given on the command line, as submit/resolve keywords."""
    limits = {
        "max_steps": args.max_steps,
        "max_tokens": args.max_tokens,
        "max_cost": args.max_cost,
        "deadline_s": parse_duration(args.deadline) if args.deadline else None,
        "max_visits": args.max_visits,
        "max_reasks": args.max_reasks,
        "stall_s": parse_duration(args.stall) if args.stall else None,
    }
    return {name: value for name, value in limits.items() if value is not None}


def json_object(text: str, option: str) -> dict[str, Any]:
    """A JSON object given inline, as `@FILE`, or as `-` (stdin). Validation of what it
    holds (finite numbers, depth) is the request's, the same for every client."""
    value = json_value(text, option)
    if not isinstance(value, dict):
        raise usage_error(f"{option} must be a JSON object")
    return value


def json_value(text: str, option: str) -> Any:
    """Any JSON value given inline, as `@FILE`, or as `-` (stdin)."""
    if text == "-":
        raw = sys.stdin.buffer.read()
        source = f"{option} (stdin)"
    elif text.startswith("@"):
        try:
            raw = Path(text[1:]).read_bytes()
        except OSError as exc:
            raise usage_error(
                f"{option}: cannot read {text[1:]!r}: {exc.strerror or exc}"
            ) from None
        source = f"{option} ({text[1:]})"
    else:
        try:
            raw = text.encode()
        except UnicodeEncodeError:
            raise usage_error(f"{option} is not valid UTF-8 text") from None
        source = option
    try:
        value = loads(raw.decode())
    except UnicodeDecodeError:
        raise usage_error(f"{source} is not valid UTF-8 text") from None
    except RecursionError:
        raise SchemaError(f"{source} nests too deep") from None
    except ValueError as exc:
        raise usage_error(f"{source} is not JSON: {exc}") from None
    return value


def ago(ts: float) -> str:
    seconds = max(time.time() - ts, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def parse_duration(text: str, *, zero: bool = False) -> float:
    """`30d`, `12h`, `90m`, `45s` or a plain number of seconds; finite, and positive
    unless `zero` allows 0."""
    try:
        return seconds_of(text, zero=zero)
    except ValueError as exc:
        raise usage_error(str(exc)) from None


def load_actor_class(target: str) -> type:
    """Import `MODULE:CLASS` and check it is an Actor; a usage error otherwise."""
    from actors.deploy.up import UpConfigError, load_actor_class

    try:
        return load_actor_class(target)
    except UpConfigError as exc:
        raise usage_error(exc.message) from None


def notice(text: str) -> None:
    """A word to the person at the terminal, beside the command's output."""
    print(f"rig: {text}", file=sys.stderr, flush=True)


def with_client(work: Callable[[RigClient], Awaitable[Any]], *, role: str = "client") -> Any:
    """Run `work` with a client connected as `role` (`client`, or `admin` for the
    operator's commands: dead letters, `rig top`)."""
    from actors.runtime.client import RigClient

    async def go() -> Any:
        config = dataclasses.replace(RigConfig.from_env(), connect_timeout=5.0, refused_wait=1.0)
        async with await RigClient.connect(config, role=role, notices=notice) as rig:
            return await work(rig)

    return run_async(go(), fast=False)


def show_status(info: JobInfo, as_json: bool) -> None:
    if as_json:
        print_json(info.model_dump(mode="json"))
        return
    print(f"job     {info.job_id}")
    print(
        f"agent   {info.agent}" + (f"   graph {info.graph_version}" if info.graph_version else "")
    )
    print(f"status  {info.status}")
    children = f" (+{info.child_steps} by its children)" if info.child_steps else ""
    print(f"state   {info.state}   steps {info.steps}/{info.max_steps}{children}")
    print(f"path    {' -> '.join(info.path)}")
    if info.parent is not None:
        link = info.parent
        print(f"parent  {link.job_id} (agent {link.agent}, step {link.step}, edge {link.edge})")
    if info.children:
        print(f"children {', '.join(info.children)}")
    if info.waiting_signal is not None:
        print(f"waits   for signal {info.waiting_signal} (rig signal {info.job_id} NAME)")
    if info.waiting_for:
        print(f"waits   for child job(s) {', '.join(info.waiting_for)} (rig status CHILD)")
    if info.queued is not None:
        q = info.queued
        print(
            f"queued  for key {q['key']}: {q['running']} of {q['limit']} running, "
            f"{q['ahead']} waiting ahead of it"
        )
    print(f"spent   {spent(info)}")
    if info.trace_id is not None:
        print(f"trace   {info.trace_id}")
    if info.waiting is not None:
        print(f"waiting {info.waiting.kind}: {info.waiting.reason}")
        print(f"edges   {', '.join(info.waiting.edges) or '(none: rig cancel it)'}")
    if info.result is not None:
        print(f"result  {json.dumps(info.result)}")
    if info.error is not None:
        print(f"error   {info.error.get('message')}")


def spent(info: JobInfo) -> str:
    """What the job spent, against its limits where it has them."""
    budget, usage = info.budget, info.usage
    parts = [f"tokens {usage.tokens}" + (f"/{budget.max_tokens}" if budget.max_tokens else "")]
    if usage.cost or budget.max_cost:
        parts.append(
            f"cost {usage.cost:.4g}" + (f"/{budget.max_cost:g}" if budget.max_cost else "")
        )
    if info.deadline is not None:
        parts.append(f"deadline {budget.deadline_s:g} s")
    if budget.max_visits:
        most = max(info.visits.values(), default=0)
        parts.append(f"most visits {most}/{budget.max_visits}")
    return ", ".join(parts)


def describe(event: Event) -> str:
    data = event.data
    clock = time.strftime("%H:%M:%S", time.localtime(event.ts)) + f".{int(event.ts % 1 * 1000):03d}"
    head = f"{clock} #{event.seq:<3} step {event.step:<2} {event.type:<11}"
    match event.type:
        case "decision" if data.get("code_error"):
            error = data["code_error"]
            return (
                f"{head} {data.get('state')}: the agent's code raised {error.get('type')}: "
                f"{error.get('message')} ({error.get('where')})"
            )
        case "decision" if data.get("config_error"):
            error = data["config_error"]
            return f"{head} {data.get('state')}: config error: {error.get('message')}"
        case "decision" if data.get("exhausted"):
            kind = data.get("exhausted")
            return f"{head} {data.get('state')}: no LLM call, the {kind} budget cannot pay for it"
        case "decision":
            extra = " (fallback: " + data.get("reason", "") + ")" if data.get("fallback") else ""
            call = (
                f", calls {data['tool']}({json.dumps(data.get('args'))})"
                if data.get("tool")
                else ""
            )
            who = " (by a person)" if data.get("by") == "human" else ""
            failed = [c for c in data.get("calls") or [] if c.get("ok") is False]
            tries = (
                f" [after {len(failed)} failed call(s): "
                + ", ".join(f"{c.get('error')} {c.get('status') or ''}".strip() for c in failed)
                + "]"
                if failed
                else ""
            )
            reasks = f" [{data['reasks']} re-ask(s)]" if data.get("reasks") else ""
            return (
                f"{head} {data.get('state')} -> edge {data.get('edge')}{who}{call}{extra}"
                f"{tries}{reasks}"
            )
        case "tool_result":
            outcome = json.dumps(data.get("result")) if data.get("ok") else data.get("error")
            return f"{head} {data.get('tool')} [{data.get('ledger')}] {outcome}"
        case "verdict":
            verdict = "pass" if data.get("passed") else "FAIL"
            return f"{head} {data.get('verifier')}: {verdict} {data.get('reason', '')}"
        case "transition":
            why = f" ({data['reason']})" if data.get("reason") else ""
            return f"{head} {data.get('source')} -> {data.get('target')}{why}"
        case "budget":
            kind, action = data.get("exhausted"), data.get("action")
            return f"{head} {kind} exhausted: {data.get('message')}; {action}"
        case "resolved":
            note = f": {data['note']}" if data.get("note") else ""
            return f"{head} {data.get('by') or 'a person'} took {data.get('edge')}{note}"
        case "resumed":
            return f"{head} resumed in {data.get('state')}: the late {data.get('by')} arrived"
        case "migrated":
            renamed = f" (now {data['to']})" if data.get("to") != data.get("state") else ""
            return (
                f"{head} moved from graph {data.get('source')} to {data.get('version')} "
                f"in {data.get('state')}{renamed}"
            )
        case "child_started":
            return f"{head} started child job {data.get('child')} of agent {data.get('agent')}"
        case "child_ended":
            error = data.get("error") or {}
            why = f": {error.get('message')}" if error.get("message") else ""
            return (
                f"{head} child job {data.get('child')} ended {data.get('status')}{why} "
                f"({data.get('steps')} steps, {_tokens(data.get('usage'))} tokens)"
            )
        case "signal" if data.get("waiting"):
            until = (
                f" until {time.strftime('%H:%M:%S', time.localtime(data['until']))}"
                if data.get("until")
                else ""
            )
            return f"{head} waits for signal {data.get('name')}{until}"
        case "signal" if data.get("timed_out"):
            return f"{head} no signal {data.get('name')} within {data.get('waited_s')} s"
        case "signal":
            by = f" from {data['by']}" if data.get("by") else ""
            return f"{head} signal {data.get('name')}{by}: {json.dumps(data.get('data'))}"
        case "thread":
            after = data.get("waits_for")
            return f"{head} waits its turn in thread {data.get('thread')} (after {after})"
        case "queued":
            ahead = data.get("ahead")
            return f"{head} waits for key {data.get('key')} ({ahead} ahead of it)"
        case "compacted" if data.get("summary") is not None:
            kept = f", {data.get('kept')} newer kept as they were"
            return f"{head} summarised the first {data.get('through')} turns{kept}"
        case "compacted":
            return f"{head} made no summary (edge {data.get('edge')}): the newest turns only"
        case "status" if data.get("status") == "waiting_human":
            return f"{head} waiting_human in {data.get('state')}: {data.get('reason')}"
        case "status":
            return f"{head} {data.get('status')} in {data.get('state')}"
    return f"{head} {json.dumps(data)}"


def _tokens(usage: Any) -> int:
    usage = usage if isinstance(usage, dict) else {}
    return int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))


def table(
    rows: Sequence[Sequence[str]], *, header: Sequence[str] = (), right: Collection[int] = ()
) -> list[str]:
    """Rows as aligned lines: columns two spaces apart, each as wide as its widest cell,
    the columns numbered in `right` aligned right; no line ends in spaces. Every list the
    CLI prints for a person is one."""
    lines = [list(header), *map(list, rows)] if header else [list(row) for row in rows]
    if not lines:
        return []
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return [
        "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]


def print_json(value: Any) -> None:
    print(json.dumps(value), flush=True)


def say_error(args: argparse.Namespace, error: dict[str, Any]) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"error": error}), flush=True)
    else:
        print(f"rig: {error.get('code')}: {error.get('message')}", file=sys.stderr)


class UsageError(RigError):
    code = "usage_error"


def usage_error(message: str) -> UsageError:
    return UsageError(message)
