"""`rig agents`, `submit`, `status`, `watch`, `inbox`, `resolve`, `cancel`, `jobs`, `logs`,
`trace`, `graph`: jobs and the agents that run them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from actors.cli.common import (
    EXIT_FOUND,
    EXIT_OK,
    ago,
    describe,
    exit_for,
    json_object,
    limits_of,
    load_actor_class,
    print_json,
    show_status,
    table,
    usage_error,
    with_client,
)
from actors.runtime.settings import RigConfig
from protocols import (
    LOOKUP,
    JobInfo,
    JobStatusName,
    ToolEntry,
    UnknownAgentError,
)

if TYPE_CHECKING:  # each command imports what it needs: `rig --help` starts at once
    from actors.runtime.client import RigClient
    from protocols import Graph


def add(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Add this family's verbs to `rig`'s parser (`common`: the options every verb takes)."""
    agents = verbs.add_parser(
        "agents",
        parents=[common],
        help="list the registered agents, live or offline",
        description="The agents that ever registered, with how many processes of each "
        "are live now (0: OFFLINE; jobs for it wait until one starts).",
    )
    agents.add_argument(
        "--a2a",
        nargs="?",
        const="",
        metavar="GATEWAY",
        help="print each agent's A2A Agent Card url at the gateway GATEWAY (default: "
        "RIG_GATEWAY_URL)",
    )
    agents.set_defaults(run=_agents)
    budget = argparse.ArgumentParser(add_help=False)
    limits = budget.add_argument_group("budget (overrides the agent's defaults)")
    limits.add_argument("--max-steps", type=int, metavar="N", help="steps (LLM decisions)")
    limits.add_argument("--max-tokens", type=int, metavar="N", help="LLM tokens, in + out")
    limits.add_argument("--max-cost", type=float, metavar="X", help="money, by the price table")
    limits.add_argument(
        "--deadline",
        metavar="DURATION",
        help="wall clock from now until the job must be terminal (45s, 10m, 2h)",
    )
    limits.add_argument(
        "--max-visits", type=int, metavar="N", help="times the job may enter any one state"
    )
    limits.add_argument("--max-reasks", type=int, metavar="N", help="LLM re-asks per step")
    limits.add_argument(
        "--stall",
        metavar="DURATION",
        help="tell a person when the job makes no progress for this long (default: the "
        "agent's stall_s, 15m)",
    )
    submit = verbs.add_parser(
        "submit",
        parents=[common, budget],
        help="start a job",
        description="Start a job of AGENT; answers once the job is stored. A job for an "
        "agent with no live instance is accepted with a warning: it runs when one starts.",
    )
    submit.add_argument("agent", help="agent name (see `rig agents`)")
    submit.add_argument(
        "--input",
        required=True,
        metavar="JSON|@FILE|-",
        help="the job's input, a JSON object: inline, @FILE to read a file, - for stdin",
    )
    submit.add_argument(
        "--job-id",
        help="choose the job id (letters, digits, _ and -): the same request again is the "
        "same job; another request under the same id is a job_conflict error",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="wait until the job is terminal or waiting for a human, then print "
        "its status (exit 0 succeeded, 1 another ending, 3 waiting for a person)",
    )
    submit.add_argument("--timeout", type=float, help="with --wait: give up after SECONDS")
    submit.add_argument(
        "--thread",
        metavar="T",
        help="the job is a turn of conversation T: one turn runs at a time, and its context "
        "carries T's earlier turns (`rig thread T`)",
    )
    submit.add_argument(
        "--thread-busy",
        choices=["wait", "refuse"],
        help="while another turn of T runs: wait for it (the default), or refuse this one",
    )
    submit.add_argument(
        "--key",
        metavar="KEY",
        help="a concurrency key: jobs of the agent with KEY run --key-limit at a time (the "
        "others wait, in order); an agent with a flow takes it from its input",
    )
    submit.add_argument("--key-limit", type=int, metavar="N", help="with --key (default 1)")
    submit.add_argument(
        "--priority",
        type=int,
        default=0,
        help="among jobs waiting for one key, a higher one starts first (default 0)",
    )
    submit.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label kept with the job (again for more); `user=ID` names whose memory "
        "an agent with memory reads and writes",
    )
    submit.add_argument(
        "--webhook",
        metavar="URL",
        help="POST the job's end (and each wait for a person) to URL, signed per Standard "
        "Webhooks by a `rig gateway` that has RIG_WEBHOOK_SECRET",
    )
    submit.add_argument(
        "--seed",
        type=int,
        help="send this seed with every model call of the job (an agent configured with a "
        "temperature above 0 then samples reproducibly: replay an eval's trial)",
    )
    submit.add_argument(
        "--no-cache",
        action="store_true",
        help="keep the response cache out of this job's model calls",
    )
    submit.set_defaults(run=_submit)
    thread = verbs.add_parser(
        "thread",
        parents=[common],
        help="show a thread: its running, waiting and ended turns",
        description="A conversation (`rig submit --thread T`): the turn that runs, the turns "
        "waiting for it, and the ended turns it keeps (what each later turn's context "
        "carries, within its agent's thread_tokens).",
    )
    thread.add_argument(
        "thread", nargs="+", metavar="[show] T", help="the thread's id (`show` may come first)"
    )
    thread.set_defaults(run=_thread)
    status = verbs.add_parser("status", parents=[common], help="show a job's status")
    status.add_argument("job_id", metavar="JOB")
    status.add_argument(
        "--full",
        action="store_true",
        help="show tool results stored by reference (over RIG_INLINE_RESULT_BYTES) in full",
    )
    status.set_defaults(run=_status)
    watch = verbs.add_parser(
        "watch",
        parents=[common],
        help="print a job's events until it ends",
        description="Print the job's journal from the start, then its events as they "
        "happen; exit when the job is terminal (0 if it succeeded, 1 otherwise) or when it "
        "waits for a person (3, with what to do), unless --follow.",
    )
    watch.add_argument("job_id", metavar="JOB")
    watch.add_argument("--timeout", type=float, help="give up after SECONDS (exit 2)")
    watch.add_argument(
        "--follow",
        action="store_true",
        help="keep watching while the job waits for a person, until it is terminal",
    )
    watch.add_argument(
        "--children",
        action="store_true",
        help="also print the events of the child jobs it starts (and theirs), each line "
        "after the child's id; exit when all have ended, or when any waits for a person",
    )
    watch.add_argument(
        "--tokens",
        action="store_true",
        help="also print the model's answers: live as they stream (agents with stream = "
        "true), and from the journal for steps that ended before rig watch started",
    )
    watch.set_defaults(run=_watch)
    inbox = verbs.add_parser(
        "inbox",
        parents=[common],
        help="list the jobs waiting for a person",
        description="The jobs parked for a human, oldest first, with the reason and the "
        "edges a person may take (`rig resolve JOB --edge EDGE`).",
    )
    inbox.add_argument("--agent", help="only this agent's jobs")
    inbox.set_defaults(run=_inbox)
    resolve = verbs.add_parser(
        "resolve",
        parents=[common, budget],
        help="take an edge for a job waiting for a person",
        description="Resume a job that waits for a human from EDGE (one of its state's "
        "edges, see `rig inbox`); budget options extend its limits (--deadline counts "
        "from now).",
    )
    resolve.add_argument("job_id", metavar="JOB")
    resolve.add_argument("--edge", required=True, help="the edge to take")
    resolve.add_argument(
        "--args",
        default="{}",
        metavar="JSON|@FILE|-",
        help="the edge's arguments, a JSON object (inline, @FILE or - for stdin)",
    )
    resolve.add_argument(
        "--step",
        type=int,
        help="the step of the wait you are resolving (`rig inbox` shows it); by default the "
        "job's step when the command starts. Once the job has left it, the resolve is "
        "refused (job_moved), never applied to a later wait",
    )
    resolve.add_argument("--note", default="", help="why, for the journal")
    resolve.add_argument("--by", default=os.environ.get("USER", ""), help="who (default $USER)")
    resolve.set_defaults(run=_resolve)
    signal = verbs.add_parser(
        "signal",
        parents=[common],
        help="deliver a signal to a job waiting for one",
        description="Send signal NAME to JOB, which waits for it in a state with "
        "wait_for=NAME; the job takes that state's on_signal edge with DATA as its "
        "arguments. A job not waiting for it is refused (job_state).",
    )
    signal.add_argument("job_id", metavar="JOB")
    signal.add_argument("name", metavar="NAME", help="the signal's name")
    signal.add_argument(
        "--data",
        default="{}",
        metavar="JSON|@FILE|-",
        help="the signal's data, a JSON object (inline, @FILE or - for stdin)",
    )
    signal.add_argument(
        "--id",
        dest="signal_id",
        help="names this signal: sent again with the same id, it is delivered once",
    )
    signal.add_argument("--by", default=os.environ.get("USER", ""), help="who (default $USER)")
    signal.set_defaults(run=_signal)
    cancel = verbs.add_parser(
        "cancel",
        parents=[common],
        help="end a running or parked job as cancelled",
        description="End any job that is not terminal: status `cancelled`; reports still "
        "under way for it are dropped when they arrive.",
    )
    cancel.add_argument("job_id", metavar="JOB")
    cancel.add_argument("--reason", default="", help="why, for the journal")
    cancel.set_defaults(run=_cancel)
    jobs = verbs.add_parser(
        "jobs",
        parents=[common],
        help="list jobs, newest first",
        description="The jobs of this deployment, newest first, from their snapshots.",
    )
    jobs.add_argument("--agent", help="only this agent's jobs")
    jobs.add_argument(
        "--status",
        choices=[*get_args(JobStatusName), "active"],
        help="only jobs in this status (active: not terminal)",
    )
    jobs.add_argument("--parent", metavar="JOB", help="only the child jobs JOB started")
    jobs.add_argument("--limit", type=int, default=20, help="at most N jobs (default 20)")
    jobs.set_defaults(run=_jobs)
    logs = verbs.add_parser(
        "logs",
        parents=[common],
        help="the actors' log lines about one job",
        description="Every line of the actors' logs that concerns JOB, in time order, from "
        "the log files `rig up` writes under $RIG_HOME/logs (or --dir). Actors started "
        "by hand log to their own stderr; set RIG_LOG_FILE for them to write a file too. "
        "At the default level (info) the supervisor logs a job's status changes and the "
        "other actors only what went wrong (a line per message would cost every step); with "
        "RIG_LOG_LEVEL=debug every actor logs each message it handles for the job.",
    )
    logs.add_argument("job_id", metavar="JOB")
    logs.add_argument("--dir", type=Path, help="the log folder (default: $RIG_HOME/logs)")
    logs.set_defaults(run=_logs)
    trace = verbs.add_parser(
        "trace",
        parents=[common],
        help="a job's waterfall: who did what, when, for how long",
        description="From the job's journal alone (no trace collector needed): per step, "
        "the wait in a queue, the work (the model's share of a decision, the tool's run, "
        "the verifier's check) with the process that did it, the supervisor's "
        "transitions, and a person's wait; the times are from when the job was accepted.",
    )
    trace.add_argument("job_id", metavar="JOB")
    trace.set_defaults(run=_trace)
    graph = verbs.add_parser(
        "graph",
        parents=[common],
        help="print an agent's state machine (Mermaid or DOT)",
        description="Print the FSM of a registered agent (AGENT) or of an agent class "
        "(MODULE:CLASS, no server needed). Edges show [tool] and {verifier}; (safe) marks "
        "safe edges; human states are highlighted.",
    )
    graph.add_argument("agent", metavar="AGENT|MODULE:CLASS")
    graph.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    graph.add_argument(
        "--lint",
        action="store_true",
        help="instead of drawing it, report every path from an untrusted tool's output to "
        "a consequential edge with no verifier and no person on the way; exit 1 if any",
    )
    graph.add_argument(
        "--config",
        type=Path,
        help="with --lint: rig up's TOML file, whose tool executors say which tools are "
        "untrusted_output (an MCP executor's server is asked), and which the graph's "
        "edges call that none serves (default: the refund example)",
    )
    graph.add_argument(
        "--deployed",
        action="store_true",
        help="with --lint: check the graph's tools (sets of tools and lookups too) against "
        "what the running deployment's executors serve (their catalog, RIG_TOOLS)",
    )
    graph.add_argument(
        "--untrusted",
        action="append",
        default=[],
        metavar="TOOL",
        help="with --lint: count TOOL's output as untrusted too (repeatable)",
    )
    graph.set_defaults(run=_graph)


