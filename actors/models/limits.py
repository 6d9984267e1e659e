"""A provider's concurrency cap and rate limits, shared by every agent process through NATS.

Twenty agent processes together keep to what the provider allows:

- **concurrency**: `max_concurrency` slots, first come first served across processes.
  A provider's slots are messages on `<prefix>.slots.<provider key>` in the stream
  `RIG_SLOTS`, exactly `max_concurrency` of them; a call takes one from the provider's
  pull consumer and gives it back (a nak) when done. The server hands a freed slot to
  the oldest waiting request, so callers are served in the order they asked, with no
  polling. A holder keeps its slot alive while the call runs (`in_progress`); one that
  dies loses it after `SLOT_ACK_WAIT_S`, when the server hands it on (so does a waiter
  whose wait ends just as a slot is handed to it: the slot is lost for that long).
- **requests and tokens per minute**: token buckets in the KV bucket `RIG_BREAKERS`
  (`<provider key>.rpm`, `.tpm`), changed only by compare-and-set and refilled
  continuously; a burst may use one second's worth (at least one request, at least one
  call's tokens). A call reserves its estimated tokens before it goes.

Waiting for a slot or for the bucket never outlasts the wait's own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError
from nats.js.kv import KeyValue

from actors.runtime.nats import kv_read, kv_swap
from protocols import Names


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
    msg: Msg  # the slot's message, unacknowledged while held
    keeper: asyncio.Task[None]  # tells the server the holder is alive


# A slot whose holder stops saying it is alive goes to the next in line after this long.
SLOT_ACK_WAIT_S = 10.0
_SLOT_HEADER = "Rig-Slot"


async def _keep(msg: Msg) -> None:
    while True:
        await asyncio.sleep(SLOT_ACK_WAIT_S / 3)
        with contextlib.suppress(nats.errors.Error):
            await msg.in_progress()


class SharedLimits:
    """The limits of every provider this process calls: slots in the stream `RIG_SLOTS`,
    rate buckets in the KV bucket `RIG_BREAKERS`."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        owner: str,
        js: JetStreamContext | None = None,
        names: Names | None = None,
    ) -> None:
        self._kv, self.owner = kv, owner
        self._js, self._names = js, names
        self._ready: set[str] = set()  # provider keys whose slots and consumer exist

    async def slot(self, provider: str, base: str, cap: int, *, deadline: float) -> Slot:
        """Hold one of `cap` slots of the provider keyed `base`, in turn; raise
        `LimitTimeout` if none comes before `deadline`. A held slot lives as long as its
        holder says it is alive; release it after the call."""
        js, names = self._js, self._names
        assert js is not None and names is not None, "slots need a JetStream context"
        await self._prepare(js, names, provider, base, cap)
        left = deadline - time.time()
        if left <= 0:
            raise LimitTimeout(f"{provider}: no time left to wait for a slot")
        sub = await js.pull_subscribe_bind(
            durable=names.slots_durable(base), stream=names.slots_stream
        )
        try:
            [msg] = await sub.fetch(1, timeout=left)
        except nats.errors.TimeoutError:
            raise LimitTimeout(f"{provider}: all {cap} concurrent slots stayed busy") from None
        finally:
            await sub.unsubscribe()
        return Slot(msg, asyncio.create_task(_keep(msg)))

    async def release(self, slot: Slot) -> None:
        slot.keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slot.keeper
        with contextlib.suppress(nats.errors.Error):
            await slot.msg.nak()  # to the next in line; lost, it returns after the ack wait

    async def _prepare(
        self, js: JetStreamContext, names: Names, provider: str, base: str, cap: int
    ) -> None:
        """Make the provider's `cap` slot messages and its consumer, once per process."""
        if base in self._ready:
            return
        subject = names.slots(base)
        # Append slot n after slot n-1; whoever is first wins each. Every lost race means
        # another process appended one, so 2 x cap tries are enough unless something is
        # wrong with the stream itself.
        for _ in range(2 * cap + 2):
            try:
                last = await js.get_last_msg(names.slots_stream, subject)
                have, seq = int((last.headers or {}).get(_SLOT_HEADER, "0")) + 1, last.seq or 0
            except NotFoundError:
                have, seq = 0, 0
            if have >= cap:
                break
            headers = {_SLOT_HEADER: str(have), "Nats-Expected-Last-Subject-Sequence": str(seq)}
            with contextlib.suppress(APIError):  # another process appended it first
                await js.publish(subject, b"", headers=headers)
        else:
            raise LimitTimeout(f"{provider}: could not set up its {cap} slots in {subject}")
        config = ConsumerConfig(
            durable_name=names.slots_durable(base),
            filter_subject=subject,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=SLOT_ACK_WAIT_S,
            max_deliver=-1,
            max_waiting=4096,
        )
        await js.add_consumer(names.slots_stream, config)
        self._ready.add(base)

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

    async def _bucket(self, key: str, capacity: float) -> tuple[float, float, int]:
        data, revision = await kv_read(self._kv, key)
        state = json.loads(data or b"{}")
        return float(state.get("tokens", capacity)), float(state.get("at", time.time())), revision

    async def _cas(self, key: str, data: dict[str, float], revision: int) -> bool:
        return await kv_swap(self._kv, key, json.dumps(data).encode(), revision) is not None
