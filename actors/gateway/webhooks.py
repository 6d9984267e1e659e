"""Webhooks: a job's end (and each wait for a person) POSTed to the url it was submitted
with, signed per Standard Webhooks (https://www.standardwebhooks.com).

The supervisor puts a `WebhookDelivery` in the outbox of the transition that writes the
event, so it is stored exactly when the event is. Every gateway reads them from one
durable consumer (`rig.work.webhook`): a 2xx answer acks it; anything else (an error
status, a refused connection, no answer within the timeout) is retried with exponential
backoff, up to `attempts` deliveries, then dead-lettered on `rig.dlq.webhooks`. Delivery
is at least once: a receiver dedupes by `webhook-id` (`<job_id>.<event seq>`, the same on
every attempt). What became of each webhook is kept in `RIG_WEBHOOKS`; `rig webhooks ls`
reads it.

| variable                 | default | meaning                                              |
| ------------------------ | ------- | ---------------------------------------------------- |
| `RIG_WEBHOOK_SECRET`     | (none)  | `whsec_<base64>`: the signing secret; without it the |
|                          |         | gateway neither accepts nor delivers webhooks        |
| `RIG_WEBHOOK_ATTEMPTS`   | `8`     | deliveries before the webhook is dead-lettered       |
| `RIG_WEBHOOK_BACKOFF_S`  | `2`     | the first retry's delay; each next one doubles       |
| `RIG_WEBHOOK_TIMEOUT_S`  | `10`    | how long one POST may take                           |
| `RIG_WEBHOOK_ALLOW`      | (none)  | addresses or networks (`10.0.0.0/8,127.0.0.1`) a     |
|                          |         | webhook may reach besides public ones                |

A webhook reaches public addresses only, unless the operator lists more: the address is
checked as the socket is made, after the name was resolved (a name that resolves to a
private address, or changes its answer between two lookups, is refused all the same).
Loopback, private, link-local (cloud metadata at 169.254.169.254 included), shared and
reserved addresses are refused at once, without a connection, and the webhook is
dead-lettered saying why: a client who may read delivery records learns nothing of what
listens inside.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import ipaddress
import json
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from actors.runtime.lazy import lazy
from actors.runtime.settings import RigConfig
from protocols import (
    ConfigError,
    Event,
    NonRetryableError,
    RetryableError,
    WebhookDelivery,
    WebhookRecord,
    decode_as,
    encode,
)

MAX_BACKOFF_S = 600.0  # the longest wait between two attempts
_USER_AGENT = "rig-webhooks/1"

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy("aiohttp")  # loaded by the first delivery (actors.runtime.lazy)


def new_secret() -> str:
    """A fresh signing secret, in the `whsec_<base64>` form Standard Webhooks libraries read."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed_networks(text: str) -> tuple[Network, ...]:
    """`RIG_WEBHOOK_ALLOW`'s networks: addresses or CIDRs, comma-separated."""
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in text.split(",")
            if part.strip()
        )
    except ValueError as exc:
        raise ConfigError(
            f"RIG_WEBHOOK_ALLOW: {exc} (addresses or networks, comma-separated)"
        ) from None


def refused(address: str, allow: tuple[Network, ...]) -> str | None:
    """Why a webhook may not connect to `address` (None: it may)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone is not the address
    except ValueError:
        return f"{address!r} is not an address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allow):
        return None
    if ip.is_global and not ip.is_multicast:
        return None
    return (
        f"{ip} is not a public address (loopback, private, link-local or reserved); "
        "an operator may allow it with RIG_WEBHOOK_ALLOW"
    )


class DestinationRefused(OSError):
    """A webhook's destination resolved to an address it may not reach (`refused`)."""

    def __init__(self, why: str) -> None:
        super().__init__(errno.EACCES, why)


def _all_refused(exc: OSError) -> bool:
    """Whether every address of a destination was refused: one refusal, or the error
    that joins a refusal per address (a name with an IPv4 and an IPv6 address)."""
    return isinstance(exc, DestinationRefused) or (
        exc.errno == errno.EACCES and str(exc).count("not a public address") > 1
    )