def _agents(args: argparse.Namespace) -> int:
    async def go(rig: RigClient) -> Any:
        return await rig.agents(), await rig.live_agents()

    infos, live = with_client(go)
    if args.a2a is not None:
        gateway = (args.a2a or RigConfig.from_env().gateway_url).rstrip("/")
        cards = {i.name: f"{gateway}/a2a/{i.name}/.well-known/agent-card.json" for i in infos}
        if args.json:
            print_json([{"name": name, "card": card} for name, card in cards.items()])
        else:
            for name, card in cards.items():
                print(f"{name}  {card}")
        return EXIT_OK
    if args.json:
        print_json(
            [
                {"name": i.name, "example_input": i.example_input, "live": live.get(i.name, 0)}
                for i in infos
            ]
        )
    elif not infos:
        print("no agents registered (start one: rig up, or rig actor run MODULE:CLASS)")
    else:
        for info in infos:
            count = live.get(info.name, 0)
            state = f"{count} live" if count else "OFFLINE: no live process; jobs wait for one"
            print(f"{info.name}  ({state})  {info.description}")
            if info.example_input is not None:
                print(f"    example input: {json.dumps(info.example_input)}")
    return EXIT_OK


def _submit(args: argparse.Namespace) -> int:
    from opentelemetry.trace import SpanKind

    from actors.runtime import tracing as tracing

    job_input = json_object(args.input, "--input")
    labels = {}
    for label in args.label:
        key, is_, value = label.partition("=")
        if not is_ or not key:
            raise usage_error(f"--label {label!r}: give KEY=VALUE")
        labels[key] = value

    async def go(rig: RigClient) -> Any:
        # With OTEL_* set, the job's trace starts here: its root's parent is this span.
        with tracing.span(
            f"submit {args.agent}",
            kind=SpanKind.CLIENT,
            attributes={"gen_ai.agent.name": args.agent, "rig.client": "cli"},
        ) as span:
            reply = await rig.submit(
                args.agent,
                job_input,
                job_id=args.job_id,
                webhook=args.webhook,
                seed=args.seed,
                cache=not args.no_cache,
                thread=args.thread,
                thread_busy=args.thread_busy,
                labels=labels or None,
                concurrency_key=args.key,
                concurrency_limit=args.key_limit,
                priority=args.priority,
                **limits_of(args),
            )
            if span is not None:
                span.set_attribute("rig.job.id", reply.job_id)
        if reply.warning and not args.json:
            print(f"rig: warning: {reply.warning}", file=sys.stderr, flush=True)
        if not args.wait:
            return reply
        return await rig.wait(reply.job_id, timeout=args.timeout)

    tracing.start("cli")
    try:
        result = with_client(go)
    finally:
        tracing.stop()
    if isinstance(result, JobInfo):
        show_status(result, args.json)
        return exit_for(result.status)
    if args.json:
        print_json(result.model_dump(mode="json"))
    else:
        print(f"accepted job {result.job_id}  (rig watch {result.job_id})")
    return EXIT_OK


