"""Responses and their ratings: the columns, and the row shaping every store shares.

Each store fetches partial sums (SQL ``SUM``/``COUNT`` or plain Python) and hands them to
these functions, so means, ``None`` for empty groups, ordering and shapes are identical
whatever the backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "FEEDBACK_COLUMNS",
    "FEEDBACK_SCORES",
    "RESPONSE_COLUMNS",
    "evaluation_rows",
    "feedback_aggregate_rows",
    "feedback_row",
    "merge_trend",
    "present_scores",
    "response_row",
    "response_values",
]

# The rating dimensions (1-5 each, any may be missing) and the responses/feedback columns.
FEEDBACK_SCORES: tuple[str, ...] = (
    "relevance", "accuracy", "helpfulness", "creativity", "overall",
)  # fmt: skip
RESPONSE_COLUMNS: tuple[str, ...] = (
    "response_id", "request_id", "model", "provider", "conversation_type", "route",
    "optimization", "ts", "latency_ms", "flags", "auto_score", "prompt", "answer",
)  # fmt: skip
_RESPONSE_REQUIRED = ("response_id", "request_id", "model", "provider", "conversation_type", "ts")
# In insertion order; the table also has an autoincrement ``id``.
FEEDBACK_COLUMNS: tuple[str, ...] = (
    "response_id", "model", "provider", "conversation_type", *FEEDBACK_SCORES, "comment", "ts",
)  # fmt: skip


def _mean(total: float | None, n: int | None) -> float | None:
    return float(total) / n if n else None


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
        get("conversation_type"), get("route"), get("optimization"), float(get("ts")),
        float(get("latency_ms") or 0.0), list(flags),
        None if auto_score is None else float(auto_score), get("prompt"), get("answer"),
    )  # fmt: skip


def response_row(record: Mapping[str, Any]) -> dict:
    """`response_values` as a dict of ``RESPONSE_COLUMNS``."""
    return dict(zip(RESPONSE_COLUMNS, response_values(record), strict=True))


def feedback_row(
    response_id: str,
    scores: Mapping[str, int],
    comment: str | None,
    ts: float,
    model: str,
    provider: str,
    conversation_type: str,
) -> dict:
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


def present_scores(row: Mapping[str, Any]) -> dict[str, int]:
    """The dimensions a rating row has a value for."""
    return {name: int(row[name]) for name in FEEDBACK_SCORES if row[name] is not None}


def feedback_aggregate_rows(rows: Iterable[Sequence]) -> list[dict]:
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


def evaluation_rows(groups: Iterable[Sequence], flag_counts: Iterable[Sequence]) -> list[dict]:
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


def merge_trend(responses: Iterable[Sequence], feedback: Iterable[Sequence]) -> list[dict]:
    """``evaluation_trend()`` from (bucket, responses, scored, score sum, flagged) rows and
    (bucket, ratings, rated overall, overall sum) rows; at most one of each per bucket."""
    buckets: dict[int, dict] = {}

    def bucket(start: float) -> dict:
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
