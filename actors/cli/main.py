"""The `rig` command line.

Exit codes: 0 success; 1 the job ended in a status other than `succeeded`;
2 a usage or connection error, an unknown job or agent, a bad input; 3 the job waits
for a person (`submit --wait`, `watch`). A closed pipe (`rig watch JOB | head`) ends
the command quietly. No user mistake prints a traceback; `--debug` shows one.
"""

# Long: every verb's parser and handler in one file; issue 31 splits it into one module
# per family of commands (the parser beside its handlers), next.

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import importlib.metadata
import json
import os
import re
import signal
import sys
import time
import traceback
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from actors.gateway.keys import add_key, keys_path, load_keys, revoke_key
from actors.runtime.loop import run_async
from actors.runtime.settings import DEFAULT_NATS_URL, DIALECTS, RigConfig, seconds_of
from protocols import (
    Event,
    JobInfo,
    JobStatusName,
    RigError,
    SchemaError,
    UnknownAgentError,
    check_token,
    loads,
)

if TYPE_CHECKING:  # each command imports what it needs: `rig --help` starts at once
    from actors.runtime.client import RigClient
    from protocols import Graph

EXIT_OK, EXIT_JOB_NOT_SUCCEEDED, EXIT_ERROR, EXIT_WAITING = 0, 1, 2, 3
EXIT_FOUND = 1  # a check that found problems (`rig graph --lint`)
# What a shell reports for a program a closed pipe stopped (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141

_ENV_HELP = f"""
environment:
  RIG_NATS_URL   NATS server URL (default {DEFAULT_NATS_URL})
  RIG_PREFIX     namespace of subjects, streams and buckets (default rig)
  RIG_HOME       local data folder: ledger, rig up's server (default ./.rig)
  RIG_LLM_CONFIG the LLM config file: providers, and which agents route with them
  RIG_MAX_DELIVER deliveries of a failing message before it is dead-lettered (default 10)
  RIG_LIMIT_DEPTH, _STRING, _ITEMS, _KEYS  what an input may hold (64 levels, 1000000
                 characters, 100000 elements, 10000 keys); the README lists the rest

exit codes:
  0 success; 1 the job ended other than succeeded; 2 a mistake (usage, unknown job or
  agent, bad input, no server: one line on stderr); 3 the job waits for a person
"""


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        raise SystemExit(EXIT_ERROR)
    try:
        code = args.run(args)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # The reader went away (`rig watch JOB | head`): nothing more to say, to anyone.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_BROKEN_PIPE
    except RigError as exc:
        if args.debug:
            traceback.print_exc()
        _error(args, exc.to_dict())
        code = EXIT_ERROR
    except TimeoutError as exc:
        _error(args, {"code": "timeout", "message": str(exc) or "timed out"})
        code = EXIT_ERROR
    except Exception as exc:  # a bug of ours, not the user's: say so in one line
        if args.debug:
            raise
        message = f"{type(exc).__name__}: {exc} (a bug in rig; --debug shows the traceback)"
        _error(args, {"code": "internal_error", "message": message})
        code = EXIT_ERROR
    raise SystemExit(code)