def _thread(args: argparse.Namespace) -> int:
    words = args.thread
    if words[0] == "show":
        words = words[1:]
    if len(words) != 1:
        raise usage_error("rig thread [show] T: one thread id")
    record = with_client(lambda rig: rig.thread(words[0]))
    if args.json:
        print_json(record.model_dump(mode="json"))
        return EXIT_OK
    waiting = ", ".join(record.waiting) or "none"
    print(f"thread {record.thread} (agent {record.agent}): running {record.active or 'none'}")
    print(f"  waiting: {waiting}")
    dropped = f" ({record.dropped} older no longer kept)" if record.dropped else ""
    print(f"  turns: {len(record.turns)}{dropped}")
    if record.summary is not None:
        covers = f"the first {record.summary.through} turns"
        made = f"by {record.summary.job_id}; {record.compactions} so far"
        print(f"  summary of {covers} ({made}): {json.dumps(record.summary.summary)[:200]}")
    for n, turn in enumerate(record.turns, start=record.dropped + 1):
        said = turn.output if turn.output is not None else turn.results
        print(f"  {n:>3}. {turn.job_id}  {turn.status}  {json.dumps(turn.input)[:60]}")
        print(f"       -> {json.dumps(said)[:100]}")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    async def go(rig: RigClient) -> tuple[JobInfo, list[JobInfo]]:
        info = await rig.status(args.job_id)
        if args.full and info.result is not None:
            results = info.result.get("results") or {}
            for tool, value in results.items():
                results[tool] = await rig.fetch_result(value)
        # The children it waits for that wait themselves: for a person, or a signal.
        children = [await rig.status(child) for child in info.waiting_for]
        return info, [c for c in children if c.status == "waiting_human" or c.waiting_signal]

    info, waiting = with_client(go)
    show_status(info, args.json)
    for child in [] if args.json else waiting:
        why = child.waiting.reason if child.waiting else child.waiting_signal or ""
        print(f"child   {child.job_id} ({child.agent}) {child.status}: {why}")
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    async def go(rig: RigClient) -> str:
        await rig.status(args.job_id)  # raises UnknownJobError for a job that does not exist
        final, parked_job = "", args.job_id
        streaming = False
        live = False  # tokens arrived live since the last event

        def show_tokens(text: str, *, replay: bool = False) -> None:
            nonlocal streaming
            if args.json:
                token = {"type": "token", "job_id": args.job_id, "text": text}
                print_json(token | ({"replay": True} if replay else {}))
                return
            if not streaming:
                print("     tokens: ", end="")
                streaming = True
            print(text, end="", flush=True)

        async def on_token(msg: Any) -> None:
            nonlocal live
            live = True
            show_tokens(msg.data.decode())

        if args.tokens:
            await rig.nc.subscribe(rig.names.tokens(args.job_id), cb=on_token)
        parked = not args.follow
        follow = rig.tree_events if args.children else rig.events
        async for event in follow(args.job_id, timeout=args.timeout, until_parked=parked):
            if args.tokens and event.type == "decision" and event.data.get("answer") and not live:
                # A step that ended before we listened: its answer, from the journal.
                show_tokens(str(event.data["answer"]), replay=True)
            live = False
            if streaming:
                print()
                streaming = False
            child = event.job_id != args.job_id
            if args.json:
                print_json(event.model_dump(mode="json"))
            else:
                print((f"[{event.job_id}] " if child else "") + describe(event), flush=True)
            if event.type == "status" and (
                not child or event.data.get("status") == "waiting_human"
            ):
                final, parked_job = str(event.data.get("status")), event.job_id
        if final == "waiting_human" and not args.json:
            edges = event.data.get("edges") or []
            print(
                f"rig: job {parked_job} waits for a person: `rig inbox` shows why; "
                f"`rig resolve {parked_job} --edge {'|'.join(edges) or 'EDGE'}` or "
                f"`rig cancel {parked_job}` moves it (`rig watch --follow` keeps watching)",
                file=sys.stderr,
            )
        return final

    final = with_client(go)
    return exit_for(final)


