"""Modules loaded when first used, so that a process that never speaks HTTP does not load
aiohttp: about 0.3 CPU-seconds of a process's start (its parsers, its SSL context), a
quarter of what an actor process spends before it serves. Supervisors, tool executors,
verifiers, agents on a rule or a local model, and most `rig` commands never need it.

nats-py imports aiohttp when it is imported, for the WebSocket transport that only a
`ws://` server URL uses. After `import_nats_lazily` (the `actors` package calls it),
nats-py's transport module runs with that import refused, and gets a `LazyModule` in
its place, which loads aiohttp on its first use: a `ws://` URL still works.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable
from typing import Any


class LazyModule(types.ModuleType):
    """Stands in for module `name`; the first attribute read imports the real one."""

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attribute)


def lazy(name: str) -> Any:
    """Module `name` if it is loaded already, else a `LazyModule` for it."""
    return sys.modules.get(name) or LazyModule(name)


class _TransportLoader(importlib.abc.Loader):
    """Runs nats-py's transport module with `import aiohttp` refused, then gives it
    `LazyModule`s for aiohttp and multidict."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        refused = "aiohttp" not in sys.modules
        if refused:
            sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` fails
        try:
            self.inner.exec_module(module)
        finally:
            if refused:
                del sys.modules["aiohttp"]
        for name in ("aiohttp", "multidict"):
            if getattr(module, name, None) is None:
                setattr(module, name, LazyModule(name))


class _TransportFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, name: str, path: Any = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != _TRANSPORT or "aiohttp" in sys.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _TransportLoader(spec.loader)
        return spec


_TRANSPORT = "nats.aio.transport"


def import_nats_lazily() -> None:
    """Have nats-py, when it is imported, leave aiohttp until first used (see the
    module's docstring). Imports nothing now; a no-op if nats-py is loaded already."""
    if _TRANSPORT not in sys.modules and not any(
        isinstance(finder, _TransportFinder) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _TransportFinder())


def lazy_exports(
    package: str, where: dict[str, str]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """A package's `__all__`, `__getattr__` and `__dir__` for names its modules define
    (`where`: name -> module within the package), each imported when first read: a
    package's `__init__` re-exports its names without loading its heavier modules (the
    pure rules stay importable without nats-py)."""
    names = sorted(where, key=str.casefold)

    def getattr_(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # the next lookup is a plain one
        return value

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return names, getattr_, dir_