def _version() -> str:
    try:
        return importlib.metadata.version("rig")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rig",
        description="Run LLM agents as finite-state machines on NATS JetStream.",
        epilog=_ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rig {_version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (for bug reports)"
    )
    verbs = parser.add_subparsers(title="commands", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    # Also after the verb; SUPPRESS keeps a --debug given before it.
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )

    up = verbs.add_parser(
        "up",
        parents=[common],
        help="start nats-server and the actors, restart any that die",
        description="Start nats-server (unless RIG_NATS_URL is set, then use that server) "
        "and the actor processes the config lists; restart an actor that dies; stop "
        "everything on Ctrl-C or SIGTERM.",
    )
    up.add_argument(
        "--config",
        type=Path,
        help="TOML file of [[actor]] class/count entries "
        "(default: the refund example, one process each)",
    )
    up.add_argument(
        "--port",
        type=int,
        help="client port of the started nats-server (default: nats.conf's, 4222; 0: a free one)",
    )
    up.add_argument(
        "--monitor-port",
        type=int,
        help="monitoring port of the started server (default: nats.conf's, 8222; 0: a free one)",
    )
    up.add_argument(
        "--gateway-port",
        type=int,
        metavar="PORT",
        help="port of the HTTP gateway it starts on loopback (default: RIG_GATEWAY_PORT or "
        "8080; 0: a free one). Its API key is made once, in $RIG_HOME/gateway.key",
    )
    up.add_argument("--no-gateway", action="store_true", help="start no HTTP gateway")
    up.add_argument(
        "--cluster",
        type=int,
        metavar="N",
        help="start N nats-servers (3 or 5) as one cluster on this machine, with "
        "nats-cluster.conf: every stream and bucket has N copies, the tool ledger lives in "
        "the cluster, and the actors are spread over the servers (client ports --port and "
        "up, default 4222; routes --cluster-port and up; docs/cluster.md)",
    )
    up.add_argument(
        "--cluster-port",
        type=int,
        metavar="PORT",
        help="with --cluster: the first node's route port (default 6222)",
    )
    up.add_argument(
        "--join",
        metavar="URL[,URL...]",
        help="start only the actors, against a cluster that runs elsewhere (as a second "
        "host does): its servers' client URLs. The first host's $RIG_HOME/creds (and "
        "tls/ca.pem) must be copied here",
    )
    up.add_argument(
        "--insecure",
        action="store_true",
        help="start the server with no users: anyone who reaches its port may do anything "
        "(for experiments only). By default every role has a NATS user of its own, its "
        "nkey seed in $RIG_HOME/creds, and may publish and subscribe only where its work is",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="make the server require TLS: a local CA and a certificate for this host are "
        "made once in $RIG_HOME/tls (every Rig client verifies the server with its ca.pem), "
        "unless --tls-cert and --tls-key give the server's own",
    )
    up.add_argument("--tls-cert", type=Path, metavar="PEM", help="with --tls: the certificate")
    up.add_argument("--tls-key", type=Path, metavar="PEM", help="with --tls: its private key")
    up.add_argument(
        "--tls-ca",
        type=Path,
        metavar="PEM",
        help="with --tls-cert: the CA clients verify it with (also RIG_TLS_CA for them)",
    )
    up.set_defaults(run=_up)

    actor = verbs.add_parser("actor", help="run one actor process")
    actor.set_defaults(run=_help_of(actor))
    actor_verbs = actor.add_subparsers(title="commands", metavar="COMMAND")
    run = actor_verbs.add_parser(
        "run",
        parents=[common],
        help="run MODULE:CLASS as an actor process",
        description="Run one actor process; the current directory is importable.",
    )
    run.add_argument(
        "target",
        metavar="MODULE:CLASS",
        help="e.g. actors:Supervisor or examples.greeter:GreeterAgent",
    )
    run.add_argument(
        "--profile",
        metavar="DIR",
        help="profile with pyinstrument; write DIR/CLASS-PID.txt on exit (also RIG_PROFILE_DIR)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on http://RIG_METRICS_HOST:PORT/metrics (also "
        "RIG_METRICS_PORT; rig up gives each process one)",
    )
    run.set_defaults(run=_actor_run)

    new = verbs.add_parser(
        "new",
        parents=[common],
        help="write a new agent, tool or verifier module, with a test that passes",
        description="Write a module to start from and a test beside it that uses "
        "actors.testing (it passes as written; run it with pytest). `agent` writes an "
        "agent with a graph, a tool executor whose tool has a ledger-friendly key and a "
        "reconcile, a verifier, their test, and a rig up config (NAME.toml). NAME is the "
        "agent's (or executor's, verifier's) name; its module is NAME with - as _. "
        "See docs/extending.md.",
    )
    new.add_argument("kind", choices=["agent", "tool", "verifier"], help="what to write")
    new.add_argument("name", metavar="NAME", help="e.g. support-triage")
    new.add_argument("--dir", type=Path, default=Path("."), help="where to write (default: here)")
    new.add_argument("--force", action="store_true", help="overwrite files that exist")
    new.set_defaults(run=_new)

    agents = verbs.add_parser(
        "agents",
        parents=[common],
        help="list the registered agents, live or offline",
        description="The agents that ever registered, with how many processes of each "
        "are live now (0: OFFLINE; jobs for it wait until one starts).",
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
    jobs.add_argument("--limit", type=int, default=20, help="at most N jobs (default 20)")
    jobs.set_defaults(run=_jobs)

    logs = verbs.add_parser(
        "logs",
        parents=[common],
        help="the actors' log lines about one job",
        description="Every line of the actors' logs that concerns JOB, in time order, from "
        "the log files `rig up` writes under $RIG_HOME/logs (or --dir). Actors started "
        "by hand log to their own stderr; set RIG_LOG_FILE for them to write a file too.",
    )
    logs.add_argument("job_id", metavar="JOB")
    logs.add_argument("--dir", type=Path, help="the log folder (default: $RIG_HOME/logs)")
    logs.set_defaults(run=_logs)

    top = verbs.add_parser(
        "top",
        parents=[common],
        help="a live view: throughput, jobs by status, queues, each process's rates",
        description="Redrawn every second from what the deployment answers: every "
        "process's counters (as `rig ps` reads them), the work stream's consumers "
        "(pending, in work, redelivered) and the jobs by status (a scan of every job's "
        "snapshot, every --jobs-every seconds). Ctrl-C stops it.",
    )
    top.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    top.add_argument("--frames", type=int, help="stop after N frames (default: run until Ctrl-C)")
    top.add_argument(
        "--jobs-every", type=float, default=5.0, metavar="S", help="scan the jobs every S seconds"
    )
    top.set_defaults(run=_top)

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
        "untrusted_output (default: the refund example)",
    )
    graph.add_argument(
        "--untrusted",
        action="append",
        default=[],
        metavar="TOOL",
        help="with --lint: count TOOL's output as untrusted too (repeatable)",
    )
    graph.set_defaults(run=_graph)

    roles = verbs.add_parser(
        "roles",
        parents=[common],
        help="print the NATS users a deployment gets, and what each may do",
        description="Print every role `rig up` makes a NATS user for (each actor class of "
        "the config, and the client, gateway and admin), with the subjects it may publish "
        "and subscribe to: generated from the subject layout and the agents' graphs, as "
        "the server enforces them. No server needed.",
    )
    roles.add_argument(
        "--config",
        type=Path,
        help="rig up's TOML file of [[actor]] entries (default: the refund example)",
    )
    roles.add_argument(
        "--format",
        choices=["markdown", "conf"],
        default="markdown",
        help="a Markdown table, or the server config's users (with placeholder keys)",
    )
    roles.set_defaults(run=_roles)

    admit = verbs.add_parser(
        "admit",
        parents=[common],
        help="give new actor classes their NATS identities in a running `rig up`",
        description="With security on, an actor process needs a NATS identity made for its "
        "role, and `rig up` makes them for the classes of its config. This asks the running "
        "`rig up` (as the admin: its $RIG_HOME/creds/admin.nk) to make them for more "
        "classes and load them into the server without a restart; it remembers them "
        "($RIG_HOME/admitted.json) when it starts again. Then start each with "
        "`rig actor run MODULE:CLASS`. The classes must import where `rig up` runs.",
    )
    admit.add_argument("targets", nargs="+", metavar="MODULE:CLASS", help="actor classes to admit")
    admit.set_defaults(run=_admit)

    chaos = verbs.add_parser(
        "chaos-llm",
        parents=[common],
        help="serve a misbehaving OpenAI-compatible model for tests and demos",
        description="An HTTP server speaking the OpenAI API (GET /v1/models, POST "
        "/v1/chat/completions, streamed or not, with JSON-schema response_format and "
        "tools) that answers like a plausible model and injects faults at the given rates "
        "(each a probability per request). Everything random follows --seed. GET /stats "
        "counts requests and faults. Point an agent at it with an LLM config file "
        "(base_url = http://HOST:PORT/v1).",
    )
    chaos.add_argument("--host", default="127.0.0.1")
    chaos.add_argument("--port", type=int, default=8400, help="0 picks a free port (default 8400)")
    chaos.add_argument("--seed", type=int, default=0)
    chaos.add_argument("--model", default="chaos-1", help="the model name it reports")
    chaos.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require the API key that this environment variable holds (401 without it)",
    )
    chaos.add_argument(
        "--main-path",
        type=float,
        default=0.9,
        metavar="P",
        help="how often a routing answer takes the state's first edge (default 0.9)",
    )
    faults = chaos.add_argument_group("faults")
    faults.add_argument("--latency-p50", type=float, default=0.0, metavar="S", help="seconds")
    faults.add_argument(
        "--latency-p99", type=float, default=0.0, metavar="S", help="seconds (lognormal)"
    )
    for name, what in (
        ("5xx", "a 500, 502 or 503"),
        ("429", "a 429 with Retry-After"),
        ("hang", "no answer at all"),
        ("malformed", "content that is not JSON"),
        ("refusal", "a refusal"),
        ("illegal", "an edge that is not allowed"),
        ("truncate", "a stream cut before [DONE]"),
    ):
        faults.add_argument(f"--rate-{name}", type=float, default=0.0, metavar="P", help=what)
    faults.add_argument(
        "--retry-after", type=float, default=1.0, metavar="S", help="the 429s' Retry-After"
    )
    chaos.set_defaults(run=_chaos_llm)

    dlq = verbs.add_parser(
        "dlq",
        help="list and replay dead letters",
        description="Messages an actor could not accept, kept with the reason.",
    )
    dlq.set_defaults(run=_help_of(dlq))
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

    evals = verbs.add_parser(
        "eval",
        help="run an agent's eval suite as real jobs, gated on a confidence bound",
        description="An eval is a statistical test: each case runs as N real jobs; the "
        "success rate gets a Wilson 95% interval; with a target the gate passes only when "
        "the interval's lower bound reaches it (exit 0), fails when its upper bound is "
        "below it (exit 1), and is inconclusive otherwise (exit 3). Infrastructure "
        "failures (outages, dead letters, stalls, timeouts) are counted apart.",
    )
    evals.set_defaults(run=_help_of(evals))
    eval_verbs = evals.add_subparsers(title="commands", metavar="COMMAND")
    eval_run = eval_verbs.add_parser(
        "run", parents=[common], help="run a suite (a TOML file, or MODULE[:ATTR])"
    )
    eval_run.add_argument(
        "suite", metavar="SUITE", help="a TOML file, or MODULE[:ATTR] (a SUITE dict by default)"
    )
    eval_run.add_argument(
        "--agent", help="run the suite's cases on this agent instead (compare two agents)"
    )
    eval_run.add_argument("--trials", type=int, help="jobs per case (default: the suite's)")
    eval_run.add_argument("--concurrency", type=int, help="jobs at once (default: the suite's)")
    eval_run.add_argument(
        "--target", type=float, help="the rate the lower bound must reach (default: the suite's)"
    )
    eval_run.add_argument(
        "--baseline",
        type=Path,
        metavar="FILE",
        help="an earlier run's --json record: report regressions and improvements per case "
        "(exact McNemar on trials paired by seed when both runs had the same --seed, else "
        "Fisher's exact test) and over the suite (sign test); a significant regression "
        "fails the run",
    )
    eval_run.add_argument(
        "--seed",
        type=int,
        help="the run's seed, from which every trial's comes (default: the suite's, else a "
        "new one; the report says which, so a run can be repeated)",
    )
    eval_run.add_argument(
        "--up",
        action="store_true",
        help="start a Rig of its own for the eval (rig up in a child process, its own "
        "nats-server on a free port) and stop it after, instead of using a running one",
    )
    eval_run.add_argument(
        "--up-config",
        type=Path,
        metavar="FILE",
        help="with --up: the [[actor]] file rig up starts (default: the refund example)",
    )
    eval_run.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML")
    eval_run.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="also write an HTML report: per-case success with error bars and pass^k "
        "curves, in one self-contained file",
    )
    eval_run.add_argument(
        "--out", type=Path, metavar="FILE", help="also write the --json record to FILE"
    )
    eval_run.set_defaults(run=_eval_run)

    webhooks = verbs.add_parser(
        "webhooks",
        help="what became of the jobs' webhooks",
        description="Webhooks are POSTed by `rig gateway` when a job submitted with one ends "
        "or waits for a person: retried with backoff, then dead-lettered (`rig dlq ls`).",
    )
    webhooks.set_defaults(run=_help_of(webhooks))
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

    gateway = verbs.add_parser(
        "gateway",
        help="serve Rig over HTTP (202 + job id, SSE with resume, long poll) and the web console",
        description="Run the HTTP gateway (actors:Gateway) on loopback: POST /v1/jobs "
        "answers 202 with the job id; GET /v1/jobs/{id}/events streams the journal as "
        "Server-Sent Events that resume by Last-Event-ID on any replica. Stateless: start "
        "as many as you like. The routes are in the README. With a keys file "
        "(RIG_GATEWAY_KEYS, default $RIG_HOME/gateway-keys) every /v1 route needs "
        "Authorization: Bearer <key>. With RIG_WEBHOOK_SECRET it delivers webhooks. The "
        "web console is at /console/ (it asks for a key once; docs/console.md).",
    )
    gateway.add_argument(
        "--host",
        help="address to bind (default: RIG_GATEWAY_HOST or 127.0.0.1); any but loopback "
        "needs API keys (rig keys add NAME)",
    )
    gateway.add_argument("--port", type=int, help="port (default: RIG_GATEWAY_PORT or 8080)")
    gateway.set_defaults(run=_gateway)

    keys = verbs.add_parser(
        "keys",
        help="the gateway's API keys",
        description="API keys of `rig gateway`, kept as SHA-256 hashes in a keys file "
        "(RIG_GATEWAY_KEYS, default $RIG_HOME/gateway-keys). Gateways re-read it when it "
        "changes: a revoked key stops working within seconds.",
    )
    keys.set_defaults(run=_help_of(keys))
    keys_file = argparse.ArgumentParser(add_help=False)
    keys_file.add_argument("--file", type=Path, help="the keys file (default: as above)")
    keys_verbs = keys.add_subparsers(title="commands", metavar="COMMAND")
    keys_add = keys_verbs.add_parser(
        "add",
        parents=[common, keys_file],
        help="make a key; it is printed once, only its hash is kept",
    )
    keys_add.add_argument("name", help="what the key is for (letters, digits, _ and -)")
    keys_add.set_defaults(run=_keys_add)
    keys_ls = keys_verbs.add_parser("ls", parents=[common, keys_file], help="the keys' names")
    keys_ls.set_defaults(run=_keys_ls)
    keys_revoke = keys_verbs.add_parser(
        "revoke", parents=[common, keys_file], help="remove a key by name"
    )
    keys_revoke.add_argument("name")
    keys_revoke.set_defaults(run=_keys_revoke)

    models = verbs.add_parser(
        "models",
        help="check what a model server does with Rig's requests",
        description="Model providers, as the LLM config file (RIG_LLM_CONFIG) defines them.",
    )
    models.set_defaults(run=_help_of(models))
    models_verbs = models.add_subparsers(title="commands", metavar="COMMAND")
    probe = models_verbs.add_parser(
        "probe",
        parents=[common],
        help="ask a provider in every dialect: is the schema enforced? does a stream report usage?",
        description="Sends each provider a question whose honest answer its JSON schema "
        "forbids, in every dialect (openai, llama_cpp, ollama, prompt_only), and one "
        "streamed request; reports which dialect the server enforces, which it rejects, "
        "and whether streams report usage and a finish reason. Exit 0 when every "
        "provider's configured dialect works, 1 when one does not. An agent runs the same "
        "check of its providers when it starts.",
    )
    probe.add_argument(
        "providers", nargs="*", metavar="PROVIDER", help="providers of the config (default: all)"
    )
    probe.add_argument("--config", type=Path, help="the LLM config file (default: $RIG_LLM_CONFIG)")
    probe.add_argument("--url", help="probe this base URL instead (with --model)")
    probe.add_argument("--model", help="the model name to send with --url")
    probe.add_argument(
        "--dialect", choices=list(DIALECTS), default="openai", help="with --url (default openai)"
    )
    probe.add_argument("--no-stream", action="store_true", help="skip the streamed request")
    probe.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per request (default 60)"
    )
    probe.set_defaults(run=_models_probe)

    cluster = verbs.add_parser(
        "cluster",
        help="the health of the NATS servers Rig runs on",
        description="Servers, streams and consumers as JetStream reports them.",
    )
    cluster.set_defaults(run=_help_of(cluster))
    cluster_verbs = cluster.add_subparsers(title="commands", metavar="COMMAND")
    cluster_status = cluster_verbs.add_parser(
        "status",
        parents=[common],
        help="leaders, copies in sync and lag per stream and consumer (exit 1 if unhealthy)",
        description="Every stream and bucket of the deployment and every consumer of its "
        "work stream: its leader, how many of its copies are current and how far behind "
        "the others are, what waits in it; and, for a `rig up --cluster` of this RIG_HOME, "
        "each server's connections, routes and sync setting (from its monitoring port). "
        "Exit 0 when nothing is wrong, 1 with the problems listed.",
    )
    cluster_status.set_defaults(run=_cluster_status)

    ledger = verbs.add_parser(
        "ledger",
        help="inspect and prune the tool-call ledger",
        description="The idempotency ledger: this host's ($RIG_HOME/ledger.sqlite3, or "
        "--file), or with RIG_LEDGER=cluster the cluster's (its replicated bucket, as the "
        "admin).",
    )
    ledger.set_defaults(run=_help_of(ledger))
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
    return parser


