"""The stored columns, and the row shaping every store shares.

Writes go through the ``*_row``/``*_values`` functions, which validate before anything is
written. Reads fetch column values and partial sums (SQL ``SUM``/``COUNT``) and hand them
to the ``*_out`` and merge functions here, so booleans, JSON flags, means, ``None`` for
empty groups, ordering and shapes are identical whatever the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import orjson

from gateway.core.types import Attempt

__all__ = [
    "ATTEMPT_COLUMNS",
    "FEEDBACK_COLUMNS",
    "FEEDBACK_SCORES",
    "HOUR",
    "RATING_COLUMNS",
    "RESPONSE_COLUMNS",
    "Row",
    "attempt_out",
    "attempt_row",
    "evaluation_rows",
    "feedback_aggregate_rows",
    "feedback_out",
    "feedback_row",
    "listed_response",
    "merge_buckets",
    "merge_trend",
    "present_scores",
    "ranked_percentiles",
    "response_out",
    "response_row",
    "response_values",
]

Row: TypeAlias = dict[str, Any]

HOUR = 3600  # the width of an attempt_hourly rollup

# The attempts columns in insertion order (the table also has an autoincrement ``id``).
ATTEMPT_COLUMNS: tuple[str, ...] = (
    "request_id", "response_id", "attempt", "model", "provider", "conversation_type",
    "route", "optimization", "ok", "error_class", "http_status", "latency_ms", "ttft_ms",
    "prompt_tokens", "completion_tokens", "cost", "ts", "stream", "error_message",
    "counts_as_failure",
)  # fmt: skip
_ATTEMPT_OUT = ("id", *ATTEMPT_COLUMNS)
_BOOL_COLUMNS = ("ok", "stream", "counts_as_failure")

# The rating dimensions (1-5 each, any may be missing) and the responses/feedback columns.
FEEDBACK_SCORES: tuple[str, ...] = (
    "relevance", "accuracy", "helpfulness", "creativity", "overall",
)  # fmt: skip
RESPONSE_COLUMNS: tuple[str, ...] = (
    "response_id", "request_id", "model", "provider", "conversation_type", "route",
    "optimization", "ts", "latency_ms", "flags", "auto_score", "prompt", "answer", "owner",
    "experiment", "arm", "cost",
)  # fmt: skip
_RESPONSE_REQUIRED = ("response_id", "request_id", "model", "provider", "conversation_type", "ts")
# In insertion order; the table also has an autoincrement ``id``.
FEEDBACK_COLUMNS: tuple[str, ...] = (
    "response_id", "model", "provider", "conversation_type", *FEEDBACK_SCORES, "comment", "ts",
)  # fmt: skip
_FEEDBACK_OUT = ("id", *FEEDBACK_COLUMNS)
# A listed response's ``feedback``: the columns of its latest rating.
RATING_COLUMNS: tuple[str, ...] = (*FEEDBACK_SCORES, "comment", "ts")


def _mean(total: float | None, n: int | None) -> float | None:
    return None if not n or total is None else float(total) / n


# ---- attempts ----


def attempt_row(a: Attempt) -> tuple[Any, ...]:
    """An attempt as a tuple of column values in ``ATTEMPT_COLUMNS`` order, flags as
    ``bool`` (SQLite stores them as 0/1, PostgreSQL as ``boolean``)."""
    return (
        a.request_id, a.response_id, a.attempt, a.model, a.provider, a.conversation_type,
        a.route, a.optimization, bool(a.ok), a.error_class, a.http_status, a.latency_ms,
        a.ttft_ms, a.prompt_tokens, a.completion_tokens, a.cost, a.timestamp, bool(a.stream),
        a.error_message, bool(a.counts_as_failure),
    )  # fmt: skip


def attempt_out(values: Iterable[Any]) -> Row:
    """A stored attempt (``id`` then ``ATTEMPT_COLUMNS``) as the interface returns it:
    boolean columns as ``bool`` whatever the column type."""
    row = dict(zip(_ATTEMPT_OUT, values, strict=True))
    for name in _BOOL_COLUMNS:
        row[name] = bool(row[name])
    return row


def ranked_percentiles(ranked: Iterable[Iterable[Any]]) -> dict[int, tuple[Any, Any]]:
    """(p50, p95) per bucket from (bucket, rank, count, latency) rows ranked by latency
    within their bucket; only the ranks the nearest-rank method picks need be there."""
    pairs: dict[int, list[Any]] = {}
    for bucket, rank, n, latency in ranked:
        pair = pairs.setdefault(int(bucket), [None, None])
        if rank == (n * 50 + 99) // 100:
            pair[0] = latency
        if rank == (n * 95 + 99) // 100:
            pair[1] = latency
    return {bucket: (p50, p95) for bucket, (p50, p95) in pairs.items()}


def merge_buckets(
    rows: Iterable[Iterable[Any]], percentiles: Mapping[int, Sequence[Any]] | None = None
) -> list[Row]:
    """Combine partial buckets into the ``timeseries()`` result.

    Each row is (bucket start, requests, successes, failures, latency sum, cost sum,
    prompt tokens, completion tokens); rows for the same bucket are added together.
    ``percentiles`` maps a bucket to (p50, p95) of its successful raw attempts; hourly
    rollups keep no distribution, so buckets made only of them have None there.
    """
    percentiles = percentiles or {}
    sums: dict[int, list[float]] = {}
    for bucket, *values in rows:
        acc = sums.setdefault(int(bucket), [0] * 7)
        for i, value in enumerate(values):
            acc[i] += value or 0
    return [
        {
            "ts": float(bucket),
            "requests": int(acc[0]),
            "successes": int(acc[1]),
            "failures": int(acc[2]),
            "latency_ms": acc[3] / acc[0] if acc[0] else 0.0,
            "cost": float(acc[4]),
            "prompt_tokens": int(acc[5]),
            "completion_tokens": int(acc[6]),
            "latency_p50_ms": percentiles.get(bucket, (None, None))[0],
            "latency_p95_ms": percentiles.get(bucket, (None, None))[1],
        }
        for bucket, acc in sorted(sums.items())
    ]


# ---- responses and their ratings ----


def response_values(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """A response record as stored, in ``RESPONSE_COLUMNS`` order, flags a list of strings.

    Raises ``ValueError`` for a missing required value or malformed flags, so a bad batch is
    refused before anything is written. One pass and no intermediate dict: the store writes
    one of these for every answer the gateway returns.
    """
    get = record.get
    if any(get(name) is None for name in _RESPONSE_REQUIRED):
        missing = [name for name in _RESPONSE_REQUIRED if get(name) is None]
        raise ValueError(f"response record lacks {', '.join(missing)}")
    flags = get("flags") or []
    if isinstance(flags, str | bytes) or not all(isinstance(f, str) for f in flags):
        raise ValueError(f"response flags must be a list of strings, got {flags!r}")
    auto_score = get("auto_score")
    return (
        get("response_id"), get("request_id"), get("model"), get("provider"),
        get("conversation_type"), get("route"), get("optimization"), float(record["ts"]),
        float(get("latency_ms") or 0.0), list(flags),
        None if auto_score is None else float(auto_score), get("prompt"), get("answer"),
        get("owner"), get("experiment"), get("arm"),
        None if get("cost") is None else float(record["cost"]),
    )  # fmt: skip


def response_row(record: Mapping[str, Any]) -> Row:
    """`response_values` as a dict of ``RESPONSE_COLUMNS``."""
    return dict(zip(RESPONSE_COLUMNS, response_values(record), strict=True))


def response_out(values: Iterable[Any]) -> Row:
    """A stored response (``RESPONSE_COLUMNS``) as the interface returns it: ``flags`` a
    list, decoded when the database hands back its JSON text."""
    row = dict(zip(RESPONSE_COLUMNS, values, strict=True))
    flags = row["flags"]
    row["flags"] = orjson.loads(flags) if isinstance(flags, str | bytes) else list(flags or [])
    return row


def listed_response(values: Sequence[Any]) -> Row:
    """A row of a ``responses()`` listing from ``RESPONSE_COLUMNS``, then the latest rating's
    ``RATING_COLUMNS`` and its ``id`` (all ``None`` when the response has no rating)."""
    n = len(RESPONSE_COLUMNS)
    row = response_out(values[:n])
    *rating, rating_id = values[n:]
    row["feedback"] = None if rating_id is None else dict(zip(RATING_COLUMNS, rating, strict=True))
    return row


def feedback_row(
    response_id: str,
    scores: Mapping[str, int],
    comment: str | None,
    ts: float,
    model: str,
    provider: str,
    conversation_type: str,
) -> Row:
    """A rating as stored: ``FEEDBACK_COLUMNS``, every dimension an int or ``None``."""
    unknown = sorted(set(scores) - set(FEEDBACK_SCORES))
    if unknown:
        raise ValueError(f"unknown feedback dimension(s): {', '.join(unknown)}")
    for name, value in scores.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"feedback score {name!r} must be an int, got {value!r}")
    return {
        "response_id": response_id,
        "model": model,
        "provider": provider,
        "conversation_type": conversation_type,
        **{name: scores.get(name) for name in FEEDBACK_SCORES},
        "comment": comment,
        "ts": float(ts),
    }


def feedback_out(values: Iterable[Any]) -> Row:
    """A stored rating as the interface returns it: ``id`` then ``FEEDBACK_COLUMNS``."""
    return dict(zip(_FEEDBACK_OUT, values, strict=True))


def present_scores(scores: Iterable[Any]) -> dict[str, int]:
    """The dimensions a rating has a value for, from its ``FEEDBACK_SCORES`` values."""
    return {
        name: int(value)
        for name, value in zip(FEEDBACK_SCORES, scores, strict=True)
        if value is not None
    }


def feedback_aggregate_rows(rows: Iterable[Iterable[Any]]) -> list[Row]:
    """``feedback_aggregates()`` from (model, conversation_type, count, then a (sum, count)
    pair per ``FEEDBACK_SCORES`` dimension) rows, one per group."""
    out = []
    for model, ctype, count, *pairs in rows:
        sums, ns = pairs[0::2], pairs[1::2]
        out.append(
            {
                "model": model,
                "conversation_type": ctype,
                "count": int(count),
                **{d: _mean(t, n) for d, t, n in zip(FEEDBACK_SCORES, sums, ns, strict=True)},
                "samples": {d: int(n or 0) for d, n in zip(FEEDBACK_SCORES, ns, strict=True)},
            }
        )
    return sorted(out, key=lambda row: (row["model"], row["conversation_type"]))


def evaluation_rows(
    groups: Iterable[Iterable[Any]], flag_counts: Iterable[Iterable[Any]]
) -> list[Row]:
    """``evaluation_aggregates()`` from (model, conversation_type, count, scored, score sum,
    flagged) rows and (model, conversation_type, flag, responses with it) rows."""
    flags: dict[tuple[str, str], dict[str, int]] = {}
    for model, ctype, flag, n in flag_counts:
        flags.setdefault((model, ctype), {})[flag] = int(n)
    out = [
        {
            "model": model,
            "conversation_type": ctype,
            "count": int(count),
            "scored": int(scored or 0),
            "auto_score": _mean(score_sum, scored),
            "flagged": int(flagged or 0),
            "flags": dict(sorted(flags.get((model, ctype), {}).items())),
        }
        for model, ctype, count, scored, score_sum, flagged in groups
    ]
    return sorted(out, key=lambda row: (row["model"], row["conversation_type"]))


def merge_trend(responses: Iterable[Iterable[Any]], feedback: Iterable[Iterable[Any]]) -> list[Row]:
    """``evaluation_trend()`` from (bucket, responses, scored, score sum, flagged) rows and
    (bucket, ratings, rated overall, overall sum) rows; at most one of each per bucket."""
    buckets: dict[int, Row] = {}

    def bucket(start: float) -> Row:
        return buckets.setdefault(
            int(start),
            {"ts": float(int(start)), "responses": 0, "auto_score": None, "flagged": 0,
             "feedback": 0, "overall": None},
        )  # fmt: skip

    for start, count, scored, score_sum, flagged in responses:
        row = bucket(start)
        row.update(responses=int(count), auto_score=_mean(score_sum, scored))
        row["flagged"] = int(flagged or 0)
    for start, count, rated, overall_sum in feedback:
        row = bucket(start)
        row.update(feedback=int(count), overall=_mean(overall_sum, rated))
    return [buckets[key] for key in sorted(buckets)]
