"""Part 4 of `scripts/demo`: an agent whose tools are an MCP server's, behind the ledger.

The server is @modelcontextprotocol/server-filesystem (npm, installed into .venv/npm by
scripts/demo), allowed `$RIG_HOME/reports` only. The agent's `file` edge offers the
server's tools as a set: the model picks `write_file` (not read-only: at most once,
through the ledger) to save a note; then it looks the note up with `read_text_file`
(read-only: a lookup, no edge of its own) and answers with what it read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from actors import Agent, RoutePrompt, RuleLLM
from actors.tools.mcp import McpTools, stdio
from protocols import LOOKUP, Edge, Graph, State

SERVER = Path(__file__).resolve().parents[1] / ".venv" / "npm" / "node_modules" / ".bin"


class FileTools(McpTools):
    name = "file-tools"
    server = stdio(str(SERVER / "mcp-server-filesystem"), "${RIG_HOME}/reports")
    allow = ("write_file", "read_text_file")


class Note(BaseModel):
    text: str


def route(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    note = prompt.context.input
    if prompt.state == "save":
        write = {"path": note["path"], "content": note["text"]}
        return "file", {"tool": "write_file", "args": write}
    looked = [d for d in prompt.context.decisions if d["edge"] == LOOKUP]
    if not looked:
        return LOOKUP, {"tool": "read_text_file", "args": {"path": note["path"]}}
    found = looked[-1].get("result") or {}
    return "answer", {"text": str(found.get("content", found.get("text", "")))}


def _step(edge: Edge, lookup: tuple[str, ...] = ()) -> State:
    give_up = Edge(name="give_up", to="failed")
    return State(edges=(edge, give_up), safe_edge="give_up", lookup=lookup, max_lookups=1)


class NoteAgent(Agent):
    """Saves a note through the MCP filesystem server and looks it up again."""

    name = "notes"
    graph = Graph(
        initial="save",
        states={
            "save": _step(Edge(name="file", to="answered", tools=FileTools.all)),
            "answered": _step(Edge(name="answer", to="done", output=Note), FileTools.all),
            "done": State(terminal="succeeded"),
            "failed": State(terminal="failed"),
        },
    )
    llm = RuleLLM(route)


MCP_ACTORS = ("scripts.demo_mcp:NoteAgent", "scripts.demo_mcp:FileTools")