def _help_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """For a verb given without its sub-verb: show that verb's help, exit 2."""

    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_ERROR

    return show


# --- verbs ---------------------------------------------------------------------


def _up(args: argparse.Namespace) -> int:
    from actors.deploy.up import UpConfig, run_up

    config = UpConfig.load(args.config)
    gateway_port = args.gateway_port
    if gateway_port is None:
        raw = os.environ.get("RIG_GATEWAY_PORT") or "8080"
        if not raw.isdigit():
            raise _usage(f"RIG_GATEWAY_PORT must be a port number, not {raw!r}")
        gateway_port = int(raw)
    if not 0 <= gateway_port < 65536:
        raise _usage(f"--gateway-port must be a port number, not {gateway_port}")
    if args.cluster is not None and args.cluster not in (3, 5):
        raise _usage(f"--cluster takes 3 or 5 servers (a majority survives), not {args.cluster}")
    if args.cluster_port is not None and args.cluster is None:
        raise _usage("--cluster-port goes with --cluster")
    join: list[str] | None = None
    if args.join is not None:
        join = [url.strip() for url in args.join.split(",") if url.strip()]
        clashes = [
            flag
            for flag, given in (
                ("--cluster", args.cluster),
                ("--port", args.port),
                ("--monitor-port", args.monitor_port),
                ("--tls", args.tls),
                ("--insecure", args.insecure),
            )
            if given
        ]
        if clashes:
            raise _usage(f"--join starts no server: {', '.join(clashes)} cannot go with it")
        if not join or not all(re.match(r"^(nats|tls)://[^/\s]+:\d+$", url) for url in join):
            raise _usage(f"--join takes servers' URLs, nats://HOST:PORT[,...], not {args.join!r}")
    return run_async(
        run_up(
            config,
            port=args.port,
            monitor_port=args.monitor_port,
            gateway_port=None if args.no_gateway else gateway_port,
            json_output=args.json,
            insecure=args.insecure,
            tls=_tls_files(args),
            cluster=args.cluster or 0,
            cluster_port=args.cluster_port,
            join=join,
        )
    )


