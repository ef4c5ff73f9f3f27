"""``MemoryStore``: the ``Store`` semantics in plain Python objects, for tests."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.core.types import Attempt
from gateway.storage.base import (
    ATTEMPT_COLUMNS,
    HOUR,
    Store,
    attempt_row,
    check_query,
    merge_buckets,
    nearest_rank,
    public_row,
    truncate,
)
from gateway.storage.records import (
    FEEDBACK_SCORES,
    evaluation_rows,
    feedback_aggregate_rows,
    feedback_row,
    merge_trend,
    present_scores,
    response_row,
)

__all__ = ["MemoryStore"]


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
    trip like a real store. It has no schema, so ``schema_version()`` is 0. Nothing awaits
    in the middle of a method, so each call is atomic like a store transaction.
    """

    def __init__(self) -> None:
        self._attempts: list[dict] = []
        self._hourly: dict[tuple[str, str, str, int], list[float]] = {}
        self._state: dict[tuple[str, str], tuple[bytes, float]] = {}
        self._next_id = 1
        self._responses: dict[str, dict] = {}
        self._feedback: list[dict] = []  # in id order
        self._latest: dict[str, dict] = {}  # response_id -> its latest rating
        self._next_feedback_id = 1

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
        latencies: dict[int, list[float]] = {}
        for r in self._attempts:
            if r["ok"] and _selected(r, r["ts"], model, conversation_type, since, until):
                latencies.setdefault(truncate(r["ts"], bucket_seconds), []).append(r["latency_ms"])
        percentiles = {
            bucket: (nearest_rank(sorted(v), 0.5), nearest_rank(sorted(v), 0.95))
            for bucket, v in latencies.items()
        }
        return merge_buckets(parts, percentiles)

    async def counts(self) -> dict[str, int]:
        return {
            "attempts": len(self._attempts),
            "attempt_hourly": len(self._hourly),
            "state": len(self._state),
            "responses": len(self._responses),
            "feedback": len(self._feedback),
        }

    async def schema_version(self) -> int:
        return 0

    # ---- answers and their ratings ----

    async def write_responses(self, records: Sequence[Mapping[str, Any]]) -> None:
        rows = [response_row(record) for record in records]  # validate all first
        for row in rows:
            self._responses[row["response_id"]] = row

    async def get_response(self, response_id: str) -> dict | None:
        row = self._responses.get(response_id)
        return None if row is None else _response_out(row)

    async def responses(
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
            for row in self._responses.values()
            if _selected(row, row["ts"], model, conversation_type, since, until)
        ]
        rows.sort(key=lambda row: (row["ts"], row["response_id"]), reverse=True)
        out = []
        for row in rows[offset : offset + limit]:
            item = _response_out(row)
            latest = self._latest.get(row["response_id"])
            item["feedback"] = None
            if latest is not None:
                item["feedback"] = {k: latest[k] for k in (*FEEDBACK_SCORES, "comment", "ts")}
            out.append(item)
        return out

    async def add_feedback(
        self,
        response_id: str,
        scores: Mapping[str, int],
        comment: str | None,
        ts: float,
        model: str,
        provider: str,
        conversation_type: str,
    ) -> dict[str, int] | None:
        row = feedback_row(response_id, scores, comment, ts, model, provider, conversation_type)
        previous = self._latest.get(response_id)
        row["id"] = self._next_feedback_id
        self._next_feedback_id += 1
        self._feedback.append(row)
        self._latest[response_id] = row
        return None if previous is None else present_scores(previous)

    async def feedback(
        self,
        *,
        model: str | None = None,
        conversation_type: str | None = None,
        response_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict]:
        check_query(limit, offset)
        rows = [
            row
            for row in self._feedback
            if _selected(row, row["ts"], model, conversation_type, since, until)
            and (response_id is None or row["response_id"] == response_id)
        ]
        rows.sort(key=lambda row: (row["ts"], row["id"]), reverse=True)
        return [dict(row) for row in rows[offset : offset + limit]]

    def _latest_ratings(self, *filters: Any) -> list[dict]:
        return [row for row in self._latest.values() if _selected(row, row["ts"], *filters)]

    async def feedback_aggregates(
        self,
        *,
        model: str | None = None,
        conversation_type: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict]:
        groups: dict[tuple[str, str], list[dict]] = {}
        for row in self._latest_ratings(model, conversation_type, since, until):
            groups.setdefault((row["model"], row["conversation_type"]), []).append(row)
        parts = []
        for (m, ctype), rows in groups.items():
            sums: list[Any] = []
            for name in FEEDBACK_SCORES:
                values = [row[name] for row in rows if row[name] is not None]
                sums += [sum(values) if values else None, len(values)]
            parts.append((m, ctype, len(rows), *sums))
        return feedback_aggregate_rows(parts)

    async def evaluation_aggregates(
        self,
        *,
        model: str | None = None,
        conversation_type: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict]:
        groups: dict[tuple[str, str], list[dict]] = {}
        for row in self._responses.values():
            if _selected(row, row["ts"], model, conversation_type, since, until):
                groups.setdefault((row["model"], row["conversation_type"]), []).append(row)
        parts, flag_counts = [], []
        for (m, ctype), rows in groups.items():
            parts.append((m, ctype, *_evaluation_sums(rows)))
            counts: dict[str, int] = {}
            for row in rows:
                for flag in set(row["flags"]):
                    counts[flag] = counts.get(flag, 0) + 1
            flag_counts += [(m, ctype, flag, n) for flag, n in counts.items()]
        return evaluation_rows(parts, flag_counts)

    async def evaluation_trend(
        self,
        *,
        model: str | None = None,
        conversation_type: str | None = None,
        since: float | None = None,
        until: float | None = None,
        bucket_seconds: int = 3600,
    ) -> list[dict]:
        check_query(bucket_seconds=bucket_seconds)
        size = int(bucket_seconds)
        answered: dict[int, list[dict]] = {}
        for row in self._responses.values():
            if _selected(row, row["ts"], model, conversation_type, since, until):
                answered.setdefault(truncate(row["ts"], size), []).append(row)
        rated: dict[int, list[dict]] = {}
        for row in self._latest_ratings(model, conversation_type, since, until):
            rated.setdefault(truncate(row["ts"], size), []).append(row)
        feedback_parts = []
        for start, rows in rated.items():
            overall = [row["overall"] for row in rows if row["overall"] is not None]
            feedback_parts.append(
                (start, len(rows), len(overall), sum(overall) if overall else None)
            )
        return merge_trend(
            [(start, *_evaluation_sums(rows)) for start, rows in answered.items()],
            feedback_parts,
        )

    async def prune_payloads(self, older_than: float) -> int:
        changed = 0
        for row in self._responses.values():
            if row["ts"] < older_than and (row["prompt"] is not None or row["answer"] is not None):
                row["prompt"] = row["answer"] = None
                changed += 1
        return changed


def _response_out(row: dict) -> dict:
    out = dict(row)
    out["flags"] = list(row["flags"])
    return out


def _evaluation_sums(rows: Sequence[dict]) -> tuple[int, int, float | None, int]:
    """(responses, scored, auto score sum, flagged) - what the SQL stores compute."""
    scores = [row["auto_score"] for row in rows if row["auto_score"] is not None]
    flagged = sum(1 for row in rows if row["flags"])
    return len(rows), len(scores), (sum(scores) if scores else None), flagged