def _inbox(args: argparse.Namespace) -> int:
    jobs = with_client(lambda rig: rig.inbox(args.agent))
    if args.json:
        print_json([job.model_dump(mode="json") for job in jobs])
    elif not jobs:
        print("no jobs are waiting for a person")
    for job in [] if args.json else jobs:
        waited = ago(job.since)
        print(f"{job.job_id}  {job.agent}  state {job.state}  step {job.step}  waiting {waited}")
        print(f"    reason: {job.reason}")
        if job.parent is not None:
            print(f"    parent: {job.parent} waits for it (resolving it resumes both)")
        print(f"    input:  {json.dumps(job.input)}")
        print(f"    edges:  {', '.join(job.edges) or '(none: rig cancel it)'}")
    return EXIT_OK


def _resolve(args: argparse.Namespace) -> int:
    edge_args = json_object(args.args, "--args")
    if args.step is not None and args.step < 0:
        raise usage_error("--step must be 0 or more")

    async def go(rig: RigClient) -> JobInfo:
        # What the person resolves is the wait the job is in now, never a later one.
        step = args.step if args.step is not None else (await rig.status(args.job_id)).steps
        return await rig.resolve(
            args.job_id,
            args.edge,
            args=edge_args,
            note=args.note,
            by=args.by,
            step=step,
            **limits_of(args),
        )

    info = with_client(go)
    show_status(info, args.json)
    return EXIT_OK


