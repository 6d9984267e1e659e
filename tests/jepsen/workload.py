"""The client host's workload and its history.

A few concurrent clients submit jobs (some twice under the same id), resolve the jobs
that wait for a person (some resolves sent twice under the same id), signal the jobs that
wait for a signal and cancel jobs at random. Every operation is written to the history
as it is invoked and again as it completes, Jepsen's way: `ok` (it happened), `fail`
(a typed refusal: it did not happen) or `info` (no answer: it may have happened).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.runtime.client import RigClient
from protocols import RigConnectionError, RigError, UnavailableError

MODES = ("plain", "plain", "human", "signal")  # half end alone, a quarter wait for each
UNKNOWN = (TimeoutError, RigConnectionError, UnavailableError, OSError)


class History:
    """The operations, in the order they were invoked and completed (a JSON line each)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ops: list[dict[str, Any]] = []
        self._out = path.open("a")
        self._next = 0

    def close(self) -> None:
        self._out.close()

    def add(self, **op: Any) -> dict[str, Any]:
        op["time"] = time.time()
        self.ops.append(op)
        self._out.write(json.dumps(op) + "\n")
        self._out.flush()
        return op

    async def call(
        self,
        process: str,
        f: str,
        job: str,
        value: dict[str, Any],
        act: Awaitable[Any],
    ) -> tuple[str, Any]:
        """Invoke `act` as operation `f` on `job`; its completion type and answer."""
        self._next += 1
        index = self._next
        self.add(index=index, process=process, type="invoke", f=f, job=job, value=value)
        try:
            answer = await act
        except UNKNOWN as exc:
            # No responders: nobody received the request, so it did not happen.
            kind = "fail" if getattr(exc, "details", {}).get("delivered") is False else "info"
            self.add(index=index, process=process, type=kind, f=f, job=job, error=_said(exc))
            return kind, exc
        except RigError as exc:
            self.add(index=index, process=process, type="fail", f=f, job=job, error=_said(exc))
            return "fail", exc
        self.add(index=index, process=process, type="ok", f=f, job=job, value=value)
        return "ok", answer


def _said(exc: BaseException) -> str:
    return f"{getattr(exc, 'code', type(exc).__name__)}: {exc}"[:300]


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Workload:
    client: RigClient
    history: History
    rng: random.Random
    rate: float  # submits per second
    submitted: list[str] = field(default_factory=list)
    modes: dict[str, str] = field(default_factory=dict)
    _resolving: set[tuple[str, int]] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self, seconds: float) -> None:
        """Submit, resolve, signal and cancel for `seconds`."""
        until = time.monotonic() + seconds
        clients = [
            self._submitter("submit-1", until, 0),
            self._submitter("submit-2", until, 1),
            self._resolver(until),
            self._signaller(until),
            self._canceller(until),
        ]
        await asyncio.gather(*clients)
        await asyncio.gather(*self._tasks)

    async def _submitter(self, process: str, until: float, parity: int) -> None:
        n = parity
        while time.monotonic() < until:
            job = f"j{n}"
            mode = self.rng.choice(MODES)
            value = {"account": f"acct-{n}", "amount": float(1 + n % 50), "mode": mode}
            self.submitted.append(job)
            self.modes[job] = mode
            for _ in range(2 if self.rng.random() < 0.1 else 1):  # asked again: one job
                asked = self.client.submit("jepsen", value, job_id=job)
                submitting = self.history.call(process, "submit", job, value, asked)
                if self.rng.random() < 0.05:  # cancelled while its submit is on the way
                    cancel = self.client.cancel(job, reason="jepsen, at once")
                    at_once = self.history.call(f"{process}-cancel", "cancel", job, {}, cancel)
                    await asyncio.gather(submitting, at_once)
                else:
                    await submitting
            n += 2
            await asyncio.sleep(self.rng.expovariate(self.rate / 2))

    async def _resolver(self, until: float) -> None:
        """Resolve what waits for a person: the inbox's step, an id per wait; an answer
        lost is asked again under the same id, and some that were answered too."""
        while time.monotonic() < until:
            await asyncio.sleep(1.0)
            with contextlib.suppress(*UNKNOWN, RigError):
                waiting = await self.client.inbox("jepsen")
                for entry in waiting:
                    if (entry.job_id, entry.step) in self._resolving:
                        continue
                    self._resolving.add((entry.job_id, entry.step))
                    task = asyncio.create_task(self._resolve(entry.job_id, entry.step, until))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _resolve(self, job: str, step: int, until: float) -> None:
        edge = self.rng.choice(("approve", "approve", "deny"))
        resolve_id = f"r-{job}-{step}"
        value = {"step": step, "edge": edge, "resolve_id": resolve_id}
        for _ in range(4):
            asked = self.client.resolve(job, edge, step=step, resolve_id=resolve_id)
            kind, _ = await self.history.call("resolve", "resolve", job, value, asked)
            if kind == "fail" or (kind == "ok" and self.rng.random() < 0.8):
                return
            if time.monotonic() > until:
                return
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))

    async def _signaller(self, until: float) -> None:
        """Signal `go` to the jobs that wait for it, some more than once (one id each)."""
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.uniform(0.5, 1.5))
            waiting = [j for j in self.submitted[-40:] if self.modes[j] == "signal"]
            if not waiting:
                continue
            job = self.rng.choice(waiting)
            value = {"name": "go", "signal_id": f"s-{job}"}
            asked = self.client.signal(job, "go", signal_id=f"s-{job}")
            await self.history.call("signal", "signal", job, value, asked)

    async def _canceller(self, until: float) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.uniform(1.0, 4.0))
            if not self.submitted:
                continue
            job = self.rng.choice(self.submitted[-30:])
            asked = self.client.cancel(job, reason="jepsen")
            await self.history.call("cancel", "cancel", job, {}, asked)
