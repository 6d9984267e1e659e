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
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class InputLimits:
    """How large one value from outside may be, beside the message's own size (a job's
    input: a quarter of the server's `max_payload`). Past any of these it is refused with a
    `SchemaError` that names the limit. Each process takes them from the `RIG_LIMIT_*`
    variables (`actors.RigConfig`); the defaults bound the work a hostile message can make
    (Python's JSON parser and pydantic recurse; a map of a million keys is a million
    allocations) well past what any agent's input needs."""

    depth: int = 64  # RIG_LIMIT_DEPTH: nesting of objects and arrays
    string: int = 1_000_000  # RIG_LIMIT_STRING: characters of one string or key
    items: int = 100_000  # RIG_LIMIT_ITEMS: elements of one array
    keys: int = 10_000  # RIG_LIMIT_KEYS: keys of one object

    def __post_init__(self) -> None:
        for name in ("depth", "string", "items", "keys"):
            if getattr(self, name) < 1:
                raise ValueError(f"the {name} limit must be at least 1")


_DEFAULT_LIMITS = _limits = _bounds = InputLimits()


def input_limits() -> InputLimits:
    """The limits this process applies (`set_input_limits` changes them)."""
    return _limits


def set_input_limits(limits: InputLimits) -> None:
    global _limits, _bounds
    _limits = limits
    # What msgpack may build at all: the larger of these limits and the defaults, each.
    _bounds = InputLimits(
        depth=max(limits.depth, _DEFAULT_LIMITS.depth),
        string=max(limits.string, _DEFAULT_LIMITS.string),
        items=max(limits.items, _DEFAULT_LIMITS.items),
        keys=max(limits.keys, _DEFAULT_LIMITS.keys),
    )


# The integers msgpack carries: signed and unsigned 64-bit.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows (NaN and Infinity are refused)")


def loads(text: str | bytes) -> Any:
    """Parse JSON as Rig does everywhere: `NaN`, `Infinity` and `-Infinity` are refused."""
    return json.loads(text, parse_constant=_no_constant)


def check_plain(value: Any, *, what: str = "value") -> Any:
    """Return `value` if it is plain data Rig can carry, else raise `SchemaError`.

    Plain data stays within the `InputLimits` (nesting, string length, array length,
    keys per object), holds no NaN or infinite number (JSON has no such numbers, and a
    NaN amount compares false with every limit), no integer past 64 bits, and only text
    that is valid UTF-8.
    This is the one check every edge uses: the API models, the CLI, LLM answers.
    """
    limits = _limits
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
            _check_text(item, where, limits)
        elif isinstance(item, dict | list | tuple):
            if depth > limits.depth:
                _over(what, f"nests deeper than {limits.depth} levels", "DEPTH", limits.depth)
            if isinstance(item, dict):
                if len(item) > limits.keys:
                    _over(where, f"has {len(item)} keys", "KEYS", limits.keys)
                children: Any = item.items()
            else:
                if len(item) > limits.items:
                    _over(where, f"has {len(item)} elements", "ITEMS", limits.items)
                children = enumerate(item)
            for key, child in children:
                if isinstance(key, str):
                    _check_text(key, where, limits)
                stack.append((child, depth + 1, f"{where}.{key}"))
    return value


def _over(where: str, what: str, name: str, limit: int) -> None:
    raise SchemaError(
        f"{where} {what}, past the limit of {limit:,} (RIG_LIMIT_{name})",
        field=where,
        limit=limit,
    )


def _check_text(text: str, where: str, limits: InputLimits) -> None:
    """Text within the string limit that encodes as UTF-8 (a lone surrogate, from
    undecodable bytes, does not)."""
    if len(text) > limits.string:
        _over(where, f"has a string of {len(text):,} characters", "STRING", limits.string)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise SchemaError(f"{where}: text that is not valid UTF-8", field=where) from None


def decode(data: bytes, headers: Mapping[str, str] | None = None) -> tuple[Any, Encoding]:
    """Decode a body to plain Python values; raise `DecodeError` on bytes that are neither."""
    encoding = sniff(data, headers)
    if not data:
        raise DecodeError(
            "the body is empty: a request is a JSON object or a msgpack map",
            encoding=encoding.value,
            size=0,
        )
    try:
        if encoding is Encoding.JSON:
            value = loads(data)
        else:
            # A container whose header claims more than any limit allows is refused before
            # anything is allocated for it (a 5-byte message may claim 4 billion elements).
            # At least the default limits: Rig's own messages (a snapshot has more fields
            # than a lowered key limit) decode whatever the limits of outside values are,
            # which `check_plain` applies to those values. UTF-8: up to 4 bytes a character.
            bound = _bounds
            value = msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=True,
                max_str_len=4 * bound.string,
                max_bin_len=4 * bound.string,
                max_array_len=bound.items,
                max_map_len=bound.keys,
                max_ext_len=0,  # Rig sends no extension types
            )
    except ValueError as exc:
        over = _MSGPACK_LIMITS.get(str(exc).partition("exceeds max_")[2].partition("(")[0])
        if over is None:
            raise DecodeError(
                f"body is not valid {encoding.name.lower()}: {exc}",
                encoding=encoding.value,
                size=len(data),
            ) from exc
        name, what = over
        limit = getattr(_bounds, name.lower())
        raise SchemaError(
            f"the message has {what.format(str(exc).split(' ', 1)[0])}, past the limit of "
            f"{limit:,} (RIG_LIMIT_{name})",
            encoding=encoding.value,
            limit=limit,
        ) from None
    except (Exception, RecursionError) as exc:  # each decoder raises its own zoo of types
        raise DecodeError(
            f"body is not valid {encoding.name.lower()}: {exc}",
            encoding=encoding.value,
            size=len(data),
        ) from exc
    return value, encoding


# msgpack's words for a container past its limits ("9 exceeds max_array_len(8)"), in ours.
_MSGPACK_LIMITS = {
    "array_len": ("ITEMS", "an array of {} elements"),
    "map_len": ("KEYS", "an object of {} keys"),
    "str_len": ("STRING", "a string of {} bytes"),
    "bin_len": ("STRING", "binary data of {} bytes"),
}


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
        raise SchemaError(f"the message nests deeper than {_limits.depth} levels") from None


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