def _signal(args: argparse.Namespace) -> int:
    data = json_object(args.data, "--data")
    info = with_client(
        lambda rig: rig.signal(args.job_id, args.name, data, by=args.by, signal_id=args.signal_id)
    )
    show_status(info, args.json)
    return EXIT_OK


def _cancel(args: argparse.Namespace) -> int:
    info = with_client(lambda rig: rig.cancel(args.job_id, reason=args.reason))
    show_status(info, args.json)
    return EXIT_OK


def _jobs(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise usage_error("--limit must be at least 1")
    infos = with_client(
        lambda rig: rig.jobs(
            agent=args.agent, status=args.status, limit=args.limit, parent=args.parent
        )
    )
    if args.json:
        print_json([info.model_dump(mode="json") for info in infos])
        return EXIT_OK
    if not infos:
        print("no jobs" + (" match" if args.agent or args.status or args.parent else " yet"))
    rows = [
        (
            info.job_id,
            info.agent,
            info.status,
            info.state or "-",
            f"steps {info.steps}",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created_at)),
        )
        for info in infos
    ]
    for line in table(rows):
        print(line)
    return EXIT_OK


def _logs(args: argparse.Namespace) -> int:
    from actors.runtime.logfiles import job_lines

    folder = args.dir or RigConfig.from_env().home / "logs"
    files = sorted(folder.glob("*.log")) if folder.is_dir() else []
    if not files:
        print(
            f"rig: no log files under {folder}: actors started by `rig up` write them there; "
            "actors started by hand log to their own stderr (set RIG_LOG_FILE=PATH for a file)",
            file=sys.stderr,
        )
        return EXIT_OK
    lines = job_lines(files, args.job_id)
    if not lines:
        print(
            f"rig: no line of {len(files)} log file(s) under {folder} mentions job {args.job_id}",
            file=sys.stderr,
        )
    if lines and all(entry.get("level") != "debug" for _, entry in lines):
        print(
            f"rig: {len({source for source, _ in lines})} of {len(files)} log file(s) mention "
            "the job: at level info the supervisor logs its status changes, the other "
            "actors what went wrong; "
            "RIG_LOG_LEVEL=debug has every actor log each message it handles",
            file=sys.stderr,
        )
    for source, entry in lines:
        if args.json:
            print_json({"file": source, **entry})
            continue
        extra = {
            k: v
            for k, v in entry.items()
            if k not in ("timestamp", "level", "event", "job", "job_id", "actor") and v is not None
        }
        fields = " ".join(
            f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in extra.items()
        )
        when, level, event = entry.get("timestamp", ""), entry.get("level", ""), entry.get("event")
        print(f"{when}  {source:<28} {level:<7} {event}  {fields}".rstrip())
    return EXIT_OK


