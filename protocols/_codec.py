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


# How deep a value may nest (objects in lists in objects ...). Deeper input is refused at
# the edge: Python's JSON parser and pydantic recurse, and nothing Rig carries needs it.
MAX_DEPTH = 64


# The integers msgpack carries: signed and unsigned 64-bit.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows (NaN and Infinity are refused)")


def loads(text: str | bytes) -> Any:
    """Parse JSON as Rig does everywhere: `NaN`, `Infinity` and `-Infinity` are refused."""
    return json.loads(text, parse_constant=_no_constant)


def check_plain(value: Any, *, what: str = "value") -> Any:
    """Return `value` if it is plain data Rig can carry, else raise `SchemaError`.

    Plain data nests at most `MAX_DEPTH` levels, holds no NaN or infinite number (JSON
    has no such numbers, and a NaN amount compares false with every limit), no integer
    past 64 bits, and only text that is valid UTF-8.
    This is the one check every edge uses: the API models, the CLI, LLM answers.
    """
    stack: list[tuple[Any, int, str]] = [(value, 1, what)]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise SchemaError(f"{where}: {item} is not a finite number", field=where)
        elif isinstance(item, int) and not _INT_MIN <= item <= _INT_MAX:
            raise SchemaError(
                f"{where}: the integer is outside what Rig carries (64 bits)", field=where
            )
        elif isinstance(item, str):
            _check_text(item, where)
        elif isinstance(item, dict | list | tuple):
            if depth > MAX_DEPTH:
                raise SchemaError(
                    f"{what} nests deeper than {MAX_DEPTH} levels", field=what, limit=MAX_DEPTH
                )
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in children:
                if isinstance(key, str):
                    _check_text(key, where)
                stack.append((child, depth + 1, f"{where}.{key}"))
    return value


def _check_text(text: str, where: str) -> None:
    """Text must encode as UTF-8 (a lone surrogate, from undecodable bytes, does not)."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise SchemaError(f"{where}: text that is not valid UTF-8", field=where) from None


def decode(data: bytes, headers: Mapping[str, str] | None = None) -> tuple[Any, Encoding]:
    """Decode a body to plain Python values; raise `DecodeError` on bytes that are neither."""
    encoding = sniff(data, headers)
    try:
        if encoding is Encoding.JSON:
            value = loads(data)
        else:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (Exception, RecursionError) as exc:  # each decoder raises its own zoo of types
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
    try:
        return validate(kind, value), encoding
    except SchemaError as exc:
        raise SchemaError(exc.message, encoding=encoding.value) from exc.__cause__


def validate(kind: type[M] | TypeAdapter[M], value: Any) -> M:
    """Validate plain values as `kind`, raising `SchemaError` (one line per problem).

    The path every request takes, whether it came over NATS, HTTP or the CLI.
    """
    adapter = kind if isinstance(kind, TypeAdapter) else _adapter(kind)
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise SchemaError(explain(exc)) from exc
    except RecursionError:
        raise SchemaError(f"the message nests deeper than {MAX_DEPTH} levels") from None


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
        message = error["msg"].removeprefix("Value error, ")
        named = message.startswith((f"{where}:", f"{where}."))
        problems.append(message if named else f"{where}: {message}")
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
