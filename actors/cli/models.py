"""`rig models probe`, `rig chaos-llm`, `rig eval run`: models, and measuring agents on them."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.cli.common import (
    EXIT_JOB_NOT_SUCCEEDED,
    EXIT_OK,
    help_of,
    json_value,
    print_json,
    usage_error,
    with_client,
)
from actors.runtime.loop import run_async
from actors.runtime.settings import DIALECTS, RigConfig
from protocols import (
    check_token,
)

if TYPE_CHECKING:  # each command imports what it needs: `rig --help` starts at once
    from actors.runtime.client import RigClient


def add(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Add this family's verbs to `rig`'s parser (`common`: the options every verb takes)."""
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
    evals = verbs.add_parser(
        "eval",
        help="run an agent's eval suite as real jobs, gated on a confidence bound",
        description="An eval is a statistical test: each case runs as N real jobs; the "
        "success rate gets a Wilson 95% interval; with a target the gate passes only when "
        "the interval's lower bound reaches it (exit 0), fails when its upper bound is "
        "below it (exit 1), and is inconclusive otherwise (exit 3). Infrastructure "
        "failures (outages, dead letters, stalls, timeouts) are counted apart.",
    )
    evals.set_defaults(run=help_of(evals))
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
    models = verbs.add_parser(
        "models",
        help="check what a model server does with Rig's requests",
        description="Model providers, as the LLM config file (RIG_LLM_CONFIG) defines them.",
    )
    models.set_defaults(run=help_of(models))
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


def _models_probe(args: argparse.Namespace) -> int:
    from actors.models.config import load_providers
    from actors.models.dialects import OpenAICompatible
    from actors.models.probe import probe

    if args.url:
        if not args.model:
            raise usage_error("--url needs --model, the model name to send")
        host = urllib.parse.urlsplit(args.url).netloc or "url"
        chosen = [
            OpenAICompatible(name=host, base_url=args.url, model=args.model, dialect=args.dialect)
        ]
    else:
        path = args.config or RigConfig.from_env().llm_config
        if path is None:
            raise usage_error("no LLM config: give --config FILE, set RIG_LLM_CONFIG, or use --url")
        defined = load_providers(path)
        unknown = [name for name in args.providers if name not in defined]
        if unknown:
            raise usage_error(
                f"{path} defines no provider {', '.join(unknown)}; "
                f"it defines: {', '.join(defined) or 'none'}"
            )
        chosen = [defined[name] for name in args.providers or defined]
    if args.timeout <= 0:
        raise usage_error("--timeout must be more than 0")

    async def go() -> list[Any]:
        return [
            await probe(provider, stream=not args.no_stream, timeout=args.timeout)
            for provider in chosen
        ]

    reports = run_async(go(), fast=False)
    failed = [r for r in reports if not r.verdict(require_schema=True)[0]]
    if args.json:
        print_json([r.to_dict() | {"ok": r not in failed} for r in reports])
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
        raise usage_error(str(exc)) from None
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise usage_error(f"--api-key-env {args.api_key_env}: that variable is not set")
    chaos = ChaosLLM(
        faults, seed=args.seed, model=args.model, main_path=args.main_path, api_key=api_key
    )

    async def go() -> None:
        runner, port = await serve(chaos, host=args.host, port=args.port)
        url = f"http://{args.host}:{port}/v1"
        if args.json:
            print_json({"event": "chaos_llm.ready", "url": url, "port": port})
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
        raise usage_error("--trials and --concurrency must be at least 1")
    if target is not None and not 0 < target < 1:
        raise usage_error("--target must be between 0 and 1")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise usage_error("--seed must be a number from 0 up")
    if args.up_config is not None and not args.up:
        raise usage_error("--up-config goes with --up")
    seed = run_seed(suite, args.seed)
    baseline = None
    if args.baseline is not None:
        baseline = json_value(f"@{args.baseline}", "--baseline")
        if not isinstance(baseline, dict) or "cases" not in baseline:
            raise usage_error("--baseline must be the --json record of an earlier rig eval run")
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
    done = run_async(go_up(), fast=False) if args.up else with_client(go)
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
        print_json(record)
    else:
        print(render(result))
        if comparison is not None:
            print(render_comparison(comparison))
        if comparison is not None and regressed:
            worse = len(comparison.regressions)
            print(f"FAIL: {worse} significant regression(s) against the baseline")
    return code