def _config_catalog(path: Path | None) -> list[ToolEntry]:
    """What the tool executors of `rig up`'s config (None: the default) serve (an MCP
    executor's server is asked now), as their catalog entries would say."""
    from actors.deploy.up import UpConfig
    from actors.tools.executor import ToolExecutor
    from actors.tools.mcp import McpTools, entries as mcp_entries

    entries: list[ToolEntry] = []
    for spec in UpConfig.load(path).actors:
        cls = load_actor_class(spec.target)
        if issubclass(cls, McpTools):  # its tools are its server's: asked now
            entries += mcp_entries(cls.name, cls.list_tools())
        elif issubclass(cls, ToolExecutor):
            entries += cls.entries()
    return entries


def _trace(args: argparse.Namespace) -> int:
    from actors.cli.trace import render, waterfall

    async def go(rig: RigClient) -> Any:
        return waterfall(await rig.journal(args.job_id))

    fall = with_client(go)
    if args.json:
        print_json(fall.to_dict())
    else:
        print(render(fall))
    return EXIT_OK


def _graph(args: argparse.Namespace) -> int:
    if ":" in args.agent:
        from actors.models.agent import Agent

        cls = load_actor_class(args.agent)  # a broken graph raises GraphError here
        if not issubclass(cls, Agent):
            raise usage_error(f"{args.agent!r} is not an Agent subclass")
        name, graph = cls.name, cls.graph
    else:
        infos = {info.name: info for info in with_client(lambda rig: rig.agents())}
        if args.agent not in infos:
            known = ", ".join(sorted(infos)) or "none"
            raise UnknownAgentError(
                f"no agent named {args.agent!r} has registered (registered: {known})",
                agent=args.agent,
            )
        name, graph = args.agent, infos[args.agent].graph
    if args.lint:
        return _lint(args, name, graph)
    if args.config is not None or args.untrusted or args.deployed:
        raise usage_error("--config, --deployed and --untrusted go with --lint")
    text = graph.to_dot(name) if args.format == "dot" else graph.to_mermaid(name)
    if args.json:
        print_json({"agent": name, "format": args.format, "graph": text})
    else:
        print(text, end="")
    return EXIT_OK


