"""The responses/feedback half of ``SQLiteStore`` (schema version 2).

``SQLiteFeedback`` is mixed into ``SQLiteStore`` and runs on its connection, lock and
transactions. The SQL sticks to what PostgreSQL also has (``ON CONFLICT ... DO UPDATE``,
correlated ``MAX(id)`` sub-queries, ``SUM``/``COUNT`` partial sums) except for the JSON
array functions: ``json_each``/``json_array_length`` here become
``jsonb_array_elements_text``/``jsonb_array_length`` there. A PostgreSQL ``add_feedback``
must also serialise ratings of one response (e.g. ``pg_advisory_xact_lock`` on the id)
where SQLite's ``BEGIN IMMEDIATE`` already takes the single write lock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiosqlite
import orjson

from gateway.storage.base import check_query
from gateway.storage.rows import (
    FEEDBACK_COLUMNS,
    FEEDBACK_SCORES,
    RATING_COLUMNS,
    RESPONSE_COLUMNS,
    evaluation_rows,
    feedback_aggregate_rows,
    feedback_out,
    feedback_row,
    listed_response,
    merge_trend,
    present_scores,
    response_out,
    response_values,
)

__all__ = ["SQLiteFeedback"]

_UPSERT_RESPONSE = (
    f"INSERT INTO responses ({', '.join(RESPONSE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in RESPONSE_COLUMNS)}) "
    "ON CONFLICT (response_id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in RESPONSE_COLUMNS[1:])
)
_INSERT_FEEDBACK = (
    f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in FEEDBACK_COLUMNS)})"
)
_PREVIOUS_FEEDBACK = (
    f"SELECT {', '.join(FEEDBACK_SCORES)} FROM feedback WHERE response_id = ? "
    "ORDER BY id DESC LIMIT 1"
)
# The latest rating of each response is the one inserted last.
_LATEST = "id IN (SELECT MAX(id) FROM feedback GROUP BY response_id)"
_RESPONSES_PAGE = """
    SELECT {response_columns}, {feedback_columns}, f.id
    FROM (
        SELECT {columns} FROM responses {where}
        ORDER BY ts DESC, response_id DESC LIMIT ? OFFSET ?
    ) AS r
    LEFT JOIN feedback AS f ON f.id = (
        SELECT MAX(g.id) FROM feedback AS g WHERE g.response_id = r.response_id
    )
    ORDER BY r.ts DESC, r.response_id DESC