def _tls_files(args: argparse.Namespace) -> Any:
    """`rig up`'s TLS: False, True (made in $RIG_HOME/tls), or the given files."""
    from actors.runtime.tls import TlsFiles

    given = (args.tls_cert, args.tls_key, args.tls_ca)
    if not args.tls:
        if any(given):
            raise _usage("--tls-cert, --tls-key and --tls-ca go with --tls")
        return False
    if not any(given):
        return True
    if not all(given):
        raise _usage("--tls-cert, --tls-key and --tls-ca go together (or none: a local CA)")
    for path in given:
        if not path.is_file():
            raise _usage(f"{path} is not a file")
    return TlsFiles(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca)


def _actor_run(args: argparse.Namespace) -> int:
    cls = load_actor_class(args.target)
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port < 65536:
            raise _usage(f"--metrics-port must be a port number, not {args.metrics_port}")
        os.environ["RIG_METRICS_PORT"] = str(args.metrics_port)
    if args.json:
        os.environ.setdefault("RIG_LOG_FORMAT", "json")
    profile = args.profile or os.environ.get("RIG_PROFILE_DIR")
    if not profile:
        run_async(cls().run())
        return EXIT_OK
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise _usage("--profile needs pyinstrument: pip install 'rig[bench]'") from None
    profiler = Profiler(interval=0.0005)
    profiler.start()
    try:
        run_async(cls().run())
    finally:
        profiler.stop()
        folder = Path(profile)
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"{cls.__name__}-{os.getpid()}.txt"
        out.write_text(profiler.output_text(unicode=True, show_all=False))
    return EXIT_OK


