"""Large tool results travel by reference, so that no message and no snapshot grows with them.

A tool result whose JSON is larger than the inline limit (`RIG_INLINE_RESULT_BYTES`,
16 KiB by default) is put in the results object store (`RIG_RESULTS`, chunked, kept as
long as the journal) under `<job_id>/<step>/<tool>`, and the messages, the journal and
the job's snapshot carry a `result_ref` in its place: a few dozen bytes however large
the result. The agent and verifier base classes put the stored value back before user
code sees the job's context, so a tool's author and an agent's author never meet a
reference; `RigClient.fetch_result` reads one for anyone else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from typing import Any, Protocol

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ObjectNotFoundError

from protocols import (
    JobContext,
    Names,
    NonRetryableError,
    RetryableError,
    canonical,
    loads,
    ref_name,
    result_ref,
)


class _Stores(Protocol):
    """Where the results object store is: an actor, or a `RigClient`."""

    @property
    def js(self) -> JetStreamContext: ...
    @property
    def names(self) -> Names: ...


_STORE_TIMEOUT_S = 60.0


async def by_reference(where: _Stores, name: str, value: Any, *, inline: int) -> Any:
    """`value` itself if its JSON fits in `inline` bytes, else a reference to a stored copy."""
    data = canonical(value)
    if len(data) <= inline:
        return value
    digest = hashlib.sha256(data).hexdigest()
    try:
        store = await where.js.object_store(where.names.results_store)
        async with asyncio.timeout(_STORE_TIMEOUT_S):
            # Stored once: a call delivered again finds its result there. An executor may
            # not purge the store (a purge's filter is in its body, which no permission
            # sees, so the right to purge one object is the right to purge them all),
            # and a put over an existing object purges the old one's chunks.
            stored = None
            with contextlib.suppress(ObjectNotFoundError, NotFoundError):
                stored = await store.get_info(name)
            if stored is None or stored.deleted:
                await store.put(name, data)
            elif stored.digest != _object_digest(data):
                raise NonRetryableError(
                    f"the result name {name!r} holds another object: not overwritten",
                    ref=name,
                )
    except NonRetryableError:
        raise
    except Exception as exc:  # the message is given back and the result stored again
        raise RetryableError(f"storing a {len(data)}-byte result failed: {exc!r}") from exc
    return result_ref(name, len(data), digest)


def _object_digest(data: bytes) -> str:
    """The digest an object store keeps of an object (nats-py's `SHA-256=<base64url>`)."""
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()


async def resolved(where: _Stores, value: Any) -> Any:
    """The stored result if `value` is a reference to one, else `value` unchanged."""
    name = ref_name(value)
    if name is None:
        return value
    try:
        store = await where.js.object_store(where.names.results_store)
        async with asyncio.timeout(_STORE_TIMEOUT_S):
            found = await store.get(name)
    except (ObjectNotFoundError, NotFoundError):
        raise NonRetryableError(
            f"the stored result {name!r} is gone (results are kept as long as the journal)",
            ref=name,
        ) from None
    except TimeoutError as exc:
        raise RetryableError(f"reading the stored result {name!r} timed out") from exc
    data = found.data or b""
    if hashlib.sha256(data).hexdigest() != value.get("sha256"):
        raise NonRetryableError(f"the stored result {name!r} does not match its digest", ref=name)
    return loads(data)


async def resolved_context(where: _Stores, context: JobContext) -> JobContext:
    """`context` with every result stored by reference read back (a lookup's too, kept
    with its decision)."""
    looked = [d for d in context.decisions if ref_name(d.get("result")) is not None]
    if not looked and not any(ref_name(value) is not None for value in context.results.values()):
        return context
    results = {tool: await resolved(where, value) for tool, value in context.results.items()}
    decisions = [
        d | {"result": await resolved(where, d["result"])} if ref_name(d.get("result")) else d
        for d in context.decisions
    ]
    return context.model_copy(update={"results": results, "decisions": decisions})