def guarded_sockets(
    allow: tuple[Network, ...],
) -> Callable[[tuple[Any, ...]], socket.socket]:
    """aiohttp's socket factory: refuses an address before a socket for it exists."""

    def make(addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        why = refused(str(sockaddr[0]), allow)
        if why is not None:
            raise DestinationRefused(why)
        return socket.socket(family=family, type=type_, proto=proto)

    return make


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    secret: str | None = None
    attempts: int = 8
    backoff_s: float = 2.0
    timeout_s: float = 10.0
    allow: tuple[Network, ...] = ()

    @classmethod
    def of(cls, config: RigConfig) -> WebhookSettings:
        settings = cls(
            secret=config.webhook_secret,
            attempts=config.webhook_attempts,
            backoff_s=config.webhook_backoff_s,  # at most MAX_BACKOFF_S (settings)
            timeout_s=config.webhook_timeout_s,
            allow=allowed_networks(config.webhook_allow),
        )
        settings.signer()  # a secret that is not one fails the start, not the first POST
        return settings

    def signer(self) -> Webhook | None:
        if self.secret is None:
            return None
        if not self.secret.startswith("whsec_"):
            raise ConfigError("RIG_WEBHOOK_SECRET must look like whsec_<base64> (rig up makes one)")
        try:
            return Webhook(self.secret)
        except (binascii.Error, ValueError, EmptyWebhookSecretError) as exc:
            raise ConfigError(f"RIG_WEBHOOK_SECRET is no secret after whsec_: {exc}") from None

    def delay(self, attempt: int) -> float:
        """The wait before attempt `attempt + 1`."""
        return min(self.backoff_s * 2.0 ** (attempt - 1), MAX_BACKOFF_S)


def payload(event: Event) -> bytes:
    """The body of a job's webhook: `{type, timestamp, data}` as Standard Webhooks has it;
    `data` is the journal event."""
    status = event.data.get("status", event.type)
    body = {
        "type": f"job.{status}",
        "timestamp": datetime.fromtimestamp(event.ts, UTC).isoformat(),
        "data": event.model_dump(mode="json"),
    }
    return json.dumps(body, separators=(",", ":")).encode()


class WebhookSender:
    """POSTs one `WebhookDelivery`, signs it, and records what happened."""

    def __init__(self, settings: WebhookSettings, records: KeyValue) -> None:
        signer = settings.signer()
        if signer is None:
            raise ConfigError("webhooks need RIG_WEBHOOK_SECRET")
        self.settings, self._signer, self._records = settings, signer, records
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.timeout_s),
            connector=aiohttp.TCPConnector(
                limit=64, limit_per_host=8, socket_factory=guarded_sockets(settings.allow)
            ),
            headers={"User-Agent": _USER_AGENT},
        )

    async def close(self) -> None:
        await self._session.close()

    def headers(self, webhook_id: str, body: bytes) -> dict[str, str]:
        now = datetime.now(UTC)
        return {
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(webhook_id, now, body.decode()),
        }

    async def deliver(self, delivery: WebhookDelivery, attempt: int) -> None:
        """One attempt; raises `RetryableError` (with the backoff) unless it was taken."""
        status = delivery.event.data.get("status", delivery.event.type)
        await self.post(
            delivery.url,
            payload(delivery.event),
            webhook_id=delivery.webhook_id,
            job_id=delivery.job_id,
            type_=f"job.{status}",
            attempt=attempt,
        )

    async def delivered(self, webhook_id: str) -> bool:
        """Whether the webhook of this id was taken already (a later attempt of a delivery
        that went to several targets skips those that took it)."""
        with contextlib.suppress(KeyNotFoundError, NotFoundError):
            value = (await self._records.get(webhook_id)).value
            if value:
                return decode_as(WebhookRecord, value)[0].state == "delivered"
        return False

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        webhook_id: str,
        job_id: str,
        type_: str,
        attempt: int,
        headers: dict[str, str] | None = None,
    ) -> None:
        """One signed POST of `body` to `url`, recorded; raises `RetryableError` (with the
        backoff) unless it was taken, `NonRetryableError` if it never can be."""
        status: int | None = None
        record = {"webhook_id": webhook_id, "job_id": job_id, "url": url, "type": type_}
        try:
            async with self._session.post(
                url,
                data=body,
                headers={**(headers or {}), **self.headers(webhook_id, body)},
                allow_redirects=False,
            ) as response:
                status = response.status
            error = None if 200 <= status < 300 else f"the receiver answered {status}"
        except aiohttp.ClientConnectorError as exc:
            if _all_refused(exc.os_error):  # no use asking again
                why = f"destination refused: {exc.os_error}"
                await self._record(record, "dead_letter", attempt, None, why)
                raise NonRetryableError(
                    f"webhook {webhook_id} to {url}: {why}", webhook_id=webhook_id
                ) from None
            error = f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
        if error is None:
            await self._record(record, "delivered", attempt, status, None)
            return
        last = attempt >= self.settings.attempts
        await self._record(record, "dead_letter" if last else "retrying", attempt, status, error)
        raise RetryableError(
            f"webhook {webhook_id} to {url}: {error} (attempt {attempt} of "
            f"{self.settings.attempts})",
            delay=self.settings.delay(attempt),
            webhook_id=webhook_id,
        )

    async def _record(
        self,
        what: dict[str, str],
        state: Any,
        attempt: int,
        status: int | None,
        error: str | None,
    ) -> None:
        record = WebhookRecord(
            **what,
            state=state,
            attempts=attempt,
            http_status=status,
            error=error,
            ts=time.time(),
        )
        await self._records.put(record.webhook_id, encode(record))