def _agents(args: argparse.Namespace) -> int:
    async def go(rig: RigClient) -> Any:
        return await rig.agents(), await rig.live_agents()

    infos, live = _with_client(go)
    if args.json:
        _print_json(
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

    job_input = _json_object(args.input, "--input")

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
                **_limits(args),
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
        result = _with_client(go)
    finally:
        tracing.stop()
    if isinstance(result, JobInfo):
        _show_status(result, args.json)
        return _exit_for(result.status)
    if args.json:
        _print_json(result.model_dump(mode="json"))
    else:
        print(f"accepted job {result.job_id}  (rig watch {result.job_id})")
    return EXIT_OK


def _exit_for(status: str) -> int:
    if status == "succeeded":
        return EXIT_OK
    return EXIT_WAITING if status == "waiting_human" else EXIT_JOB_NOT_SUCCEEDED


def _status(args: argparse.Namespace) -> int:
    async def go(rig: RigClient) -> JobInfo:
        info = await rig.status(args.job_id)
        if args.full and info.result is not None:
            results = info.result.get("results") or {}
            for tool, value in results.items():
                results[tool] = await rig.fetch_result(value)
        return info

    info = _with_client(go)
    _show_status(info, args.json)
    return EXIT_OK


def _top(args: argparse.Namespace) -> int:
    from actors.cli.top import render, run_top

    prefix = RigConfig.from_env().names.prefix
    if not 0.2 <= args.interval <= 3600:
        raise _usage("--interval must be from 0.2 to 3600 seconds")
    if args.frames is not None and args.frames < 1:
        raise _usage("--frames must be at least 1")
    live = sys.stdout.isatty() and not args.json

    def draw(now: Any, before: Any) -> None:
        if args.json:
            _print_json(now.to_dict(before))
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

    _with_client(go, role="admin")
    return EXIT_OK


def _trace(args: argparse.Namespace) -> int:
    from actors.cli.trace import render, waterfall

    async def go(rig: RigClient) -> Any:
        return waterfall(await rig.journal(args.job_id))

    fall = _with_client(go)
    if args.json:
        _print_json(fall.to_dict())
    else:
        print(render(fall))
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    async def go(rig: RigClient) -> str:
        await rig.status(args.job_id)  # raises UnknownJobError for a job that does not exist
        final = ""
        streaming = False
        live = False  # tokens arrived live since the last event

        def show_tokens(text: str, *, replay: bool = False) -> None:
            nonlocal streaming
            if args.json:
                token = {"type": "token", "job_id": args.job_id, "text": text}
                _print_json(token | ({"replay": True} if replay else {}))
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
        async for event in rig.events(args.job_id, timeout=args.timeout, until_parked=parked):
            if args.tokens and event.type == "decision" and event.data.get("answer") and not live:
                # A step that ended before we listened: its answer, from the journal.
                show_tokens(str(event.data["answer"]), replay=True)
            live = False
            if streaming:
                print()
                streaming = False
            if args.json:
                _print_json(event.model_dump(mode="json"))
            else:
                print(_describe(event), flush=True)
            if event.type == "status":
                final = str(event.data.get("status"))
        if final == "waiting_human" and not args.json:
            edges = event.data.get("edges") or []
            print(
                f"rig: job {args.job_id} waits for a person: `rig inbox` shows why; "
                f"`rig resolve {args.job_id} --edge {'|'.join(edges) or 'EDGE'}` or "
                f"`rig cancel {args.job_id}` moves it (`rig watch --follow` keeps watching)",
                file=sys.stderr,
            )
        return final

    final = _with_client(go)
    return _exit_for(final)


def _inbox(args: argparse.Namespace) -> int:
    jobs = _with_client(lambda rig: rig.inbox(args.agent))
    if args.json:
        _print_json([job.model_dump(mode="json") for job in jobs])
    elif not jobs:
        print("no jobs are waiting for a person")
    for job in [] if args.json else jobs:
        waited = _ago(job.since)
        print(f"{job.job_id}  {job.agent}  state {job.state}  step {job.step}  waiting {waited}")
        print(f"    reason: {job.reason}")
        print(f"    input:  {json.dumps(job.input)}")
        print(f"    edges:  {', '.join(job.edges) or '(none: rig cancel it)'}")
    return EXIT_OK


def _resolve(args: argparse.Namespace) -> int:
    edge_args = _json_object(args.args, "--args")
    if args.step is not None and args.step < 0:
        raise _usage("--step must be 0 or more")

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
            **_limits(args),
        )

    info = _with_client(go)
    _show_status(info, args.json)
    return EXIT_OK


def _cancel(args: argparse.Namespace) -> int:
    info = _with_client(lambda rig: rig.cancel(args.job_id, reason=args.reason))
    _show_status(info, args.json)
    return EXIT_OK


def _jobs(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise _usage("--limit must be at least 1")
    infos = _with_client(
        lambda rig: rig.jobs(agent=args.agent, status=args.status, limit=args.limit)
    )
    if args.json:
        _print_json([info.model_dump(mode="json") for info in infos])
        return EXIT_OK
    if not infos:
        print("no jobs" + (" match" if args.agent or args.status else " yet"))
    for info in infos:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created_at))
        print(
            f"{info.job_id:<32}  {info.agent:<12}  {info.status:<17}  "
            f"{info.state or '-':<12}  steps {info.steps:<3}  {created}"
        )
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
    for source, entry in lines:
        if args.json:
            _print_json({"file": source, **entry})
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


def _graph(args: argparse.Namespace) -> int:
    if ":" in args.agent:
        from actors.models.agent import Agent

        cls = load_actor_class(args.agent)  # a broken graph raises GraphError here
        if not issubclass(cls, Agent):
            raise _usage(f"{args.agent!r} is not an Agent subclass")
        name, graph = cls.name, cls.graph
    else:
        infos = {info.name: info for info in _with_client(lambda rig: rig.agents())}
        if args.agent not in infos:
            known = ", ".join(sorted(infos)) or "none"
            raise UnknownAgentError(
                f"no agent named {args.agent!r} has registered (registered: {known})",
                agent=args.agent,
            )
        name, graph = args.agent, infos[args.agent].graph
    if args.lint:
        return _lint(args, name, graph)
    if args.config is not None or args.untrusted:
        raise _usage("--config and --untrusted go with --lint")
    text = graph.to_dot(name) if args.format == "dot" else graph.to_mermaid(name)
    if args.json:
        _print_json({"agent": name, "format": args.format, "graph": text})
    else:
        print(text, end="")
    return EXIT_OK


def _lint(args: argparse.Namespace, name: str, graph: Graph) -> int:
    """`rig graph --lint`: where untrusted tool output can steer a consequential edge."""
    from actors.deploy.up import UpConfig
    from actors.tools.executor import ToolExecutor

    untrusted = set(args.untrusted)
    for spec in UpConfig.load(args.config).actors:
        cls = load_actor_class(spec.target)
        if issubclass(cls, ToolExecutor):
            untrusted |= {t for t, tool in cls.tools.items() if tool.spec.untrusted_output}
    consequential = sorted(
        f"{state}.{edge.name}"
        for state, s in graph.states.items()
        for edge in s.edges
        if edge.consequential
    )
    paths = graph.injection_paths(untrusted)
    if args.json:
        _print_json(
            {
                "agent": name,
                "untrusted": sorted(untrusted),
                "consequential": consequential,
                "paths": [dataclasses.asdict(path) for path in paths],
            }
        )
        return EXIT_FOUND if paths else EXIT_OK
    print(
        f"agent {name}: untrusted tools {', '.join(sorted(untrusted)) or 'none'}; "
        f"consequential edges {', '.join(consequential) or 'none'}"
    )
    for path in paths:
        print(f"  UNGUARDED  {path}")
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


def _new(args: argparse.Namespace) -> int:
    from actors.cli.scaffold import scaffold, write

    made = scaffold(args.kind, args.name)
    try:
        paths = write(made, args.dir, force=args.force)
    except FileExistsError as exc:
        raise _usage(str(exc)) from None
    except OSError as exc:
        raise _usage(f"cannot write into {args.dir}: {exc.strerror or exc}") from None
    if args.json:
        _print_json({"files": [str(p) for p in paths], "next": made.next_steps})
        return EXIT_OK
    for path in paths:
        print(f"wrote {path}")
    print("next:")
    for step in made.next_steps:
        print(f"  {step}")
    return EXIT_OK


def _roles(args: argparse.Namespace) -> int:
    from actors.deploy.roles import accounts_of, role_table, roles_for
    from actors.deploy.up import UpConfig

    config = UpConfig.load(args.config)
    names = RigConfig.from_env().names
    roles = roles_for(names, [load_actor_class(spec.target) for spec in config.actors])
    if args.json or args.format == "conf":
        keys = {role.name: f"<{role.name}'s public key>" for role in roles}
        accounts = accounts_of(names, roles, keys)
        if args.json:
            _print_json({"prefix": names.prefix, "accounts": accounts})
        else:
            print("accounts " + json.dumps(accounts, indent=1))
        return EXIT_OK
    print(role_table(names, roles), end="")
    return EXIT_OK


