"""The one codec: msgpack by default, JSON when the sender speaks JSON.

A message is JSON when its `Content-Type` header says `application/json`, or when it
has no `Content-Type` and its body is a JSON object: that is what the plain `nats`
CLI sends. Everything else is msgpack. A reply goes back in the request's encoding.

Detection is unambiguous for Rig's messages, which are all maps: a msgpack map starts
with a byte in 0x80-0x8f, 0xde or 0xdf, never with `{` (or JSON whitespace).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

import msgpack
from pydantic import BaseModel, TypeAdapter, ValidationError

from protocols._errors import DecodeError, SchemaError
from protocols._names import ContentType, Header

M = TypeVar("M")

_JSON_START = frozenset(b" \t\r\n{")


class Encoding(StrEnum):
    MSGPACK = ContentType.MSGPACK
    JSON = ContentType.JSON

    @property
    def headers(self) -> dict[str, str]:
        """Headers that announce this encoding (msgpack, the default, needs none)."""
        return {Header.CONTENT_TYPE: self.value} if self is Encoding.JSON else {}


def sniff(data: bytes, headers: Mapping[str, str] | None = None) -> Encoding:
    """Tell which encoding a message body is in, from its header or its first byte."""
    content_type = (headers or {}).get(Header.CONTENT_TYPE)
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media == ContentType.JSON:
            return Encoding.JSON
        if media in (ContentType.MSGPACK, "application/x-msgpack"):
            return Encoding.MSGPACK
        raise DecodeError(f"unsupported Content-Type {content_type!r}", content_type=content_type)
    if data[:1] and data[0] in _JSON_START and data.lstrip()[:1] == b"{":
        return Encoding.JSON
    return Encoding.MSGPACK


def decode(data: bytes, headers: Mapping[str, str] | None = None) -> tuple[Any, Encoding]:
    """Decode a body to plain Python values; raise `DecodeError` on bytes that are neither."""
    encoding = sniff(data, headers)
    try:
        if encoding is Encoding.JSON:
            value = json.loads(data)
        else:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # each decoder raises its own zoo of exception types
        raise DecodeError(
            f"body is not valid {encoding.name.lower()}: {exc}",
            encoding=encoding.value,
            size=len(data),
        ) from exc
    return value, encoding


def encode(value: Any, encoding: Encoding = Encoding.MSGPACK) -> bytes:
    """Encode plain values (or a pydantic model) in the given encoding."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json" if encoding is Encoding.JSON else "python")
    if encoding is Encoding.JSON:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def decode_as(
    kind: type[M] | TypeAdapter[M],
    data: bytes,
    headers: Mapping[str, str] | None = None,
) -> tuple[M, Encoding]:
    """Decode and validate a body as `kind`; raise `DecodeError` or `SchemaError`."""
    value, encoding = decode(data, headers)
    if not isinstance(value, dict):
        raise SchemaError(
            f"expected a map/object, got {type(value).__name__}", encoding=encoding.value
        )
    adapter = kind if isinstance(kind, TypeAdapter) else _adapter(kind)
    try:
        return adapter.validate_python(value), encoding
    except ValidationError as exc:
        raise SchemaError(explain(exc), encoding=encoding.value) from exc


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(kind: Any) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        adapter = _ADAPTERS[kind] = TypeAdapter(kind)
    return adapter


def explain(exc: ValidationError) -> str:
    """One line per problem, each naming the field: what a client needs to fix its message."""
    problems = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "(message)"
        problems.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def canonical(value: Any) -> bytes:
    """The canonical JSON of a value: sorted keys, no spaces, UTF-8. Equal values, equal bytes."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def idempotency_key(job_id: str, tool: str, args: Any) -> str:
    """The ledger key of a tool call: a hash of the job id, the tool and the canonical args."""
    digest = hashlib.sha256()
    for part in (job_id.encode(), tool.encode(), canonical(args)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()
