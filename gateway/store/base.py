"""The storage interface: what the gateway keeps durably, whatever the database.

Everything above this layer talks to a ``Store`` and nothing else, so the SQLite store can
be swapped for another backend (PostgreSQL next) with the same behaviour. The semantics
every implementation shares:

* Timestamps are float unix seconds. ``since`` is inclusive and ``until`` exclusive.
* ``attempts()`` returns dicts of the ``attempts`` columns (``ATTEMPT_COLUMNS`` plus the
  autoincrement ``id``), newest first (``ts`` then ``id`` descending); ``ok``, ``stream``
  and ``counts_as_failure`` come back as ``bool`` whatever the column type.
* ``prune()`` folds raw rows older than the cut-off into hourly rollups keyed by
  (model, provider, conversation_type, hour start) and deletes them, atomically; a rollup
  that already exists is added to, so pruning again (or pruning part of an hour first and
  the rest later) keeps the totals exact.
* ``timeseries()`` buckets are aligned to the unix epoch (start = ts truncated to a
  multiple of ``bucket_seconds``). Raw rows and rollups are combined: a rollup counts
  wholly in the bucket holding its hour start (for buckets shorter than an hour that is
  the bucket starting at the hour), and ``since``/``until`` select rollups by hour start.
  ``latency_ms`` is the mean over every attempt in the bucket, failures included.
  ``failures`` counts attempts with ``counts_as_failure``; ``requests`` counts attempts.
* State is opaque JSON per (kind, key); ``save_states`` upserts, last write wins.
* A batch write (``write_attempts``, ``save_states``) lands completely or not at all.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self

import orjson

from gateway.types import Attempt

__all__ = [
    "ATTEMPT_COLUMNS",
    "HOUR",
    "MemoryStore",
    "Store",
    "StoreError",
    "attempt_row",
    "check_query",
    "merge_buckets",
    "public_row",
    "truncate",
]

HOUR = 3600

# The attempts columns in insertion order (the table also has an autoincrement ``id``).
ATTEMPT_COLUMNS: tuple[str, ...] = (
    "request_id", "response_id", "attempt", "model", "provider", "conversation_type",
    "route", "optimization", "ok", "error_class", "http_status", "latency_ms", "ttft_ms",
    "prompt_tokens", "completion_tokens", "cost", "ts", "stream", "error_message",
    "counts_as_failure",
)  # fmt: skip
_BOOL_COLUMNS = ("ok", "stream", "counts_as_failure")


class StoreError(Exception):
    """The store cannot be configured, opened or used as asked."""


def attempt_row(a: Attempt) -> tuple:
    """An attempt as a tuple of column values in ``ATTEMPT_COLUMNS`` order, bools as 0/1."""
    return (
        a.request_id, a.response_id, a.attempt, a.model, a.provider, a.conversation_type,
        a.route, a.optimization, int(a.ok), a.error_class, a.http_status, a.latency_ms,
        a.ttft_ms, a.prompt_tokens, a.completion_tokens, a.cost, a.timestamp, int(a.stream),
        a.error_message, int(a.counts_as_failure),
    )  # fmt: skip


def public_row(row: Mapping[str, Any]) -> dict:
    """A stored attempt row as the interface returns it: boolean columns as ``bool``."""
    out = dict(row)
    for name in _BOOL_COLUMNS:
        out[name] = bool(out[name])
    return out


def truncate(ts: float, size: int) -> int:
    """The start of the ``size``-second bucket holding ``ts`` (what SQL's CAST does)."""
    return int(ts / size) * size


def check_query(limit: int = 0, offset: int = 0, bucket_seconds: int = 1) -> None:
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")
    if bucket_seconds <= 0:
        raise ValueError("bucket_seconds must be positive")


def merge_buckets(rows: Iterable[Sequence]) -> list[dict]:
    """Combine partial buckets into the ``timeseries()`` result.

    Each row is (bucket start, requests, successes, failures, latency sum, cost sum,
    prompt tokens, completion tokens); rows for the same bucket are added together.
    """
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
        }
        for bucket, acc in sorted(sums.items())
    ]


