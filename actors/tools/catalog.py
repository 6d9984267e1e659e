"""The tool catalog: what each executor serves, where agents and `rig graph` read it.

Every tool executor writes a `ToolEntry` per tool to `RIG_TOOLS` when it starts, under
`<executor>.<tool>` (its NATS user may write those keys and no others). An edge that
offers a set of tools (`Edge.tools`) or a state's lookups (`State.lookup`) name tools,
or `<executor>.*` for all of an executor's: the agent reads the catalog to offer the
LLM each tool with its input schema, and the supervisor reads the one key that says
whether a tool the LLM picked belongs to the executor the set names.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from nats.errors import NoRespondersError
from nats.js.errors import BucketNotFoundError, NoStreamResponseError, NotFoundError

from actors.runtime.nats import kv_latest
from protocols import Edge, RigError, ToolEntry, decode_as, encode, kv_subject

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from actors.runtime.actor import Actor
    from protocols import Names

# How long an agent's copy of the catalog is used before it is read again; a set whose
# tool is missing from it is read again sooner (an executor that just started).
_FRESH_S = 5.0
_MISSING_S = 0.5


async def publish_catalog(actor: Actor, entries: Iterable[ToolEntry]) -> None:
    """Write an executor's entries (a topology from before the catalog has no bucket:
    nothing is written, and sets of tools cannot name this executor's)."""
    for entry in entries:
        key = actor.names.catalog_key(entry.executor, entry.tool)
        try:
            await actor.js.publish(kv_subject(actor.names.tools_bucket, key), encode(entry))
        except (NoStreamResponseError, NoRespondersError):
            actor.log.warning("catalog.no_bucket", bucket=actor.names.tools_bucket)
            return


def offered(sets: tuple[str, ...], table: Mapping[str, ToolEntry]) -> dict[str, ToolEntry]:
    """The tools of `sets` (names, or `<executor>.*`) that `table` (tool -> entry) knows,
    in the order the sets name them."""
    found: dict[str, ToolEntry] = {}
    for entry in sets:
        if entry.endswith(".*"):
            executor = entry.removesuffix(".*")
            found |= {name: e for name, e in sorted(table.items()) if e.executor == executor}
        elif entry in table:
            found[entry] = table[entry]
    return found


class Catalog:
    """An agent's copy of the catalog, read again when stale or missing a tool."""

    def __init__(self, js: JetStreamContext | None, names: Names) -> None:
        self._js, self._names = js, names
        self._table: dict[str, ToolEntry] = {}
        self._read_at = float("-inf")

    @classmethod
    def of(cls, entries: Iterable[ToolEntry], names: Names) -> Catalog:
        """A catalog that holds `entries` and never reads (one process: `LocalRig`)."""
        catalog = cls(None, names)
        catalog._table = {entry.tool: entry for entry in entries}
        catalog._read_at = float("inf")
        return catalog

    async def tools(self, sets: tuple[str, ...]) -> dict[str, ToolEntry]:
        """The tools `sets` offers now (read again if the copy is old, or lacks a name)."""
        found = offered(sets, self._table)
        age = time.monotonic() - self._read_at
        lacks = any(not s.endswith(".*") and s not in found for s in sets) or not found
        if age > _FRESH_S or (lacks and age > _MISSING_S):
            await self._read()
            found = offered(sets, self._table)
        return found

    async def _read(self) -> None:
        if self._js is None:
            return
        table: dict[str, ToolEntry] = {}
        try:
            async for _key, value in kv_latest(self._js, self._names.tools_bucket):
                try:
                    entry = decode_as(ToolEntry, value)[0]
                except RigError:
                    continue  # not an entry: nothing to offer of it
                table[entry.tool] = entry
        except (BucketNotFoundError, NotFoundError):
            pass  # a topology from before the catalog
        self._table, self._read_at = table, time.monotonic()


def owners_to_ask(edge: Edge, tool: str) -> list[str]:
    """The catalog keys that say whether `tool` belongs to one of the executors `edge`'s
    set names (`<executor>.*`): empty when the set names the tool itself."""
    if edge.tool is not None or tool in edge.tools:
        return []
    return [f"{s.removesuffix('.*')}.{tool}" for s in edge.tools if s.endswith(".*")]
