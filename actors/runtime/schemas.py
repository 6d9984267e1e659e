"""A value checked against a JSON schema: the one check behind an agent's input, an
edge's arguments, a signal's data and a tool's arguments offered in a set."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import fastjsonschema

from protocols import SchemaError


def fits(schema: dict[str, Any], value: Any, name: str, refusal: str, **details: Any) -> None:
    """Raise `SchemaError` (`refusal: what is wrong`, the field named as `name...`) when
    `value` does not fit `schema`."""
    check = _validator(json.dumps(schema, sort_keys=True))
    try:
        check(value)
    except fastjsonschema.JsonSchemaException as exc:
        where = str(getattr(exc, "name", "") or "data").replace("data", name, 1)
        message = str(getattr(exc, "message", exc)).replace("data", name, 1)
        raise SchemaError(f"{refusal}: {message}", field=where, **details) from None


@functools.lru_cache(maxsize=256)
def _validator(schema: str) -> Callable[[Any], Any]:
    """A compiled check of one schema (compiled once per schema, kept for the next)."""
    check: Callable[[Any], Any] = fastjsonschema.compile(json.loads(schema))
    return check
