"""Running a coroutine on the fastest event loop available.

uvloop runs Rig's actors with a fraction of the CPU the standard loop needs (the
hot path is mostly event-loop and socket work). `RIG_UVLOOP=0` falls back to asyncio's
own loop, for debugging or where uvloop does not build.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from actors.runtime.settings import RigConfig

T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T], *, fast: bool = True) -> T:
    """`asyncio.run(main)`, on uvloop if `fast`, unless `RIG_UVLOOP=0` or uvloop is missing.

    A command that prints after its loop has ended passes `fast=False`: after
    `uvloop.run` returns (uvloop 0.23), a large write to a pipe can be cut short
    with no error (a signal interrupts the write; measured: 1 in 5 `print`s of 1.5 MB
    lost their tail), and a user's `rig status --json | jq` must get every byte.
    """
    if fast and RigConfig.from_env().uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
