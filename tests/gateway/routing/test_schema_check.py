"""Answers against client-supplied JSON Schemas: jsonschema's semantics, bounded work, and
no client schema that can raise."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.routing.schema_check import MAX_SCHEMA_BYTES, Conformance, conformance


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        ({"type": "array", "minItems": 2}, [1, 2], [1]),
        ({"type": "string", "pattern": "^[a-z]+$"}, "abc", "ABC"),
        # oneOf means exactly one: a value that matches both options breaks it
        ({"oneOf": [{"type": "integer"}, {"minimum": 0}]}, -1, 1),
        ({"type": "object", "properties": {"a": {}}, "required": ["a"],
          "additionalProperties": False}, {"a": 1}, {"a": 1, "b": 2}),
        ({"$defs": {"n": {"type": "number"}}, "items": {"$ref": "#/$defs/n"}}, [1.5], ["x"]),
    ],
)  # fmt: skip
def test_the_library_decides(schema: dict[str, Any], good: Any, bad: Any) -> None:
    assert conformance(good, schema) is Conformance.CONFORMS
    assert conformance(bad, schema) is Conformance.BREAKS


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},  # refers to itself without end
        {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        {"$ref": "#/$defs/nowhere"},
        {"propertyNames": {"pattern": "(unclosed"}},
        {"type": 42},
        "not a schema",
        {"enum": ["x" * MAX_SCHEMA_BYTES]},  # too large to check
    ],
)
def test_an_unusable_schema_says_nothing_and_never_raises(schema: Any) -> None:
    assert conformance({"a": [1, 2]}, schema) is Conformance.UNKNOWN
