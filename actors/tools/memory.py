"""What agents remember across jobs: the memory tools, and how an agent reads its memory.

An agent that declares `memory = Memory(scopes=(...))` reads, before each step, the
newest entries of its memory in each scope into `prompt.context.memory`, and the
decision it reports carries what it read, so the journal explains the step
(`read_memory`, called by `Agent`). It writes through the tools of `MemoryTools`, which
a deployment runs like any executor (`rig actor actors.tools.memory:MemoryTools`) and a
graph names like any tool (`Edge(tool="remember")`, or a lookup of `recall`):

- `remember(key, value, scope="thread", ttl_s=None)`: keep `value` under `key`, for
  `ttl_s` seconds (default: the agent's `Memory.ttl_s`, else RIG_RETENTION). A tool with
  side effects: the ledger makes a redelivered or repeated call write once, and a call
  whose executor died mid-write is reconciled (the entry names the call that wrote it).
- `forget(key, scope="thread")`: remove it (the same guarantees).
- `recall(scope="thread", prefix="")`: the scope's entries (read-only: a lookup).

Entries live in `RIG_MEMORY` under `<agent>.<scope>.<owner>.<key>`: the owner is the
job's thread (`thread`), its user (the job's label `user`), or `_` (`global`). The scope
comes from the job, never from the model's arguments: a model cannot write another
thread's or user's memory. Values are JSON, at most RIG_MAX_MEMORY_BYTES each; the
server drops an entry when its TTL passes.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from nats.js.kv import KeyValue

from actors.runtime.nats import kv_latest, kv_read
from actors.tools.executor import ToolExecutor, ToolRefused, tool, tool_context
from protocols import (
    Graph,
    Memory,
    MemoryScope,
    Names,
    _permissions as permissions,
    canonical,
    check_token,
    decode,
    encode,
    kv_subject,
)
from protocols._errors import InvalidNameError
from protocols._messages import MemoryScopeName
from protocols._permissions import Role

# The TTL header JetStream reads on a write to a bucket with per-message TTLs.
_TTL = "Nats-TTL"


class MemoryStore(Protocol):
    """Where entries live: `RIG_MEMORY` in a deployment (`KvMemory`), a dict in
    `LocalRig` (`LocalMemory`). Keys are `Names.memory_key`s; entries JSON objects."""

    async def put(self, key: str, entry: dict[str, Any], ttl: int) -> None: ...
    async def get(self, key: str) -> dict[str, Any] | None: ...
    async def delete(self, key: str) -> None: ...
    async def scan(self, prefix: str) -> list[dict[str, Any]]: ...


class KvMemory:
    """Memory in JetStream KV (`RIG_MEMORY`): the server drops an entry at its TTL."""

    def __init__(self, js: Any, names: Names) -> None:
        self.js, self.names = js, names
        self._bucket: KeyValue | None = None

    async def _kv(self) -> KeyValue:
        if self._bucket is None:
            self._bucket = await self.js.key_value(self.names.memory_bucket)
        return self._bucket

    async def put(self, key: str, entry: dict[str, Any], ttl: int) -> None:
        subject = kv_subject(self.names.memory_bucket, key)
        await self.js.publish(subject, encode(entry), headers={_TTL: str(ttl)}, timeout=10.0)

    async def get(self, key: str) -> dict[str, Any] | None:
        data, _ = await kv_read(await self._kv(), key)
        return decode(data)[0] if data else None

    async def delete(self, key: str) -> None:
        await (await self._kv()).delete(key)

    async def scan(self, prefix: str) -> list[dict[str, Any]]:
        found = []
        async for key, data in kv_latest(self.js, self.names.memory_bucket, prefix + "*"):
            found.append(decode(data)[0] | {"key": key.rsplit(".", 1)[-1]})
        return found


class LocalMemory:
    """Memory in a dict, for `LocalRig`: an entry is gone once its TTL passed."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[dict[str, Any], float]] = {}

    async def put(self, key: str, entry: dict[str, Any], ttl: int) -> None:
        self._entries[key] = (entry, time.monotonic() + ttl)

    async def get(self, key: str) -> dict[str, Any] | None:
        entry, until = self._entries.get(key, ({}, 0.0))
        return entry if until > time.monotonic() else None

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def scan(self, prefix: str) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            entry | {"key": key.rsplit(".", 1)[-1]}
            for key, (entry, until) in self._entries.items()
            if key.startswith(prefix) and until > now
        ]