def _lint(args: argparse.Namespace, name: str, graph: Graph) -> int:
    """`rig graph --lint`: where untrusted tool output can steer a consequential edge;
    with --config (or --deployed), also the tools the graph calls that no executor of
    it (of the deployment) serves, and lookups that no read-only tool serves."""
    from actors.tools.catalog import offered

    if args.config is not None and args.deployed:
        raise usage_error("give --config or --deployed, not both")
    entries = with_client(lambda rig: rig.catalog()) if args.deployed else None
    if entries is None:
        entries = _config_catalog(args.config)
    table = {entry.tool: entry for entry in entries}
    tainted = [entry for entry in entries if entry.untrusted_output]
    untrusted = set(args.untrusted) | {e.tool for e in tainted}
    unserved: list[tuple[str, str, str]] = []
    for state, s in graph.states.items() if args.config is not None or args.deployed else ():
        for edge in s.edges:
            sets = (edge.tool,) if edge.tool is not None else edge.tools
            unserved += [(t, edge.name, state) for t in sets if not offered((t,), table)]
        for entry in s.lookup:
            if all(e.side_effects for e in offered((entry,), table).values()):
                unserved.append((entry, LOOKUP, state))
    unserved.sort()
    consequential = sorted(
        f"{state}.{edge.name}"
        for state, s in graph.states.items()
        for edge in s.edges
        if edge.consequential
    )
    # A set of all of an executor's tools is untrusted if one of them is.
    paths = graph.injection_paths(untrusted | {f"{e.executor}.*" for e in tainted})
    if args.json:
        print_json(
            {
                "agent": name,
                "untrusted": sorted(untrusted),
                "consequential": consequential,
                "paths": [dataclasses.asdict(path) for path in paths],
                "unserved": [
                    {"tool": tool, "edge": edge, "state": state} for tool, edge, state in unserved
                ],
            }
        )
        return EXIT_FOUND if paths or unserved else EXIT_OK
    print(
        f"agent {name}: untrusted tools {', '.join(sorted(untrusted)) or 'none'}; "
        f"consequential edges {', '.join(consequential) or 'none'}"
    )
    among = f"in {args.config}" if args.config is not None else "of the deployment"
    for tool, where, state in unserved:
        if where == LOOKUP:
            print(
                f"  UNSERVED   lookup {tool!r} of {state!r}: no executor {among} serves a "
                "read-only tool of it"
            )
        else:
            print(
                f"  UNSERVED   tool {tool!r} (edge {where!r} of {state!r}): no executor "
                f"{among} serves it"
            )
    for path in paths:
        print(f"  UNGUARDED  {path}")
    if unserved and not paths:
        print(f"{len(unserved)} tool(s) no executor serves: add its executor to the config")
        return EXIT_FOUND
    if paths:
        print(
            f"{len(paths)} unguarded path(s): put a verifier on the edge, or a human state "
            "on the way"
        )
        return EXIT_FOUND
    if not untrusted or not consequential:
        print(
            "nothing to check: mark tools @tool(untrusted_output=True) and edges "
            "Edge(consequential=True)"
        )
    else:
        print("ok: no untrusted output reaches a consequential edge unchecked")
    return EXIT_OK