""".format(
    response_columns=", ".join(f"r.{name}" for name in RESPONSE_COLUMNS),
    feedback_columns=", ".join(f"f.{name}" for name in RATING_COLUMNS),
    columns=", ".join(RESPONSE_COLUMNS),
    where="{where}",
)
# (responses, scored, auto score sum, flagged) - the partial sums merge functions expect.
_EVALUATION_SUMS = (
    "COUNT(*), COUNT(auto_score), SUM(auto_score), "
    "SUM(CASE WHEN json_array_length(flags) > 0 THEN 1 ELSE 0 END)"
)
_BUCKET = "CAST(ts / ? AS INTEGER) * ? AS bucket"


def _filters(
    model: str | None,
    conversation_type: str | None,
    since: float | None,
    until: float | None,
    *,
    prefix: str = "",
    response_id: str | None = None,
    always: Sequence[str] = (),
) -> tuple[str, list]:
    clauses = list(always)
    params: list = []
    for clause, value in (
        (f"{prefix}model = ?", model),
        (f"{prefix}conversation_type = ?", conversation_type),
        (f"{prefix}response_id = ?", response_id),
        (f"{prefix}ts >= ?", since),
        (f"{prefix}ts < ?", until),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


_FLAGS = RESPONSE_COLUMNS.index("flags")


class SQLiteFeedback:
    """Responses and ratings on the host store's connection (see the module docstring)."""

    # Provided by SQLiteStore.
    def _connection(self) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        raise NotImplementedError

    def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        raise NotImplementedError

    async def write_responses(self, records: Sequence[Mapping[str, Any]]) -> None:
        rows = []
        for record in records:
            values = response_values(record)
            flags = values[_FLAGS]
            rows.append((*values[:_FLAGS], orjson.dumps(flags).decode() if flags else "[]",
                         *values[_FLAGS + 1 :]))  # fmt: skip
        if not rows:
            return
        async with self._transaction() as db:
            await db.executemany(_UPSERT_RESPONSE, rows)

    async def get_response(self, response_id: str) -> dict | None:
        sql = f"SELECT {', '.join(RESPONSE_COLUMNS)} FROM responses WHERE response_id = ?"
        async with self._connection() as db:
            rows = await db.execute_fetchall(sql, (response_id,))
        return response_out(tuple(rows[0])) if rows else None

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
        where, params = _filters(model, conversation_type, since, until)
        async with self._connection() as db:
            rows = await db.execute_fetchall(
                _RESPONSES_PAGE.format(where=where), (*params, limit, offset)
            )
        return [listed_response(tuple(row)) for row in rows]

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
        async with self._transaction() as db:  # one write lock around the read and the insert
            previous = await db.execute_fetchall(_PREVIOUS_FEEDBACK, (response_id,))
            await db.execute(_INSERT_FEEDBACK, tuple(row[name] for name in FEEDBACK_COLUMNS))
        return present_scores(previous[0]) if previous else None

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
        where, params = _filters(model, conversation_type, since, until, response_id=response_id)
        sql = (
            f"SELECT id, {', '.join(FEEDBACK_COLUMNS)} FROM feedback {where} "
            "ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?"
        )
        async with self._connection() as db:
            rows = await db.execute_fetchall(sql, (*params, limit, offset))
        return [feedback_out(row) for row in rows]

    async def feedback_aggregates(
        self,
        *,
        model: str | None = None,
        conversation_type: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict]:
        where, params = _filters(model, conversation_type, since, until, always=[_LATEST])
        pairs = ", ".join(f"SUM({name}), COUNT({name})" for name in FEEDBACK_SCORES)
        sql = (
            f"SELECT model, conversation_type, COUNT(*), {pairs} FROM feedback {where} "
            "GROUP BY model, conversation_type"
        )
        async with self._connection() as db:
            rows = await db.execute_fetchall(sql, params)
        return feedback_aggregate_rows(rows)

    async def evaluation_aggregates(
        self,
        *,
        model: str | None = None,
        conversation_type: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict]:
        where, params = _filters(model, conversation_type, since, until)
        joined_where, _ = _filters(model, conversation_type, since, until, prefix="r.")
        groups_sql = (
            f"SELECT model, conversation_type, {_EVALUATION_SUMS} FROM responses {where} "
            "GROUP BY model, conversation_type"
        )
        flags_sql = (
            "SELECT r.model, r.conversation_type, j.value, COUNT(DISTINCT r.response_id) "
            f"FROM responses AS r, json_each(r.flags) AS j {joined_where} "
            "GROUP BY r.model, r.conversation_type, j.value"
        )
        async with self._connection() as db:
            groups = await db.execute_fetchall(groups_sql, params)
            flag_counts = await db.execute_fetchall(flags_sql, params)
        return evaluation_rows(groups, flag_counts)

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
        where, params = _filters(model, conversation_type, since, until)
        rated_where, rated_params = _filters(
            model, conversation_type, since, until, always=[_LATEST]
        )
        answered_sql = (
            f"SELECT {_BUCKET}, {_EVALUATION_SUMS} FROM responses {where} GROUP BY bucket"
        )
        rated_sql = (
            f"SELECT {_BUCKET}, COUNT(*), COUNT(overall), SUM(overall) FROM feedback "
            f"{rated_where} GROUP BY bucket"
        )
        async with self._connection() as db:
            answered = await db.execute_fetchall(answered_sql, (size, size, *params))
            rated = await db.execute_fetchall(rated_sql, (size, size, *rated_params))
        return merge_trend(answered, rated)

    async def prune_payloads(self, older_than: float) -> int:
        sql = (
            "UPDATE responses SET prompt = NULL, answer = NULL "
            "WHERE ts < ? AND (prompt IS NOT NULL OR answer IS NOT NULL)"
        )
        async with self._transaction() as db, db.execute(sql, (older_than,)) as cursor:
            return cursor.rowcount