class MemoryTools(ToolExecutor):
    """Writes and reads what agents remember (`Agent.memory`), at most once per call."""

    name = "memory"
    store: MemoryStore | None = None  # `KvMemory` once started (LocalRig sets its own)

    @classmethod
    def role(cls, names: Names, graphs: list[Graph]) -> Role:
        """Its tools' grants, and every agent's memory (the scope comes from the job)."""
        bucket = permissions.kv_write(names.memory_bucket) | permissions.kv_scan(
            names.memory_bucket
        )
        return super().role(names, graphs).plus(bucket.publish, bucket.subscribe)

    async def on_start(self) -> None:
        await super().on_start()
        self.store = KvMemory(self.js, self.names)

    @property
    def _store(self) -> MemoryStore:
        assert self.store is not None, "started (on_start) before it serves"
        return self.store

    @tool(side_effects=True, timeout=10.0, lease=10.0, reconcile="_remembered")
    async def remember(
        self, key: str, value: Any, scope: MemoryScopeName = "thread", ttl_s: float | None = None
    ) -> dict[str, Any]:
        """Keep `value` under `key` in the job's `scope`, for `ttl_s` seconds."""
        call = tool_context()
        where = self._key(key, scope)
        size = len(canonical(value))
        most = self.config.sizes.memory
        if size > most:
            raise ToolRefused(
                "memory_too_large",
                f"the value of {key!r} is {size} bytes, over the {most} a remembered value may "
                "be (RIG_MAX_MEMORY_BYTES)",
            )
        entry = {"value": value, "job_id": call.job_id, "call": call.key, "at": time.time()}
        ttl = self._ttl(ttl_s)
        await self._store.put(where, entry, ttl)
        return {"remembered": key, "scope": scope, "ttl_s": ttl}

    async def _remembered(
        self, key: str, value: Any, scope: MemoryScopeName = "thread", ttl_s: float | None = None
    ) -> dict[str, Any] | None:
        """Whether this call's write is the entry now (then its result), for a call whose
        executor died mid-write."""
        entry = await self._store.get(self._key(key, scope))
        if entry is not None and entry.get("call") == tool_context().key:
            return {"remembered": key, "scope": scope, "ttl_s": self._ttl(ttl_s)}
        return None

    def _ttl(self, ttl_s: float | None) -> int:
        """Whole seconds an entry lives: the call's, the agent's, else RIG_RETENTION."""
        memory = tool_context().memory
        ttl = ttl_s or (memory.ttl_s if memory else None) or self.config.retention
        return max(int(ttl), 1)

    @tool(side_effects=True, timeout=10.0, lease=10.0, reconcile="_forgotten")
    async def forget(self, key: str, scope: MemoryScopeName = "thread") -> dict[str, Any]:
        """Remove `key` from the job's `scope` (nothing to remove is no failure)."""
        await self._store.delete(self._key(key, scope))
        return {"forgotten": key, "scope": scope}

    async def _forgotten(
        self, key: str, scope: MemoryScopeName = "thread"
    ) -> dict[str, Any] | None:
        found = await self._store.get(self._key(key, scope))
        return None if found is not None else {"forgotten": key, "scope": scope}

    @tool(side_effects=False, timeout=10.0)
    async def recall(self, scope: MemoryScopeName = "thread", prefix: str = "") -> dict[str, Any]:
        """The entries of the job's `scope` (those whose key starts with `prefix`)."""
        memory = _scope_of(tool_context().memory)
        owner = memory.owner(scope)
        if owner is None:
            raise ToolRefused("no_scope", _no_scope(memory, scope))
        found = await read_scope(self._store, memory.agent, scope, owner, 200)
        return {"entries": [e for e in found if str(e["key"]).startswith(prefix)]}

    def _key(self, key: str, scope: str) -> str:
        """The store's key of `key` in the calling job's `scope`."""
        memory = _scope_of(tool_context().memory)
        owner = memory.owner(scope)
        if owner is None:
            raise ToolRefused("no_scope", _no_scope(memory, scope))
        try:
            check_token(key, what="memory key")
        except InvalidNameError as exc:
            raise ToolRefused("invalid_args", exc.message) from None
        return Names.memory_key(memory.agent, scope, owner, key)


def _scope_of(memory: MemoryScope | None) -> MemoryScope:
    if memory is None:
        raise ToolRefused(
            "no_memory",
            "the job's agent declares no memory (`memory = Memory(...)` on the Agent class)",
        )
    return memory


def _no_scope(memory: MemoryScope, scope: str) -> str:
    why = {"thread": "was not submitted in a thread", "user": "has no `user` label"}
    return f"the job of agent {memory.agent!r} {why.get(scope, 'has no such scope')}"


async def read_scope(
    store: MemoryStore, agent: str, scope: str, owner: str, most: int
) -> list[dict[str, Any]]:
    """The newest `most` entries of one scope, newest first, as a context carries them."""
    found = await store.scan(Names.memory_key(agent, scope, owner))
    found.sort(key=lambda entry: -float(entry.get("at", 0.0)))
    return [
        {"scope": scope, "key": e["key"], "value": e.get("value"), "at": e.get("at")}
        for e in found[:most]
    ]


async def read_memory(
    store: MemoryStore, memory: Memory, scope: MemoryScope
) -> list[dict[str, Any]]:
    """What a step of an agent with `memory` reads: the newest `memory.recall` entries of
    each scope the job has, in the order of `memory.scopes`."""
    read: list[dict[str, Any]] = []
    for name in memory.scopes:
        owner = scope.owner(name)
        if owner is not None:
            read += await read_scope(store, scope.agent, name, owner, memory.recall)
    return read
