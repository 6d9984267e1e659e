"""`rig mcp`: what an MCP server offers, and how Rig serves each of its tools."""

from __future__ import annotations

import argparse
from typing import Any

from actors.cli.common import EXIT_OK, print_json, table, usage_error


def add(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Add this family's verbs to `rig`'s parser (`common`: the options every verb takes)."""
    mcp = verbs.add_parser(
        "mcp",
        help="MCP servers' tools behind the ledger",
        description="Rig serves an MCP server's tools as tools of its own (`McpTools`, "
        "actors/tools/mcp.py); needs the mcp extra (pip install 'rig[mcp]').",
    )
    family = mcp.add_subparsers(title="commands", metavar="COMMAND")
    ls = family.add_parser(
        "ls",
        parents=[common],
        help="list an MCP server's tools and how Rig would serve each",
        description="Start the server (or reach it), list its tools with their "
        "annotations, and say how Rig serves each: a read-only tool may run again; every "
        "other goes through the ledger at most once. The server is an McpTools class "
        "(--class MODULE:CLASS, whose allow-list and overrides apply), a command after "
        "--, or --url for Streamable HTTP.",
        epilog="examples: rig mcp ls -- mcp-server-time | rig mcp ls --url "
        "http://127.0.0.1:8000/mcp | rig mcp ls --class myapp.tools:FileTools",
    )
    ls.add_argument("--class", dest="target", metavar="MODULE:CLASS", help="an McpTools class")
    ls.add_argument("--url", help="a Streamable HTTP server")
    ls.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...: run it")
    ls.set_defaults(run=_ls)


def _ls(args: argparse.Namespace) -> int:
    try:
        from actors.tools.mcp import McpTools, describe, http, stdio
    except ModuleNotFoundError as exc:
        raise usage_error(
            f"rig mcp needs the MCP SDK ({exc.name} is missing): pip install 'rig[mcp]'"
        ) from None
    command = [word for word in args.command if word != "--"]
    given = [bool(args.target), bool(args.url), bool(command)]
    if sum(given) != 1:
        raise usage_error("give one server: --class MODULE:CLASS, --url URL, or -- COMMAND ARGS...")
    if args.target:
        from actors.deploy.up import load_actor_class

        cls = load_actor_class(args.target)
        if not issubclass(cls, McpTools):
            raise usage_error(f"{args.target} is not an McpTools class")
        target: type[McpTools] = cls
    else:
        server = http(args.url) if args.url else stdio(command[0], *command[1:])
        target = type("Listed", (McpTools,), {"name": "listed", "server": server})
    tools = describe(target.list_tools())
    if args.json:
        print_json(tools)
        return EXIT_OK

    def hint(value: Any) -> str:
        return "-" if value is None else "yes" if value else "no"

    rows = [
        (
            tool["tool"],
            hint(tool["read_only"]),
            hint(tool["destructive"]),
            hint(tool["idempotent"]),
            hint(tool["open_world"]),
            tool["ledger"],
            ", ".join(tool["arguments"]) or "-",
        )
        for tool in tools
    ]
    header = ("tool", "read-only", "destructive", "idempotent", "open-world", "in Rig", "args")
    for line in table(rows, header=header):
        print(line)
    print(f"{len(tools)} tool(s) from {target.server}")
    return EXIT_OK
