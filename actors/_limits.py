"""A provider's concurrency cap and rate limits, shared by every agent process through NATS KV.

Each limit is a handful of keys in the bucket `RIG_BREAKERS`, changed only by
compare-and-set, so twenty agent processes together keep to what the provider allows:

- **concurrency**: `max_concurrency` slots (`<provider key>.slot.<i>`); a call holds
  one for its duration, with a lease so that a process that dies cannot keep it.
- **requests and tokens per minute**: token buckets (`<provider key>.rpm`, `.tpm`)
  refilled continuously; a burst may use one second's worth (at least one request, at
  least one call's tokens). A call reserves its estimated tokens before it goes.

Waiting for a slot or for the bucket never outlasts the call's own deadline.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from actors._nats import kv_read, kv_swap

_POLL_S = 0.02  # first wait for a busy slot; doubles up to _POLL_MAX_S
_POLL_MAX_S = 0.5


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    max_concurrency: int | None = None
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None

    @property
    def any(self) -> bool:
        return any(
            v is not None
            for v in (self.max_concurrency, self.requests_per_minute, self.tokens_per_minute)
        )


class LimitTimeout(Exception):
    """The limit would not let the call go before its deadline."""


@dataclass(slots=True)
class Slot:
    key: str
    revision: int


class SharedLimits:
    """The limits of every provider this process calls, kept in one KV bucket."""

    def __init__(self, kv: KeyValue, *, owner: str) -> None:
        self._kv, self.owner = kv, owner
        self._rng = random.Random()

    async def slot(
        self, provider: str, base: str, cap: int, *, lease: float, deadline: float
    ) -> Slot:
        """Hold one of `cap` slots of the provider keyed `base`; raise `LimitTimeout` if
        none frees up before `deadline`."""
        wait = _POLL_S
        while True:
            for i in self._rng.sample(range(cap), cap):
                taken = await self._take(f"{base}.slot.{i}", lease)
                if taken is not None:
                    return taken
            left = deadline - time.time()
            if left <= 0:
                raise LimitTimeout(f"{provider}: all {cap} concurrent slots stayed busy")
            await asyncio.sleep(min(wait, left))
            wait = min(wait * 2, _POLL_MAX_S)

    async def release(self, slot: Slot) -> None:
        try:
            await self._kv.delete(slot.key, last=slot.revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError, NotFoundError):
            pass  # our lease ran out and someone else holds it now

    async def take(
        self,
        provider: str,
        base: str,
        kind: str,
        per_minute: float,
        amount: float,
        *,
        deadline: float,
    ) -> float:
        """Take `amount` from the token bucket `kind`; return the seconds waited."""
        key = f"{base}.{kind}"
        rate = per_minute / 60.0
        capacity = max(rate, amount, 1.0)  # a one-second burst, and at least one call
        waited = 0.0
        while True:
            tokens, at, revision = await self._bucket(key, capacity)
            now = time.time()
            tokens = min(capacity, tokens + (now - at) * rate)
            if tokens >= amount:
                if await self._cas(key, {"tokens": tokens - amount, "at": now}, revision):
                    return waited
                continue  # another process took from the bucket first: look again
            pause = (amount - tokens) / rate
            if now + pause > deadline:
                limit = f"{kind} limit of {per_minute:g}/min"
                raise LimitTimeout(f"{provider}: the {limit} leaves no room before the deadline")
            await asyncio.sleep(pause)
            waited += pause

    async def _take(self, key: str, lease: float) -> Slot | None:
        value = json.dumps({"owner": self.owner, "expires": time.time() + lease}).encode()
        revision = await kv_swap(self._kv, key, value, 0)
        if revision is None:
            held, last = await kv_read(self._kv, key)
            if json.loads(held or b"{}").get("expires", 0) > time.time():
                return None
            # Freed meanwhile, or the holder's lease ran out (it died mid-call): take it.
            revision = await kv_swap(self._kv, key, value, last)
        return Slot(key, revision) if revision is not None else None

    async def _bucket(self, key: str, capacity: float) -> tuple[float, float, int]:
        data, revision = await kv_read(self._kv, key)
        state = json.loads(data or b"{}")
        return float(state.get("tokens", capacity)), float(state.get("at", time.time())), revision

    async def _cas(self, key: str, data: dict[str, float], revision: int) -> bool:
        return await kv_swap(self._kv, key, json.dumps(data).encode(), revision) is not None
