"""Circuit breakers per provider and model, shared by every agent process through NATS KV.

Twenty agent processes should not each rediscover an outage. A breaker's state lives in
the KV bucket `RIG_BREAKERS` (one key per provider config: its name, model and a hash of
its address, dialect and limits, so that a changed config starts closed) and changes only by
compare-and-set, so all processes see one state and exactly one of them sends the probe:

    closed --failure rate over the window--> open --`cooldown` s--> half_open
    half_open --the probe answers--> closed;   half_open --the probe fails--> open

Each process judges the provider on its own recent calls (the last `window` outcomes;
at least `min_calls` of them, at least `failure_rate` failed), and the first process to
see an outage opens the breaker for all. Only outages count as failures (5xx, timeouts,
broken connections); a 429 is the provider asking us to slow down, and a rejected
request (a 4xx, or a 500 that is a validation error) is our own config's fault. A
healthy provider costs one KV read per call, no writes.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from nats.js.kv import KeyValue

from actors.runtime.nats import kv_read, kv_swap
from protocols import BreakerState, decode_as, encode

# An agent's counters per provider and model in `rig ps`: `llm|<provider>|<model>|<what>`
# for `calls`, `failed` and `ms` (`Agent.stats`, `GET /v1/providers`).
OUTAGES = frozenset({"server_error", "timeout", "connection"})
_CAS_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_rate: float = 0.5  # share of outages among recent calls that opens the breaker
    window: int = 50  # recent calls this process judges by
    min_calls: int = 20  # no judgement on fewer calls than this
    cooldown: float = 30.0  # seconds open before one probe is let through


class Breakers:
    """The breakers of one agent process, backed by the shared bucket."""

    def __init__(self, kv: KeyValue, policy: BreakerPolicy, *, owner: str) -> None:
        self._kv, self.policy, self.owner = kv, policy, owner
        self._recent: dict[str, deque[bool]] = {}

    async def admit(self, key: str) -> bool:
        """May a call go to the provider `key` names (`OpenAICompatible.key`) now?"""
        for _ in range(_CAS_ATTEMPTS):
            state, revision = await self._read(key)
            now = time.time()
            if state.state == "closed":
                return True
            if now < state.until:
                return False  # open and cooling down, or a probe is under way elsewhere
            # Cool-down over (or a probe lost): this process sends the one probe.
            probe = BreakerState(
                state="half_open",
                failures=state.failures,
                until=now + self.policy.cooldown,
                owner=self.owner,
                changed_at=now,
            )
            if await self._write(key, probe, revision):
                return True
        return False

    async def record(self, key: str, *, ok: bool, kind: str = "") -> None:
        """Count a call's outcome; only outages count against the provider."""
        if not ok and kind not in OUTAGES:
            return
        recent = self._recent.setdefault(key, deque(maxlen=self.policy.window))
        recent.append(ok)
        for _ in range(_CAS_ATTEMPTS):
            state, revision = await self._read(key)
            now = time.time()
            if state.state == "half_open":  # this was the probe
                after = (
                    self._open(state, now)
                    if not ok
                    else BreakerState(owner=self.owner, changed_at=now)
                )
            elif state.state == "closed" and not ok and self._outage(recent):
                after = self._open(state, now)
            else:
                return
            if await self._write(key, after, revision):
                recent.clear()  # judge the provider afresh after each change
                return

    def _outage(self, recent: deque[bool]) -> bool:
        failed = sum(1 for ok in recent if not ok)
        return len(recent) >= self.policy.min_calls and failed >= self.policy.failure_rate * len(
            recent
        )

    def _open(self, state: BreakerState, now: float) -> BreakerState:
        return BreakerState(
            state="open",
            failures=state.failures + 1,
            until=now + self.policy.cooldown,
            owner=self.owner,
            changed_at=now,
        )

    async def state(self, key: str) -> BreakerState:
        return (await self._read(key))[0]

    async def _read(self, key: str) -> tuple[BreakerState, int]:
        data, revision = await kv_read(self._kv, key)
        return (decode_as(BreakerState, data)[0] if data else BreakerState()), revision

    async def _write(self, key: str, state: BreakerState, revision: int) -> bool:
        # False: another process changed the breaker first; the caller reads it again.
        return await kv_swap(self._kv, key, encode(state), revision) is not None
