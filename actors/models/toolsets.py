"""Sets of tools in a routing question: one edge, many tools, one constrained answer.

An edge that offers a set of tools (`Edge.tools`), and a state's lookups
(`State.lookup`), are offered to the LLM as one edge whose arguments are a choice
among the tools: `{"tool": <name>, "args": <that tool's arguments>}`, the schema one
branch per tool with its input schema (from the catalog, `actors.tools.catalog`). The
branches are an `anyOf`, which strict structured outputs accept (OpenAI's refuse
`oneOf`); each names its own tool, so exactly one fits: a `oneOf` in effect.

    {"edge": "files", "args": {"tool": "read_file", "args": {"path": "notes.md"}}}

The agent checks the answer against the tool's own schema before it reports it, and
re-asks like any invalid answer; the decision names the tool (`Decision.tool`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actors.models.llm import InvalidAnswer
from actors.runtime.schemas import fits
from protocols import LOOKUP, Edge, SchemaError, State, ToolEntry

Offered = Mapping[str, Mapping[str, ToolEntry]]
"""Per edge that offers tools (`LOOKUP` for the state's lookups): its tools by name."""


def as_edge(edge: Edge, tools: Mapping[str, ToolEntry]) -> Edge:
    """`edge` as the LLM is offered it: its arguments the choice of one of `tools`."""
    branches = [
        {
            "type": "object",
            "properties": {
                "tool": {"type": "string", "enum": [name]},
                "args": entry.input_schema or {"type": "object", "properties": {}},
            },
            "required": ["tool", "args"],
            "additionalProperties": False,
        }
        for name, entry in tools.items()
    ]
    listing = "; ".join(
        f"{name}: {' '.join(entry.description.split())[:200]}".rstrip(": ")
        for name, entry in tools.items()
    )
    listing = listing if listing.endswith(".") else f"{listing}."
    description = " ".join(part for part in (edge.description, f"Tools: {listing}") if part)
    return edge.model_copy(
        update={"args": {"anyOf": branches}, "description": description, "tools": ()}
    )


def lookup_edge(state: State, name: str, tools: Mapping[str, ToolEntry], left: int) -> Edge:
    """The lookup a state offers while it has `left`: one of its read-only `tools`."""
    edge = Edge(
        name=LOOKUP,
        to=name,
        description=(
            "Look something up before you pick an edge: call one read-only tool, and you "
            f"are asked again with its result ({left} lookup(s) left)."
        ),
    )
    return as_edge(edge, tools)


def offer(state: State, name: str, tables: Offered, lookups_left: int) -> tuple[Edge, ...]:
    """The edges of `state` as the LLM is offered them: each set of tools as a choice of
    the tools the catalog has (an edge none of whose tools is served is left out), and
    the lookup while any is left."""
    edges: list[Edge] = []
    for edge in state.edges:
        if not edge.tools:
            edges.append(edge)
        elif tables.get(edge.name):
            edges.append(as_edge(edge, tables[edge.name]))
    if lookups_left > 0 and tables.get(LOOKUP):
        edges.append(lookup_edge(state, name, tables[LOOKUP], lookups_left))
    return tuple(edges)


def pick(edge: str, args: dict[str, Any], tables: Offered) -> tuple[str | None, dict[str, Any]]:
    """The tool and its arguments an answer chose on `edge` (None and `args` as they are
    for an edge without a set); raise `InvalidAnswer` for a tool not offered or
    arguments that do not fit its schema."""
    tools = tables.get(edge)
    if tools is None:
        return None, args
    tool, inner = args.get("tool"), args.get("args", {})
    if not isinstance(tool, str) or tool not in tools:
        raise InvalidAnswer(
            f"edge {edge!r} calls one of the tools {', '.join(tools)}; 'args' must be "
            f'{{"tool": <one of them>, "args": {{...}}}}, not tool {tool!r}'
        )
    if not isinstance(inner, dict):
        raise InvalidAnswer(f"the arguments of tool {tool!r} must be a JSON object")
    try:
        fits(tools[tool].input_schema, inner, "args", f"the arguments do not fit tool {tool!r}")
    except SchemaError as exc:
        raise InvalidAnswer(exc.message) from None
    return tool, inner
