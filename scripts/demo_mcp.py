"""Part 4 of `scripts/demo`: an agent whose tools are an MCP server's, behind the ledger.

The server is @modelcontextprotocol/server-filesystem (npm, installed into .venv/npm by
scripts/demo), allowed `$RIG_HOME/reports` only. The agent saves a note there with the
server's `write_file` (not read-only: at most once, through the ledger) and reads it
back with `read_text_file` (read-only), then answers with what it read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from actors import Agent, RoutePrompt, RuleLLM
from actors.tools.mcp import McpTools, stdio
from protocols import Edge, Graph, State

SERVER = Path(__file__).resolve().parents[1] / ".venv" / "npm" / "node_modules" / ".bin"


class FileTools(McpTools):
    name = "file-tools"
    server = stdio(str(SERVER / "mcp-server-filesystem"), "${RIG_HOME}/reports")
    allow = ("write_file", "read_text_file")


class Write(BaseModel):
    path: str
    content: str


class Read(BaseModel):
    path: str


class Note(BaseModel):
    text: str


def route(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    note = prompt.context.input
    if prompt.state == "save":
        return "write", {"path": note["path"], "content": note["text"]}
    if prompt.state == "check":
        return "read", {"path": note["path"]}
    found = prompt.context.results.get("read_text_file") or {}
    return "answer", {"text": str(found.get("content", found.get("text", "")))}


def _step(edge: Edge) -> State:
    return State(edges=(edge, Edge(name="give_up", to="failed")), safe_edge="give_up")


class NoteAgent(Agent):
    """Saves a note through the MCP filesystem server and reads it back."""

    name = "notes"
    graph = Graph(
        initial="save",
        states={
            "save": _step(Edge(name="write", to="check", tool="write_file", args=Write)),
            "check": _step(Edge(name="read", to="answered", tool="read_text_file", args=Read)),
            "answered": _step(Edge(name="answer", to="done", output=Note)),
            "done": State(terminal="succeeded"),
            "failed": State(terminal="failed"),
        },
    )
    llm = RuleLLM(route)


MCP_ACTORS = ("scripts.demo_mcp:NoteAgent", "scripts.demo_mcp:FileTools")