class Store(ABC):
    """Durable storage for attempts, their rollups and component state."""

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abstractmethod
    async def write_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Insert every attempt, in one transaction."""

    @abstractmethod
    async def save_states(self, items: Sequence[tuple[str, str, dict]]) -> None:
        """Upsert (kind, key) -> JSON-serialisable data, in one transaction."""

    @abstractmethod
    async def load_states(self, kind: str) -> dict[str, dict]: ...

    @abstractmethod
    async def delete_state(self, kind: str, key: str) -> None: ...

    @abstractmethod
    async def prune(self, older_than: float) -> int:
        """Roll raw attempts with ts < older_than into hourly rows; return rows removed."""

    @abstractmethod
    async def attempts(
        self,
        *,
        model: str | None = None,
        conversation_type: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict]: ...

    @abstractmethod
    async def timeseries(
        self,
        *,
        model: str | None = None,
        conversation_type: str | None = None,
        since: float | None = None,
        until: float | None = None,
        bucket_seconds: int = 60,
    ) -> list[dict]: ...

    @abstractmethod
    async def counts(self) -> dict[str, int]:
        """Rows per table, e.g. {"attempts": N, "attempt_hourly": M, "state": K}."""

    @abstractmethod
    async def schema_version(self) -> int: ...


def _selected(
    row: Mapping[str, Any],
    ts: float,
    model: str | None,
    conversation_type: str | None,
    since: float | None,
    until: float | None,
) -> bool:
    return (
        (model is None or row["model"] == model)
        and (conversation_type is None or row["conversation_type"] == conversation_type)
        and (since is None or ts >= since)
        and (until is None or ts < until)
    )


class MemoryStore(Store):
    """Everything in process memory, for tests of the components above the store.

    Data lives as long as the object (close/open keep it); state goes through a JSON round
    trip like a real store. It has no schema, so ``schema_version()`` is 0.
    """

    def __init__(self) -> None:
        self._attempts: list[dict] = []
        self._hourly: dict[tuple[str, str, str, int], list[float]] = {}
        self._state: dict[tuple[str, str], tuple[bytes, float]] = {}
        self._next_id = 1

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def write_attempts(self, attempts: Sequence[Attempt]) -> None:
        rows = [dict(zip(ATTEMPT_COLUMNS, attempt_row(a), strict=True)) for a in attempts]
        for row in rows:
            row["id"] = self._next_id
            self._next_id += 1
        self._attempts.extend(rows)

    async def save_states(self, items: Sequence[tuple[str, str, dict]]) -> None:
        now = time.time()
        encoded = [((kind, key), (orjson.dumps(data), now)) for kind, key, data in items]
        self._state.update(encoded)

    async def load_states(self, kind: str) -> dict[str, dict]:
        return {key: orjson.loads(blob) for (k, key), (blob, _) in self._state.items() if k == kind}

    async def delete_state(self, kind: str, key: str) -> None:
        self._state.pop((kind, key), None)

    async def prune(self, older_than: float) -> int:
        old = [row for row in self._attempts if row["ts"] < older_than]
        for row in old:
            key = (
                row["model"],
                row["provider"],
                row["conversation_type"],
                truncate(row["ts"], HOUR),
            )
            acc = self._hourly.setdefault(key, [0] * 7)
            values = (1, row["ok"], row["counts_as_failure"], row["latency_ms"], row["cost"],
                      row["prompt_tokens"], row["completion_tokens"])  # fmt: skip
            for i, value in enumerate(values):
                acc[i] += value
        self._attempts = [row for row in self._attempts if row["ts"] >= older_than]
        return len(old)

    async def attempts(
        self,
        *,
        model: str | None = None,
        conversation_type: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict]:
        check_query(limit, offset)
        rows = [
            row
            for row in self._attempts
            if _selected(row, row["ts"], model, conversation_type, since, until)
        ]
        rows.sort(key=lambda row: (row["ts"], row["id"]), reverse=True)
        return [public_row(row) for row in rows[offset : offset + limit]]

    async def timeseries(
        self,
        *,
        model: str | None = None,
        conversation_type: str | None = None,
        since: float | None = None,
        until: float | None = None,
        bucket_seconds: int = 60,
    ) -> list[dict]:
        check_query(bucket_seconds=bucket_seconds)
        parts: list[tuple] = [
            (truncate(r["ts"], bucket_seconds), 1, r["ok"], r["counts_as_failure"],
             r["latency_ms"], r["cost"], r["prompt_tokens"], r["completion_tokens"])
            for r in self._attempts
            if _selected(r, r["ts"], model, conversation_type, since, until)
        ]  # fmt: skip
        for (m, _, ctype, hour), acc in self._hourly.items():
            key = {"model": m, "conversation_type": ctype}
            if _selected(key, hour, model, conversation_type, since, until):
                parts.append((truncate(hour, bucket_seconds), *acc))
        return merge_buckets(parts)

    async def counts(self) -> dict[str, int]:
        return {
            "attempts": len(self._attempts),
            "attempt_hourly": len(self._hourly),
            "state": len(self._state),
        }

    async def schema_version(self) -> int:
        return 0
