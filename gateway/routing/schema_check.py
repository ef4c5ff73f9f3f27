"""Whether an answer conforms to the JSON Schema its request asked for
(`response_format: json_schema`), with a maintained implementation (`jsonschema`).

The schema is the client's: it may be huge, invalid or refer to itself without end. None
of that may cost the evaluator more than bounded work or stop it judging other answers,
so a schema that cannot be used says nothing (UNKNOWN) instead of raising: too large is
not checked, and a self-referential one ends at Python's recursion limit.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import orjson
from jsonschema import Draft202012Validator

__all__ = ["MAX_SCHEMA_BYTES", "Conformance", "conformance"]

MAX_SCHEMA_BYTES = 64 * 1024  # larger schemas are not checked


class Conformance(Enum):
    CONFORMS = "conforms"
    BREAKS = "breaks"
    UNKNOWN = "unknown"  # no usable schema


def conformance(value: Any, schema: Any) -> Conformance:
    if not isinstance(schema, dict):
        return Conformance.UNKNOWN
    try:
        if len(orjson.dumps(schema)) > MAX_SCHEMA_BYTES:
            return Conformance.UNKNOWN
        valid = Draft202012Validator(schema).is_valid(value)
    except RecursionError:  # a $ref that refers to itself without end
        return Conformance.UNKNOWN
    except Exception:  # an invalid schema, a $ref to nowhere, a bad pattern: unusable
        return Conformance.UNKNOWN
    return Conformance.CONFORMS if valid else Conformance.BREAKS
