"""Modules loaded when first used, so that a process that never speaks HTTP does not load
aiohttp: about 0.3 CPU-seconds of a process's start (its parsers, its SSL context), a
quarter of what an actor process spends before it serves. Supervisors, tool executors,
verifiers, agents on a rule or a local model, and most `rig` commands never need it.

nats-py imports aiohttp when it is imported, for the WebSocket transport that only a
`ws://` server URL uses; `import_nats` imports nats-py with that import refused and
gives its transport module a `LazyModule` instead, which loads aiohttp on its first
use, so a `ws://` URL still works.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands in for module `name`; the first attribute read imports the real one."""

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attribute)


def lazy(name: str) -> Any:
    """Module `name` if it is loaded already, else a `LazyModule` for it."""
    return sys.modules.get(name) or LazyModule(name)


def import_nats() -> None:
    """Import nats-py without letting it load aiohttp (see the module's docstring); a
    no-op once either is loaded."""
    if "nats" in sys.modules or "aiohttp" in sys.modules:
        return
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` fails
    try:
        import nats.aio.transport as transport
    finally:
        del sys.modules["aiohttp"]
    for name in ("aiohttp", "multidict"):
        if getattr(transport, name, None) is None:
            setattr(transport, name, LazyModule(name))