def _gateway(args: argparse.Namespace) -> int:
    from actors.gateway.app import Gateway

    if args.host is not None:
        os.environ["RIG_GATEWAY_HOST"] = args.host
    if args.port is not None:
        if not 0 < args.port < 65536:
            raise _usage("--port must be between 1 and 65535")
        os.environ["RIG_GATEWAY_PORT"] = str(args.port)
    run_async(Gateway().run())
    return EXIT_OK


def _models_probe(args: argparse.Namespace) -> int:
    from actors.models.probe import probe
    from actors.models.providers import OpenAICompatible, load_providers

    if args.url:
        if not args.model:
            raise _usage("--url needs --model, the model name to send")
        host = urllib.parse.urlsplit(args.url).netloc or "url"
        chosen = [
            OpenAICompatible(name=host, base_url=args.url, model=args.model, dialect=args.dialect)
        ]
    else:
        path = args.config or RigConfig.from_env().llm_config
        if path is None:
            raise _usage("no LLM config: give --config FILE, set RIG_LLM_CONFIG, or use --url")
        defined = load_providers(path)
        unknown = [name for name in args.providers if name not in defined]
        if unknown:
            raise _usage(
                f"{path} defines no provider {', '.join(unknown)}; "
                f"it defines: {', '.join(defined) or 'none'}"
            )
        chosen = [defined[name] for name in args.providers or defined]
    if args.timeout <= 0:
        raise _usage("--timeout must be more than 0")

    async def go() -> list[Any]:
        return [
            await probe(provider, stream=not args.no_stream, timeout=args.timeout)
            for provider in chosen
        ]

    reports = run_async(go(), fast=False)
    failed = [r for r in reports if not r.verdict(require_schema=True)[0]]
    if args.json:
        _print_json([r.to_dict() | {"ok": r not in failed} for r in reports])
    else:
        print("\n".join(r.render() for r in reports))
    return EXIT_JOB_NOT_SUCCEEDED if failed else EXIT_OK


