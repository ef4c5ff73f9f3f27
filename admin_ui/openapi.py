"""The OpenAPI description of the admin app, generated from its routes.

Every route the admin app serves is in the document: its path and methods come from
the route itself, its summary from the endpoint's docstring, and what it takes from
the `@operation` that declares its query parameters and body. Nothing is written
beside the routes, so nothing can drift from them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.routing import BaseRoute, Route

from gateway.core.types import CONVERSATION_TYPES, OPTIMIZATIONS
from gateway.routing.tracker import FEEDBACK_DIMENSIONS

__all__ = [
    "BUCKET",
    "CONVERSATION_TYPE",
    "FEEDBACK_BODY",
    "LIMIT",
    "OFFSET",
    "OPTIMIZATION",
    "SINCE",
    "UNTIL",
    "Operation",
    "openapi",
    "operation",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str = ""


CONVERSATION_TYPE = Param("conversationType", {"type": "string", "enum": list(CONVERSATION_TYPES)})
OPTIMIZATION = Param("optimization", {"type": "string", "enum": list(OPTIMIZATIONS)})
SINCE = Param("since", {"type": "string"}, "unix seconds or ISO 8601")
UNTIL = Param("until", {"type": "string"}, "unix seconds or ISO 8601")
LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})
OFFSET = Param("offset", {"type": "integer", "minimum": 0, "default": 0})
KEY = Param("key", {"type": "string"}, "a client key's name: its answers only")
BUCKET = Param("bucket", {"type": "string", "enum": ["minute", "hour", "day"]})

FEEDBACK_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["response_id"],
    "additionalProperties": False,
    "properties": {
        "response_id": {"type": "string"},
        **{d: {"type": "integer", "minimum": 1, "maximum": 5} for d in FEEDBACK_DIMENSIONS},
        "comment": {"type": "string", "maxLength": 4000},
    },
}

_ERRORS = {
    "401": {"description": "missing or wrong admin token"},
    "404": {"description": "unknown model or id"},
    "422": {"description": "a filter or field has a bad value"},
}


@dataclass(frozen=True, slots=True)
class Operation:
    """What an endpoint takes, beyond its path: query parameters, a JSON body, and
    what it answers with."""

    query: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None
    media_type: str = "application/json"
    public: bool = False  # served without the admin token


def operation(
    *query: Param,
    body: dict[str, Any] | None = None,
    media_type: str = "application/json",
    public: bool = False,
) -> Callable[[F], F]:
    """Declare what an admin endpoint takes, for the generated document."""

    def declare(endpoint: F) -> F:
        endpoint.__dict__["openapi"] = Operation(query, body, media_type, public)
        return endpoint

    return declare


_CONVERTOR = re.compile(r"{(\w+)(?::\w+)?}")


def openapi(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        path = _CONVERTOR.sub(r"{\1}", route.path)
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            paths.setdefault(path, {})[method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Gatewise admin API", "version": "1"},
        "components": {"securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}}},
        "security": [{"admin": []}],
        "paths": dict(sorted(paths.items())),
    }


def _operation(route: Route) -> dict[str, Any]:
    endpoint = route.endpoint
    spec = getattr(endpoint, "openapi", None) or Operation()
    doc = (endpoint.__doc__ or "").strip()
    if not doc:
        raise ValueError(f"{route.path}: the endpoint has no docstring to describe it")
    summary, _, description = doc.partition("\n")
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _CONVERTOR.findall(route.path)
    ]
    parameters += [
        {"name": p.name, "in": "query", "required": False, "schema": p.schema}
        | ({"description": p.description} if p.description else {})
        for p in spec.query
    ]
    out: dict[str, Any] = {
        "summary": summary.strip(),
        "parameters": parameters,
        "responses": {
            "200": {"description": "OK", "content": {spec.media_type: {}}},
            **({} if spec.public else _ERRORS),
        },
    }
    if description.strip():
        out["description"] = " ".join(description.split())
    if spec.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": spec.body}},
        }
    if spec.public:
        out["security"] = []
    return out
