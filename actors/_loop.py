"""Running a coroutine on the fastest event loop available.

uvloop runs Rig's actors with a fraction of the CPU the standard loop needs (the
hot path is mostly event-loop and socket work). `RIG_UVLOOP=0` falls back to asyncio's
own loop, for debugging or where uvloop does not build.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on uvloop unless `RIG_UVLOOP=0` or uvloop is missing."""
    if os.environ.get("RIG_UVLOOP", "1") != "0":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
