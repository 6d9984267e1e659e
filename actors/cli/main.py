"""The `rig` command line.

Exit codes: 0 success; 1 the job ended in a status other than `succeeded`;
2 a usage or connection error, an unknown job or agent, a bad input; 3 the job waits
for a person (`submit --wait`, `watch`). A closed pipe (`rig watch JOB | head`) ends
the command quietly. No user mistake prints a traceback; `--debug` shows one.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
import traceback

import structlog

from actors.cli import deploy, jobs, mcp, models, operate, schedules
from actors.cli.common import EXIT_BROKEN_PIPE, EXIT_ERROR, say_error
from actors.runtime.settings import DEFAULT_NATS_URL
from protocols import RigError

_ENV_HELP = f"""
environment:
  RIG_NATS_URL   NATS server URL (default {DEFAULT_NATS_URL})
  RIG_PREFIX     namespace of subjects, streams and buckets (default rig)
  RIG_HOME       local data folder: ledger, rig up's server (default ./.rig)
  RIG_LLM_CONFIG the LLM config file: providers, and which agents route with them
  RIG_MAX_DELIVER deliveries of a failing message before it is dead-lettered (default 10)
  RIG_LIMIT_DEPTH, _STRING, _ITEMS, _KEYS  what an input may hold (64 levels, 1000000
                 characters, 100000 elements, 10000 keys)
  docs/reference/configuration.md has every one

exit codes:
  0 success; 1 the job ended other than succeeded; 2 a mistake (usage, unknown job or
  agent, bad input, no server: one line on stderr); 3 the job waits for a person
"""


def main(argv: list[str] | None = None) -> None:
    # Until a command configures logging itself (rig up, rig actor run), a line logged on
    # the way (a stream made or updated) goes to stderr, never into the command's output.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
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
        say_error(args, exc.to_dict())
        code = EXIT_ERROR
    except TimeoutError as exc:
        say_error(args, {"code": "timeout", "message": str(exc) or "timed out"})
        code = EXIT_ERROR
    except Exception as exc:  # a bug of ours, not the user's: say so in one line
        if args.debug:
            raise
        message = f"{type(exc).__name__}: {exc} (a bug in rig; --debug shows the traceback)"
        say_error(args, {"code": "internal_error", "message": message})
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

    # One module per family of commands, each its parsers beside its handlers.
    for family in (deploy, jobs, schedules, operate, models, mcp):
        family.add(verbs, common)
    return parser