def _chaos_llm(args: argparse.Namespace) -> int:
    from actors.testing.chaos_llm import ChaosLLM, Faults, serve

    try:
        faults = Faults(
            latency_p50=args.latency_p50,
            latency_p99=args.latency_p99 or args.latency_p50,
            rate_5xx=args.rate_5xx,
            rate_429=args.rate_429,
            retry_after=args.retry_after,
            rate_hang=args.rate_hang,
            rate_malformed=args.rate_malformed,
            rate_refusal=args.rate_refusal,
            rate_illegal=args.rate_illegal,
            rate_truncate=args.rate_truncate,
        )
    except ValueError as exc:
        raise _usage(str(exc)) from None
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise _usage(f"--api-key-env {args.api_key_env}: that variable is not set")
    chaos = ChaosLLM(
        faults, seed=args.seed, model=args.model, main_path=args.main_path, api_key=api_key
    )

    async def go() -> None:
        runner, port = await serve(chaos, host=args.host, port=args.port)
        url = f"http://{args.host}:{port}/v1"
        if args.json:
            _print_json({"event": "chaos_llm.ready", "url": url, "port": port})
        else:
            print(
                f"chaos-llm serving {args.model} on {url} (seed {args.seed}); Ctrl-C stops",
                flush=True,
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    run_async(go())
    return EXIT_OK


def _dlq_ls(args: argparse.Namespace) -> int:
    letters = _with_client(lambda rig: rig.dead_letters(limit=args.limit), role="admin")
    if args.json:
        _print_json(
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
        print(f"{seq:<6} {_ago(letter.ts):>8} ago  {letter.actor}  {letter.subject}")
        print(
            f"       {letter.error.get('code')}: {letter.reason}  ({letter.deliveries} deliveries)"
        )
    return EXIT_OK


def _ps(args: argparse.Namespace) -> int:
    if not 0 < args.listen <= 60:
        raise _usage("--listen must be more than 0 and at most 60 seconds")
    found = _with_client(lambda rig: rig.actors(listen=args.listen))
    if args.kind:
        found = [actor for actor in found if actor.kind == args.kind]
    if args.json:
        _print_json([actor.to_dict() for actor in found])
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
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        left = [cell.ljust(width) for cell, width in zip(row[:3], widths[:3], strict=True)]
        right = [cell.rjust(width) for cell, width in zip(row[3:], widths[3:], strict=True)]
        print("  ".join(left + right))
    return EXIT_OK


_PS_COUNTS = ("handled", "retried", "errors", "dead_letters")


def _eval_run(args: argparse.Namespace) -> int:
    from actors.deploy.up import up_home, up_process
    from actors.evals.report import html_report
    from actors.evals.run import (
        compare,
        junit_xml,
        load_suite,
        render,
        render_comparison,
        report,
        run_seed,
        run_trials,
    )
    from actors.runtime.client import RigClient

    suite = load_suite(args.suite)
    if args.agent:
        suite = suite.model_copy(update={"agent": check_token(args.agent, what="agent name")})
    trials = args.trials or suite.trials
    concurrency = args.concurrency or suite.concurrency
    target = args.target if args.target is not None else suite.target
    if trials < 1 or concurrency < 1:
        raise _usage("--trials and --concurrency must be at least 1")
    if target is not None and not 0 < target < 1:
        raise _usage("--target must be between 0 and 1")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise _usage("--seed must be a number from 0 up")
    if args.up_config is not None and not args.up:
        raise _usage("--up-config goes with --up")
    seed = run_seed(suite, args.seed)
    baseline = None
    if args.baseline is not None:
        baseline = _json_value(f"@{args.baseline}", "--baseline")
        if not isinstance(baseline, dict) or "cases" not in baseline:
            raise _usage("--baseline must be the --json record of an earlier rig eval run")
    total = trials * len(suite.case)
    tally = {"pass": 0, "fail": 0, "infra": 0}
    live = sys.stderr.isatty() and not args.json

    def on_trial(trial: Any) -> None:
        tally[trial.outcome] += 1
        done = sum(tally.values())
        line = (
            f"trials {done}/{total}: {tally['pass']} passing, {tally['fail']} failing, "
            f"{tally['infra']} infrastructure"
        )
        if live:
            filled = 24 * done // total
            bar = "#" * filled + "-" * (24 - filled)
            end = "" if done < total else "\n"
            print(f"\r[{bar}] {line}", end=end, file=sys.stderr, flush=True)
        elif done == total or done % max(1, total // 10) == 0:
            print(line, file=sys.stderr, flush=True)

    async def go(rig: RigClient) -> Any:
        return await run_trials(
            rig, suite, trials=trials, concurrency=concurrency, seed=seed, on_trial=on_trial
        )

    async def go_up() -> Any:
        async with up_process(args.up_config) as url:
            if not args.json:
                print(f"rig eval: started a Rig of its own at {url}", file=sys.stderr)
            config = dataclasses.replace(RigConfig.from_env(), nats_url=url, home=up_home())
            async with await RigClient.connect(config) as rig:
                return await go(rig)

    if not args.up:
        # Trials are real jobs: against a running deployment, its tools act for real and
        # its people are asked; said before the first one starts.
        print(
            f"rig eval: {total} trial(s) run as jobs of the running deployment "
            f"(RIG_PREFIX {RigConfig.from_env().names.prefix!r}): their tools' side effects "
            "are real and jobs that wait for a person fill its inbox; `--up` runs them "
            "on a Rig of their own",
            file=sys.stderr,
        )
    done = run_async(go_up(), fast=False) if args.up else _with_client(go)
    result = report(suite, done, target, seed=seed)
    record = result.to_dict()
    comparison = compare(result, baseline) if baseline is not None else None
    if comparison is not None:
        record["baseline"] = comparison.to_dict()
    code = result.exit_code()
    regressed = comparison is not None and bool(comparison.regressions)
    if regressed:
        # A significant regression fails the run, whatever the gate said; both say so.
        code, record["verdict"] = 1, "fail"
    if args.out is not None:
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    if args.junit is not None:
        args.junit.write_text(junit_xml(result))
    if args.html is not None:
        args.html.write_text(html_report(result, comparison))
    if args.json:
        _print_json(record)
    else:
        print(render(result))
        if comparison is not None:
            print(render_comparison(comparison))
        if comparison is not None and regressed:
            worse = len(comparison.regressions)
            print(f"FAIL: {worse} significant regression(s) against the baseline")
    return code


def _keys_add(args: argparse.Namespace) -> int:
    path = args.file or keys_path()
    key = add_key(path, args.name)
    if args.json:
        _print_json({"name": args.name, "key": key, "file": str(path)})
    else:
        print(key)
        print(
            f"rig: the key {args.name!r} is stored hashed in {path}; it is not shown again",
            file=sys.stderr,
        )
    return EXIT_OK


def _keys_ls(args: argparse.Namespace) -> int:
    path = args.file or keys_path()
    names = load_keys(path).names if path.exists() else []
    if args.json:
        _print_json({"file": str(path), "keys": names})
    elif not names:
        print(f"no keys in {path}")
    else:
        print("\n".join(names))
    return EXIT_OK


def _keys_revoke(args: argparse.Namespace) -> int:
    path = args.file or keys_path()
    revoke_key(path, args.name)
    if args.json:
        _print_json({"name": args.name, "revoked": True})
    else:
        print(f"revoked {args.name}")
    return EXIT_OK


def _webhooks_ls(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise _usage("--limit must be at least 1")
    records = _with_client(lambda rig: rig.webhooks(job_id=args.job))
    if args.failed:
        records = [record for record in records if record.state != "delivered"]
    records = records[: args.limit]
    if args.json:
        _print_json([record.model_dump(mode="json") for record in records])
        return EXIT_OK
    if not records:
        print("no webhooks" + (" not delivered" if args.failed else ""))
    for record in records:
        answer = f"HTTP {record.http_status}" if record.http_status else "no answer"
        print(
            f"{record.webhook_id}  {_ago(record.ts):>4} ago  {record.type:<22} {record.state:<11}"
            f" {record.attempts} attempt{'s' if record.attempts != 1 else ''}  {answer}  "
            f"{record.url}"
        )
        if record.error and record.state != "delivered":
            print(f"    {record.error}")
    return EXIT_OK


def _dlq_replay(args: argparse.Namespace) -> int:
    letter = _with_client(lambda rig: rig.replay(args.letter_id, keep=args.keep), role="admin")
    if args.json:
        _print_json({"id": args.letter_id, "subject": letter.subject, "kept": args.keep})
    else:
        print(f"replayed dead letter {args.letter_id} to {letter.subject}")
    return EXIT_OK


def _limits(args: argparse.Namespace) -> dict[str, Any]:
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


def _json_object(text: str, option: str) -> dict[str, Any]:
    """A JSON object given inline, as `@FILE`, or as `-` (stdin). Validation of what it
    holds (finite numbers, depth) is the request's, the same for every client."""
    value = _json_value(text, option)
    if not isinstance(value, dict):
        raise _usage(f"{option} must be a JSON object")
    return value


def _json_value(text: str, option: str) -> Any:
    """Any JSON value given inline, as `@FILE`, or as `-` (stdin)."""
    if text == "-":
        raw = sys.stdin.buffer.read()
        source = f"{option} (stdin)"
    elif text.startswith("@"):
        try:
            raw = Path(text[1:]).read_bytes()
        except OSError as exc:
            raise _usage(f"{option}: cannot read {text[1:]!r}: {exc.strerror or exc}") from None
        source = f"{option} ({text[1:]})"
    else:
        try:
            raw = text.encode()
        except UnicodeEncodeError:
            raise _usage(f"{option} is not valid UTF-8 text") from None
        source = option
    try:
        value = loads(raw.decode())
    except UnicodeDecodeError:
        raise _usage(f"{source} is not valid UTF-8 text") from None
    except RecursionError:
        raise SchemaError(f"{source} nests too deep") from None
    except ValueError as exc:
        raise _usage(f"{source} is not JSON: {exc}") from None
    return value


def _ago(ts: float) -> str:
    seconds = max(time.time() - ts, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _cluster_status(args: argparse.Namespace) -> int:
    from actors.deploy.health import cluster_status, status_lines

    status = _with_client(
        lambda rig: cluster_status(rig.js, rig.names, rig.config.home), role="admin"
    )
    if args.json:
        _print_json(status)
    else:
        print("\n".join(status_lines(status)))
    return EXIT_OK if status["healthy"] else 1


def _in_cluster(args: argparse.Namespace) -> bool:
    """Whether `rig ledger` works on the cluster's ledger (`RIG_LEDGER=cluster`, no
    `--file`): through NATS, as the admin."""
    return args.file is None and RigConfig.from_env().ledger == "cluster"


def _ledger_file(args: argparse.Namespace) -> Path:
    path = args.file or RigConfig.from_env().home / "ledger.sqlite3"
    if not path.exists():
        raise _usage(f"no ledger at {path} (set RIG_HOME or --file)")
    return Path(path)


def _record_json(record: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(record)


def _ledger_ls(args: argparse.Namespace) -> int:
    from actors.tools.cluster import list_claims
    from actors.tools.ledger import list_records

    if _in_cluster(args):
        records = _with_client(
            lambda rig: list_claims(rig.js, rig.names, limit=args.limit, state=args.state),
            role="admin",
        )
    else:
        records = run_async(
            list_records(_ledger_file(args), limit=args.limit, state=args.state), fast=False
        )
    if args.json:
        _print_json([_record_json(r) for r in records])
        return EXIT_OK
    for r in records:
        print(f"{r.key[:16]}  {r.state:<11} epoch {r.epoch}  {r.tool:<16} job {r.job_id}")
    return EXIT_OK


def _ledger_show(args: argparse.Namespace) -> int:
    from actors.tools.cluster import get_claim
    from actors.tools.ledger import get_record

    if _in_cluster(args):
        record = _with_client(lambda rig: get_claim(rig.js, rig.names, args.key), role="admin")
    else:
        record = run_async(get_record(_ledger_file(args), args.key), fast=False)
    if record is None:
        raise _usage(f"no record with key {args.key!r}")
    if args.json:
        _print_json(_record_json(record))
    else:
        for name, value in _record_json(record).items():
            print(f"{name:<12} {json.dumps(value) if isinstance(value, dict) else value}")
    return EXIT_OK


def _ledger_settle(args: argparse.Namespace) -> int:
    from actors.tools.cluster import settle_claim
    from actors.tools.ledger import settle

    result = _json_value(args.happened, "--happened") if args.happened is not None else None
    answer = {"happened": not args.not_happened, "result": result, "by": args.by}
    try:
        if _in_cluster(args):
            record = _with_client(
                lambda rig: settle_claim(rig.js, rig.names, args.key, **answer), role="admin"
            )
        else:
            record = run_async(settle(_ledger_file(args), args.key, **answer), fast=False)
    except ValueError as exc:
        raise _usage(f"cannot settle {args.key!r}: {exc}") from None
    if args.json:
        _print_json(_record_json(record))
    else:
        print(f"{record.key[:16]}  {record.state}  ({record.owner})")
    return EXIT_OK


def _ledger_prune(args: argparse.Namespace) -> int:
    from actors.tools.cluster import jobs_ended, prune_claims
    from actors.tools.ledger import prune

    seconds = parse_duration(args.older_than, zero=True)
    if _in_cluster(args):
        deleted = _with_client(
            lambda rig: prune_claims(
                rig.js, rig.names, older_than=seconds, retention=rig.config.retention
            ),
            role="admin",
        )
    else:
        path = _ledger_file(args)  # the deployment says which jobs have ended

        async def ended(rig: RigClient, job_ids: set[str]) -> set[str]:
            return (await jobs_ended(rig.js, rig.names, job_ids))[0]

        deleted = _with_client(
            lambda rig: prune(path, older_than=seconds, ended=lambda ids: ended(rig, ids)),
            role="admin",
        )
    if args.json:
        _print_json({"deleted": deleted, "older_than_s": seconds})
    else:
        print(f"deleted {deleted} finished record(s) older than {args.older_than}")
    return EXIT_OK


def parse_duration(text: str, *, zero: bool = False) -> float:
    """`30d`, `12h`, `90m`, `45s` or a plain number of seconds; finite, and positive
    unless `zero` allows 0."""
    try:
        return seconds_of(text, zero=zero)
    except ValueError as exc:
        raise _usage(str(exc)) from None


# --- helpers -------------------------------------------------------------------


def load_actor_class(target: str) -> type:
    """Import `MODULE:CLASS` and check it is an Actor; a usage error otherwise."""
    from actors.deploy.up import UpConfigError, load_actor_class

    try:
        return load_actor_class(target)
    except UpConfigError as exc:
        raise _usage(exc.message) from None


def _admit(args: argparse.Namespace) -> int:
    for target in args.targets:
        load_actor_class(target)  # a mistake is said here, before anything is asked

    async def ask(rig: RigClient) -> dict[str, Any]:
        subject = rig.names.admit
        request = json.dumps({"classes": args.targets}).encode()
        from nats.errors import NoRespondersError

        try:
            msg = await rig.nc.request(subject, request, timeout=60)
        except NoRespondersError:
            raise RigError(
                f"no `rig up` of deployment {rig.names.prefix!r} answers on {subject}: "
                "admit classes while `rig up` runs (it owns the server's config); with a "
                "server of your own, add them to its users (`rig roles --format conf`)"
            ) from None
        answer: dict[str, Any] = json.loads(msg.data)
        return answer

    answer = _with_client(ask, role="admin")
    if "error" in answer:
        raise RigError(f"rig up did not admit them: {answer['error'].get('message')}")
    if args.json:
        _print_json(answer)
        return EXIT_OK
    print(f"admitted {', '.join(args.targets)} (roles {', '.join(answer['roles'])})")
    print("start each with: " + "; ".join(f"rig actor run {t}" for t in args.targets))
    return EXIT_OK


def _notice(text: str) -> None:
    """A word to the person at the terminal, beside the command's output."""
    print(f"rig: {text}", file=sys.stderr, flush=True)


def _with_client(work: Callable[[RigClient], Awaitable[Any]], *, role: str = "client") -> Any:
    """Run `work` with a client connected as `role` (`client`, or `admin` for the
    operator's commands: dead letters, `rig top`)."""
    from actors.runtime.client import RigClient

    async def go() -> Any:
        config = dataclasses.replace(RigConfig.from_env(), connect_timeout=5.0, refused_wait=1.0)
        async with await RigClient.connect(config, role=role, notices=_notice) as rig:
            return await work(rig)

    return run_async(go(), fast=False)


def _show_status(info: JobInfo, as_json: bool) -> None:
    if as_json:
        _print_json(info.model_dump(mode="json"))
        return
    print(f"job     {info.job_id}")
    print(
        f"agent   {info.agent}" + (f"   graph {info.graph_version}" if info.graph_version else "")
    )
    print(f"status  {info.status}")
    print(f"state   {info.state}   steps {info.steps}/{info.max_steps}")
    print(f"path    {' -> '.join(info.path)}")
    print(f"spent   {_spent(info)}")
    if info.trace_id is not None:
        print(f"trace   {info.trace_id}")
    if info.waiting is not None:
        print(f"waiting {info.waiting.kind}: {info.waiting.reason}")
        print(f"edges   {', '.join(info.waiting.edges) or '(none: rig cancel it)'}")
    if info.result is not None:
        print(f"result  {json.dumps(info.result)}")
    if info.error is not None:
        print(f"error   {info.error.get('message')}")


def _spent(info: JobInfo) -> str:
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


def _describe(event: Event) -> str:
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
        case "status" if data.get("status") == "waiting_human":
            return f"{head} waiting_human in {data.get('state')}: {data.get('reason')}"
        case "status":
            return f"{head} {data.get('status')} in {data.get('state')}"
    return f"{head} {json.dumps(data)}"


def _print_json(value: Any) -> None:
    print(json.dumps(value), flush=True)


def _error(args: argparse.Namespace, error: dict[str, Any]) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"error": error}), flush=True)
    else:
        print(f"rig: {error.get('code')}: {error.get('message')}", file=sys.stderr)


class _UsageError(RigError):
    code = "usage_error"


def _usage(message: str) -> _UsageError:
    return _UsageError(message)
