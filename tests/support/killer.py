"""A killer for the chaos tests: SIGKILLs actor processes of a `rig up` at random while
a run goes on, and keeps track of the processes `rig up` starts again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from typing import Any

from protocols import ActorReady, decode_as


async def first_ready(sub: Any, count: int) -> list[ActorReady]:
    """The first `count` actors that announce themselves on `sub`."""
    seen: list[ActorReady] = []
    while len(seen) < count:
        seen.append(decode_as(ActorReady, (await sub.next_msg(timeout=60)).data)[0])
    return seen


class Killer:
    """Kills up to `most` processes, a pause drawn from `pause` apart; `every_kind`: the
    victims' classes take turns (else any live process). `kills` lists each victim's
    class. Use as `async with Killer(...) as killer:` around the run, and `stop()`
    once the run is done (leaving stops it too)."""

    def __init__(
        self,
        ready: Any,
        live: list[ActorReady],
        rng: random.Random,
        *,
        most: int,
        pause: tuple[float, float],
        every_kind: bool,
    ) -> None:
        self._ready = ready
        self.live = {announced.pid: announced.cls for announced in live}
        self._kinds = sorted({cls.rsplit(":", 1)[1] for cls in self.live.values()})
        self._rng, self._most, self._pause, self._every_kind = rng, most, pause, every_kind
        self.kills: list[str] = []
        self._finished = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Killer:
        self._tasks = [asyncio.create_task(self._track()), asyncio.create_task(self._kill())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """No more kills; wait for the killer to leave."""
        self._finished.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _track(self) -> None:
        while True:
            announced = decode_as(ActorReady, (await self._ready.next_msg(timeout=3600)).data)[0]
            self.live[announced.pid] = announced.cls

    async def _kill(self) -> None:
        while not self._finished.is_set() and len(self.kills) < self._most:
            try:  # a random pause, cut short when the run is done
                await asyncio.wait_for(self._finished.wait(), self._rng.uniform(*self._pause))
            except TimeoutError:
                pass
            if not self._finished.is_set():
                self.kill_one()

    def kill_one(self) -> None:
        """SIGKILL one live process now (the next kind in turn, with `every_kind`): a
        test that must kill during its run, however fast the machine, calls it between
        the run's parts."""
        if not self.live:
            return
        turn = self._kinds[len(self.kills) % len(self._kinds)]
        wanted = [p for p, cls in self.live.items() if cls.endswith(f":{turn}")]
        pids = wanted if self._every_kind and wanted else list(self.live)
        pid = self._rng.choice(sorted(pids))
        self.kills.append(self.live.pop(pid))
        os.kill(pid, signal.SIGKILL)
