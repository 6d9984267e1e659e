"""Agents whose tools are real MCP servers' (installed by scripts/test: mcp-server-time
from PyPI into .venv/tools, @modelcontextprotocol/server-filesystem from npm into
.venv/npm), for tests/integration/test_mcp.py. The filesystem server may touch only
`$RIG_TEST_FILES`, a folder the test makes."""

from __future__ import annotations

import sys
from typing import Any

from pydantic import BaseModel

from actors import Agent, RoutePrompt, RuleLLM
from actors.tools.mcp import McpTool, McpTools, stdio
from protocols import LOOKUP, Edge, Graph, State
from tests.conftest import ROOT

TOOLS_BIN = ROOT / ".venv" / "tools" / "bin"
NPM_BIN = ROOT / ".venv" / "npm" / "node_modules" / ".bin"


class TimeTools(McpTools):
    name = "time-tools"
    server = stdio(str(TOOLS_BIN / "mcp-server-time"))


class FileTools(McpTools):
    name = "file-tools"
    server = stdio(str(NPM_BIN / "mcp-server-filesystem"), "${RIG_TEST_FILES}")
    allow = ("write_file", "read_text_file", "list_directory")
    overrides = {"write_file": McpTool(timeout=20.0)}


class Zone(BaseModel):
    timezone: str


class Write(BaseModel):
    path: str
    content: str


class Read(BaseModel):
    path: str


class Said(BaseModel):
    text: str


def tell_time(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    if prompt.state == "ask":
        return "now", {"timezone": str(prompt.context.input.get("timezone", "Etc/UTC"))}
    found = prompt.context.results.get("get_current_time") or {}
    return "say", {"text": f"it is {found.get('datetime')} in {found.get('timezone')}"}


def file_it(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    job = prompt.context.input
    if prompt.state == "write":
        return "write", {"path": job["path"], "content": job["content"]}
    if prompt.state == "check":
        return "read", {"path": job["path"]}
    found = prompt.context.results.get("read_text_file") or {}
    return "say", {"text": str(found.get("content", found.get("text", "")))}


def _graph(first: str, edge: Edge, *more: tuple[str, Edge]) -> Graph:
    """`first` takes `edge`; each of `more` is a state and its edge, in order; the last
    state says what was found (an output edge)."""
    states = {first: edge, **dict(more)}
    built = {
        name: State(edges=(step, Edge(name="give_up", to="failed")), safe_edge="give_up")
        for name, step in states.items()
    }
    built["answer"] = State(
        edges=(Edge(name="say", to="done", output=Said), Edge(name="give_up", to="failed")),
        safe_edge="give_up",
    )
    return Graph(
        initial=first,
        states={**built, "done": State(terminal="succeeded"), "failed": State(terminal="failed")},
    )


class TimeAgent(Agent):
    name = "clock"
    graph = _graph("ask", Edge(name="now", to="answer", tool="get_current_time", args=Zone))
    example_input = {"timezone": "Europe/Paris"}
    llm = RuleLLM(tell_time)


class FileAgent(Agent):
    name = "filer"
    graph = _graph(
        "write",
        Edge(name="write", to="check", tool="write_file", args=Write),
        ("check", Edge(name="read", to="answer", tool="read_text_file", args=Read)),
    )
    llm = RuleLLM(file_it)


class Long(BaseModel):
    duration: float
    steps: int


class EverythingTools(McpTools):
    """The reference server's long-running operation, read-only as the server says."""

    name = "everything-tools"
    server = stdio(str(NPM_BIN / "mcp-server-everything"))
    allow = ("trigger-long-running-operation", "get-sum")


class EverythingEffects(EverythingTools):
    """The same, declared to have side effects (as a payment would)."""

    name = "everything-effects"
    overrides = {"trigger-long-running-operation": McpTool(side_effects=True, timeout=90.0)}


def run_long(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    if prompt.state == "run":
        seconds = float(prompt.context.input.get("seconds", 1))
        return "run", {"duration": seconds, "steps": 2}
    found = prompt.context.results.get("trigger-long-running-operation") or {}
    return "say", {"text": str(found.get("text", ""))[:200]}


class LongAgent(Agent):
    name = "long"
    graph = _graph(
        "run",
        Edge(name="run", to="answer", tool="trigger-long-running-operation", args=Long),
    )
    llm = RuleLLM(run_long)


class TappedFileTools(FileTools):
    """FileTools whose server's calls are noted in `$RIG_TEST_TAP` as they reach it."""

    name = "tapped-file-tools"
    server = stdio(
        sys.executable,
        "-m",
        "tests.support.mcp_tap",
        "${RIG_TEST_TAP}",
        str(NPM_BIN / "mcp-server-filesystem"),
        "${RIG_TEST_FILES}",
    )


class BadTools(McpTools):
    """A server that hangs or answers garbage on some calls (tests/support/bad_mcp_server.py)."""

    name = "bad-tools"
    server = stdio(sys.executable, "-m", "tests.support.bad_mcp_server")
    timeout = 3.0


class GitTools(McpTools):
    """mcp-server-git (PyPI) on the repository `$RIG_TEST_REPO`."""

    name = "git-tools"
    server = stdio(str(TOOLS_BIN / "mcp-server-git"), "--repository", "${RIG_TEST_REPO}")
    allow = ("git_add", "git_commit", "git_log", "git_status")


def archive(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    """Look at the folder, read its notes, then write a summary of them (the filesystem
    server's tools: two lookups, then one of the set the `save` edge offers)."""
    root = prompt.context.input["root"]
    looked = [d for d in prompt.context.decisions if d["edge"] == LOOKUP]
    if prompt.state == "answer":
        return "say", {"text": f"saved after {len(looked)} lookups"}
    if not looked:
        return LOOKUP, {"tool": "list_directory", "args": {"path": root}}
    if len(looked) == 1:
        return LOOKUP, {"tool": "read_text_file", "args": {"path": f"{root}/notes.md"}}
    listing, notes = (str(d.get("result")) for d in looked)
    content = f"files: {'notes.md' in listing}; notes: {'buy milk' in notes}\n"
    return "save", {
        "tool": "write_file",
        "args": {"path": f"{root}/summary.md", "content": content},
    }


class Archivist(Agent):
    """Looks around with the server's read-only tools, then writes with its set."""

    name = "archivist"
    graph = Graph(
        initial="look",
        states={
            "look": State(
                lookup=FileTools.all,
                max_lookups=3,
                edges=(
                    Edge(name="save", to="answer", tools=FileTools.all),
                    Edge(name="give_up", to="failed"),
                ),
                safe_edge="give_up",
            ),
            "answer": State(
                edges=(Edge(name="say", to="done", output=Said), Edge(name="give_up", to="failed")),
                safe_edge="give_up",
            ),
            "done": State(terminal="succeeded"),
            "failed": State(terminal="failed"),
        },
    )
    llm = RuleLLM(archive)
