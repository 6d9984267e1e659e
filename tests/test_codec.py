"""The codec: msgpack by default, JSON when the sender speaks JSON, typed errors on garbage."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given, strategies as st

from protocols import (
    DecodeError,
    Encoding,
    ProtocolError,
    ResolveRequest,
    SchemaError,
    SubmitRequest,
    ToolCall,
    check_plain,
    decode,
    decode_as,
    encode,
    idempotency_key,
    sniff,
    validate,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=8)


@given(json_objects)
def test_msgpack_round_trip(value: dict) -> None:
    """A map encoded as msgpack decodes to the same map, recognised as msgpack."""
    data = encode(value)
    assert decode(data) == (value, Encoding.MSGPACK)


@given(json_objects)
def test_json_round_trip_without_headers(value: dict) -> None:
    """A JSON object with no headers (what the `nats` CLI sends) is read as JSON."""
    data = encode(value, Encoding.JSON)
    assert decode(data) == (value, Encoding.JSON)
    assert decode(b"  \n" + data) == (value, Encoding.JSON)


@given(st.binary(max_size=256))
def test_garbage_bytes_raise_only_protocol_errors(data: bytes) -> None:
    """Arbitrary bytes either decode or raise a ProtocolError, never anything else."""
    try:
        decode_as(SubmitRequest, data)
    except ProtocolError:
        pass


@given(json_values.filter(lambda v: not isinstance(v, dict)))
def test_a_message_must_be_a_map(value: object) -> None:
    """A valid encoding of something other than a map is a schema error."""
    with pytest.raises(SchemaError, match="expected a map"):
        decode_as(ToolCall, msgpack.packb(value))


def test_content_type_header_wins() -> None:
    """The Content-Type header decides the encoding when present."""
    body = json.dumps({"a": 1}).encode()
    assert sniff(body, {"Content-Type": "application/json; charset=utf-8"}) is Encoding.JSON
    with pytest.raises(DecodeError):
        decode(body, {"Content-Type": "application/msgpack"})
    with pytest.raises(DecodeError, match="unsupported Content-Type"):
        decode(body, {"Content-Type": "text/plain"})


def test_wrong_schema_names_the_fields() -> None:
    """A schema error names each field that is wrong, for the sender to fix."""
    with pytest.raises(SchemaError) as caught:
        decode_as(SubmitRequest, b'{"agent": "refund", "inputs": {}}')
    assert "input: Field required" in caught.value.message
    assert "inputs: Extra inputs are not permitted" in caught.value.message
    assert caught.value.to_dict()["code"] == "schema_error"


def test_garbage_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(b"\xc1\xc1\xc1")
    with pytest.raises(DecodeError):
        decode(b'{"not json')


@given(st.text(), st.text(), json_objects)
def test_idempotency_key_ignores_key_order(job: str, tool: str, args: dict) -> None:
    """Equal arguments give equal keys, whatever their order; the key is a sha256 hex."""
    reordered = dict(reversed(list(args.items())))
    assert idempotency_key(job, tool, args) == idempotency_key(job, tool, reordered)
    assert len(idempotency_key(job, tool, args)) == 64


def test_idempotency_key_separates_fields() -> None:
    """Moving characters between job id and tool name changes the key."""
    assert idempotency_key("ab", "c", {}) != idempotency_key("a", "bc", {})


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"amount": float("nan")}, "input.amount: nan is not a finite number"),
        ({"list": [1, float("-inf")]}, "input.list.1: -inf is not a finite number"),
        ({"deep": _nested(70)}, "nests deeper than 64"),
        ({"text": "\udcff"}, "input.text: text that is not valid UTF-8"),
        ({"\udcff": 1}, "text that is not valid UTF-8"),
    ],
)
def test_check_plain_refuses_what_json_cannot_carry(value: object, problem: str) -> None:
    with pytest.raises(SchemaError, match=problem.replace(".", r"\.")):
        check_plain(value, what="input")


def test_plain_values_pass_and_json_nan_is_a_decode_error() -> None:
    value = {"a": [1, 2.5, "é", {"b": None}], "c": True}
    assert check_plain(value) is value
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        with pytest.raises(DecodeError, match="JSON allows"):
            decode(b'{"amount": ' + token + b"}")
    with pytest.raises(SchemaError, match=r"input\.x: nan is not a finite number"):
        decode_as(SubmitRequest, encode({"agent": "a", "input": {"x": float("nan")}}))


def test_every_field_of_a_client_request_is_plain() -> None:
    """What schemathesis found through the gateway: text with a lone surrogate in a plain
    string field, and an integer past 64 bits, got as far as msgpack (a 500)."""
    with pytest.raises(SchemaError, match="by: text that is not valid UTF-8"):
        validate(ResolveRequest, {"job_id": "j", "edge": "e", "by": "\ud800"})
    with pytest.raises(SchemaError, match=r"input\.n: the integer is outside"):
        validate(SubmitRequest, {"agent": "a", "input": {"n": 2**70}})
    with pytest.raises(SchemaError, match="max_visits"):
        validate(SubmitRequest, {"agent": "a", "input": {}, "max_visits": 10**30})
    ok = validate(SubmitRequest, {"agent": "a", "input": {"n": 2**64 - 1, "m": -(2**63)}})
    assert ok.input == {"n": 2**64 - 1, "m": -(2**63)}
