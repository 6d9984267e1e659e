"""An agent that looks around before it acts: lookups (`State.lookup`) of a shelf's
read-only tools, then one edge that offers the shelf's tools with side effects as a set
(`Edge.tools`). For tests/unit/test_tool_sets.py and tests/integration/test_tool_sets.py.

The librarian looks a title up, counts the shelf, then lends the book (or gives up if
it is not there); `SHELF_LOG`, when set, is a file each lend appends a line to.
"""

from __future__ import annotations

import os
from typing import Any

from actors import Agent, RoutePrompt, RuleLLM, ToolExecutor, tool
from protocols import LOOKUP, Edge, Graph, State

BOOKS = {"dune": 2, "emma": 0, "ulysses": 1}


class Shelf(ToolExecutor):
    name = "shelf"

    @tool(side_effects=False)
    async def find_book(self, title: str) -> dict[str, Any]:
        """Whether the shelf has a title, and how many copies."""
        return {"title": title, "copies": BOOKS.get(title, 0)}

    @tool(side_effects=False)
    async def count_books(self) -> dict[str, Any]:
        """How many titles the shelf holds."""
        return {"titles": len(BOOKS)}

    @tool
    async def lend_book(self, title: str, reader: str) -> dict[str, Any]:
        """Lend a copy of a title to a reader."""
        log = os.environ.get("SHELF_LOG")
        if log:
            with open(log, "a") as out:
                out.write(f"{title} {reader}\n")
        return {"lent": title, "to": reader}

    @tool
    async def return_book(self, title: str) -> dict[str, Any]:
        """Take a copy back."""
        return {"returned": title}


def librarian(prompt: RoutePrompt) -> tuple[str, dict[str, Any]] | str:
    """Find the title, count the shelf, then lend it if there is a copy."""
    job = prompt.context.input
    looked = [d for d in prompt.context.decisions if d["edge"] == LOOKUP]
    offered = {edge.name for edge in prompt.edges}
    if not looked:
        return LOOKUP, {"tool": "find_book", "args": {"title": job["title"]}}
    if len(looked) == 1 and LOOKUP in offered:
        return LOOKUP, {"tool": "count_books", "args": {}}
    found = looked[0].get("result") or {}
    if found.get("copies", 0) < 1:
        return "give_up"
    return "act", {"tool": "lend_book", "args": {"title": job["title"], "reader": job["reader"]}}


class Librarian(Agent):
    name = "librarian"
    graph = Graph(
        initial="desk",
        states={
            "desk": State(
                description="A reader asks for a book.",
                lookup=Shelf.all,
                max_lookups=2,
                edges=(
                    Edge(name="act", to="done", tools=("lend_book", "return_book")),
                    Edge(name="give_up", to="failed"),
                ),
                safe_edge="give_up",
            ),
            "done": State(terminal="succeeded"),
            "failed": State(terminal="failed"),
        },
    )
    example_input = {"title": "dune", "reader": "ada"}
    llm = RuleLLM(librarian)


class LibrarianLLM(Librarian):
    """The librarian, routed by a configured model (RIG_LLM_CONFIG's `librarian-llm`)."""

    name = "librarian-llm"
    max_reasks = 2
