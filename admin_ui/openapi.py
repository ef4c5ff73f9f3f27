"""The OpenAPI description of the admin API, served at /admin/openapi.json."""

from __future__ import annotations

from typing import Any

from gateway.core.types import CONVERSATION_TYPES, OPTIMIZATIONS

__all__ = ["openapi"]


def _param(
    name: str,
    schema: dict[str, Any],
    where: str = "query",
    required: bool = False,
    description: str = "",
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "schema": schema,
        "description": description,
    }


_CTYPE = _param("conversationType", {"type": "string", "enum": list(CONVERSATION_TYPES)})
_OPT = _param("optimization", {"type": "string", "enum": list(OPTIMIZATIONS)})
_SINCE = _param("since", {"type": "string"}, description="unix seconds or ISO 8601")
_UNTIL = _param("until", {"type": "string"}, description="unix seconds or ISO 8601")
_LIMIT = _param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})
_OFFSET = _param("offset", {"type": "integer", "minimum": 0, "default": 0})
_BUCKET = _param("bucket", {"type": "string", "enum": ["minute", "hour", "day"]})
_MODEL = _param("modelName", {"type": "string"}, "path", True)
_ERRORS = {
    "401": {"description": "missing or wrong admin token"},
    "404": {"description": "unknown model or id"},
    "422": {"description": "a filter or field has a bad value"},
}


def _get(summary: str, *params: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": list(params),
            "responses": {"200": {"description": "JSON"}, **_ERRORS},
        }
    }


def openapi() -> dict[str, Any]:
    feedback_body = {
        "type": "object",
        "required": ["response_id"],
        "additionalProperties": False,
        "properties": {
            "response_id": {"type": "string"},
            **{
                d: {"type": "integer", "minimum": 1, "maximum": 5}
                for d in ("relevance", "accuracy", "helpfulness", "creativity", "overall")
            },
            "comment": {"type": "string", "maxLength": 4000},
        },
    }
    paths = {
        "/performance": _get(
            "Every model's live metrics per conversation type", _CTYPE, _LIMIT, _OFFSET
        ),
        "/performance/rankings": _get(
            "Models ranked by the routing score, with its parts", _CTYPE, _OPT
        ),
        "/performance/metrics/{modelName}": _get(
            "One model in full, with a time series", _MODEL, _CTYPE, _SINCE, _UNTIL, _BUCKET
        ),
        "/performance/blacklisted": _get("Blacklisted models"),
        "/performance/blacklisted/{modelName}": {
            "delete": {
                "summary": "Let a blacklisted model back early",
                "parameters": [_MODEL],
                "responses": {"200": {"description": "JSON"}, **_ERRORS},
            }
        },
        "/performance/summary": _get("Totals, busiest and best models per type", _CTYPE),
        "/evaluations": _get(
            "Evaluated answers with their feedback", _CTYPE, _SINCE, _UNTIL, _LIMIT, _OFFSET
        ),
        "/evaluations/model/{modelName}": _get(
            "One model's evaluations and feedback", _MODEL, _CTYPE, _SINCE, _UNTIL, _LIMIT, _OFFSET
        ),
        "/evaluations/summary": _get(
            "Evaluation summary, trend and improvement suggestions", _CTYPE, _SINCE, _UNTIL, _BUCKET
        ),
        "/admin/responses": _get("Recent answers that can be rated", _LIMIT),
        "/admin/feedback": {
            "post": {
                "summary": "Rate an answer by its response id (same as POST /v1/feedback)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": feedback_body}},
                },
                "responses": {"200": {"description": "stored"}, **_ERRORS},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Gatewise admin API", "version": "1"},
        "components": {"securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}}},
        "security": [{"admin": []}],
        "paths": paths,
    }
