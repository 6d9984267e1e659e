"""The codec: msgpack by default, JSON when the sender speaks JSON, typed errors on garbage."""

from __future__ import annotations

import json
from collections.abc import Iterator

import msgpack
import pytest
from hypothesis import given, strategies as st

from protocols import (
    DecodeError,
    Encoding,
    InputLimits,
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
    input_limits,
    set_input_limits,
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


@pytest.fixture
def small_limits() -> Iterator[InputLimits]:
    before = input_limits()
    limits = InputLimits(depth=4, string=10, items=5, keys=3)
    set_input_limits(limits)
    try:
        yield limits
    finally:
        set_input_limits(before)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            {"s": "x" * 11},
            "input.s has a string of 11 characters, past the limit of 10 (RIG_LIMIT_STRING)",
        ),
        ({"y" * 11: 1}, "has a string of 11 characters, past the limit of 10"),
        ({"a": list(range(6))}, "input.a has 6 elements, past the limit of 5 (RIG_LIMIT_ITEMS)"),
        (
            {"m": dict.fromkeys("abcd", 1)},
            "input.m has 4 keys, past the limit of 3 (RIG_LIMIT_KEYS)",
        ),
        (
            {"d": [[[[1]]]]},
            "input nests deeper than 4 levels, past the limit of 4 (RIG_LIMIT_DEPTH)",
        ),
    ],
)
def test_each_input_limit_is_a_schema_error_naming_it(
    small_limits: InputLimits, value: object, problem: str
) -> None:
    with pytest.raises(SchemaError) as caught:
        check_plain(value, what="input")
    assert caught.value.message == problem or problem in caught.value.message
    # At the limits exactly, all is well.
    check_plain({"s": "x" * 10, "a": list(range(5)), "m": dict.fromkeys("abc", 1)})
    # Through the API models, from either encoding, the same error.
    for encoding in Encoding:
        body = encode({"agent": "a", "input": value}, encoding)
        with pytest.raises(ProtocolError):
            decode_as(SubmitRequest, body, encoding.headers)


def test_msgpack_refuses_a_claim_past_the_limits_before_building_it() -> None:
    """A msgpack header may claim four billion elements in five bytes: the decoder
    refuses it on the header, with no allocation, naming the limit."""
    claims = {
        b"\xdd\xff\xff\xff\xff": "an array of 4294967295 elements, past the limit of 100,000 "
        "(RIG_LIMIT_ITEMS)",
        b"\xdf\xff\xff\xff\xff": "an object of 4294967295 keys, past the limit of 10,000 "
        "(RIG_LIMIT_KEYS)",
    }
    for data, problem in claims.items():
        with pytest.raises(SchemaError) as caught:
            decode(data)
        assert caught.value.message == f"the message has {problem}"
    # An extension type (Rig sends none); a string claiming 4 GiB in a 5-byte message.
    for data in (b"\xc7\x01\x05\x00", b"\xdb\xff\xff\xff\xff"):
        with pytest.raises(DecodeError, match="not valid msgpack"):
            decode(data)


def test_lowered_limits_bind_outside_values_not_rigs_own_messages(
    small_limits: InputLimits,
) -> None:
    """A snapshot has more fields than a lowered key limit: it still decodes; the values
    from outside in it are what the limits bind."""
    own = {f"field{n}": n for n in range(20)} | {"path": list(range(30))}
    assert decode(encode(own))[0] == own
    with pytest.raises(SchemaError, match="RIG_LIMIT_KEYS"):
        validate(SubmitRequest, {"agent": "a", "input": dict.fromkeys("abcd", 1)})


def test_the_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="string limit must be at least 1"):
        InputLimits(string=0)


def test_an_empty_body_is_said_to_be_empty() -> None:
    """An empty body (what `nats request SUBJECT ''` sends) is a `DecodeError` saying it
    is empty, not that it is "not valid msgpack"."""
    for headers in (None, {"Content-Type": "application/json"}):
        with pytest.raises(DecodeError, match="the body is empty"):
            decode(b"", headers)
