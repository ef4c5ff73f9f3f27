"""Query-string filters of the admin API, checked the same way everywhere (bad → 422)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request

from gateway.core.errors import InvalidFilter
from gateway.core.types import CONVERSATION_TYPES, OPTIMIZATIONS

__all__ = ["Filters", "filters"]


@dataclass(frozen=True, slots=True)
class Filters:
    conversation_type: str | None = None
    optimization: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    offset: int = 0
    bucket: int | None = None
    key: str | None = None  # a client key's name: its answers only


def _bad(name: str, message: str) -> InvalidFilter:
    return InvalidFilter(f"Invalid '{name}': {message}", param=name)


def _time(name: str, raw: str | None) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise _bad(name, "expected unix seconds or an ISO 8601 time") from None


def _int(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.lstrip("-").isdigit() or not low <= int(raw) <= high:
        raise _bad(name, f"expected a whole number from {low} to {high}")
    return int(raw)


_BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}


def filters(request: Request) -> Filters:
    q = request.query_params
    ctype = q.get("conversationType") or None
    if ctype is not None and ctype not in CONVERSATION_TYPES:
        raise _bad("conversationType", f"expected one of {', '.join(CONVERSATION_TYPES)}")
    optimization = q.get("optimization") or None
    if optimization is not None and optimization not in OPTIMIZATIONS:
        raise _bad("optimization", f"expected one of {', '.join(OPTIMIZATIONS)}")
    since, until = _time("since", q.get("since")), _time("until", q.get("until"))
    if since is not None and until is not None and since >= until:
        raise _bad("until", "must be later than 'since'")
    bucket = q.get("bucket") or None
    if bucket is not None and bucket not in _BUCKETS:
        raise _bad("bucket", f"expected one of {', '.join(_BUCKETS)}")
    return Filters(
        ctype,
        optimization,
        since,
        until,
        _int("limit", q.get("limit"), 100, 1, 1000),
        _int("offset", q.get("offset"), 0, 0, 10_000_000),
        _BUCKETS[bucket] if bucket else None,
        q.get("key") or None,
    )
