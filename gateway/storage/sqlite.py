"""The SQLite store (aiosqlite): one connection, WAL mode, explicit transactions.

The SQL sticks to what PostgreSQL also has (``ON CONFLICT ... DO UPDATE``, correlated
``MAX(id)`` sub-queries, ``SUM``/``COUNT`` partial sums) except for the JSON array
functions: ``json_each``/``json_array_length`` here become
``jsonb_array_elements_text``/``jsonb_array_length`` there. A PostgreSQL ``add_feedback``
must also serialise ratings of one response (e.g. ``pg_advisory_xact_lock`` on the id)
where SQLite's ``BEGIN IMMEDIATE`` already takes the single write lock.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from gateway.core.types import Attempt
from gateway.storage.base import Store, StoreError, check_query
from gateway.storage.migrations import MIGRATIONS
from gateway.storage.rows import (
    ATTEMPT_COLUMNS,
    FEEDBACK_COLUMNS,
    FEEDBACK_SCORES,
    HOUR,
    RATING_COLUMNS,
    RESPONSE_COLUMNS,
    attempt_out,
    attempt_row,
    evaluation_rows,
    feedback_aggregate_rows,
    feedback_out,
    feedback_row,
    listed_response,
    merge_buckets,
    merge_trend,
    present_scores,
    ranked_percentiles,
    response_out,
    response_values,
)

__all__ = ["SQLiteStore"]

PRAGMAS = (
    "PRAGMA busy_timeout=5000",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
WAL_WAIT_SECONDS = 5.0  # as long as busy_timeout lets any other statement wait
# Tables reported by counts(); add new tables here when a migration creates them.
COUNTED_TABLES = ("attempts", "attempt_hourly", "state", "responses", "feedback")

_INSERT_ATTEMPT = (
    f"INSERT INTO attempts ({', '.join(ATTEMPT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in ATTEMPT_COLUMNS)})"
)
_UPSERT_STATE = (
    "INSERT INTO state (kind, key, data, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at"
)
_ROLL_UP = f"""
    INSERT INTO attempt_hourly (model, provider, conversation_type, hour, requests, successes,
                                failures, latency_sum, cost_sum, prompt_tokens, completion_tokens)
    SELECT model, provider, conversation_type, CAST(ts / {HOUR} AS INTEGER) * {HOUR} AS hour,
           COUNT(*), SUM(ok), SUM(counts_as_failure), SUM(latency_ms), SUM(cost),
           SUM(prompt_tokens), SUM(completion_tokens)
    FROM attempts WHERE ts < ?
    GROUP BY model, provider, conversation_type, hour
    ON CONFLICT (model, provider, conversation_type, hour) DO UPDATE SET
        requests = requests + excluded.requests,
        successes = successes + excluded.successes,
        failures = failures + excluded.failures,
        latency_sum = latency_sum + excluded.latency_sum,
        cost_sum = cost_sum + excluded.cost_sum,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens
"""
_RAW_BUCKETS = """
    SELECT CAST(ts / ? AS INTEGER) * ? AS bucket, COUNT(*), SUM(ok), SUM(counts_as_failure),
           SUM(latency_ms), SUM(cost), SUM(prompt_tokens), SUM(completion_tokens)
    FROM attempts {where} GROUP BY bucket
"""
# p50 and p95 (nearest rank) of the successful attempts' latency in each bucket.
_RAW_PERCENTILES = """
    SELECT bucket, rn, n, latency_ms FROM (
        SELECT CAST(ts / ? AS INTEGER) * ? AS bucket, latency_ms,
               ROW_NUMBER() OVER (PARTITION BY CAST(ts / ? AS INTEGER) ORDER BY latency_ms) AS rn,
               COUNT(*) OVER (PARTITION BY CAST(ts / ? AS INTEGER)) AS n
        FROM attempts {where}
    ) WHERE rn = (n * 50 + 99) / 100 OR rn = (n * 95 + 99) / 100
"""
_HOURLY_BUCKETS = """
    SELECT (hour / ?) * ? AS bucket, SUM(requests), SUM(successes), SUM(failures),
           SUM(latency_sum), SUM(cost_sum), SUM(prompt_tokens), SUM(completion_tokens)
    FROM attempt_hourly {where} GROUP BY bucket
"""
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
_FLAGS = RESPONSE_COLUMNS.index("flags")


def split_statements(script: str) -> Iterator[str]:
    """The statements of an SQL script (sqlite3 executes one statement per call)."""
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                yield buffer
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        raise StoreError(f"incomplete SQL statement in migration: {buffer.strip()[:80]!r}")


def _where(
    model: str | None,
    conversation_type: str | None,
    since: float | None,
    until: float | None,
    *,
    ts: str = "ts",
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
        (f"{prefix}{ts} >= ?", since),
        (f"{prefix}{ts} < ?", until),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


_pause = asyncio.sleep  # tests replace it to let the other holder go


async def _enable_wal(db: aiosqlite.Connection) -> None:
    """Switch the file to WAL, retrying while another process holds its lock.

    Switching needs the exclusive lock, and SQLite refuses at once, without waiting out
    busy_timeout, when another connection holds a write lock (it could deadlock): two
    workers opening a new database together failed to start in 18 of 100 tries.
    """
    deadline = time.monotonic() + WAL_WAIT_SECONDS
    delay = 0.002
    while True:
        try:
            await db.execute_fetchall("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        await _pause(delay)
        delay = min(delay * 2, 0.1)


class SQLiteStore(Store):
    """A store in one SQLite file (or ``":memory:"``), brought up to date on open."""

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self.path = os.fspath(path)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        if self._db is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            db.row_factory = aiosqlite.Row
            for pragma in PRAGMAS:
                await db.execute_fetchall(pragma)  # read to the end: no read lock stays
            await _enable_wal(db)
            await self._migrate(db)
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        """Apply pending migrations, each in its own write transaction with its version bump.

        The version is read under the write lock, so processes opening the same file at
        the same time apply each migration once. Even the version table is created under it:
        outside, a statement that reads then writes fails at once, without waiting out
        busy_timeout, when another process wrote since it read.
        """
        latest = len(MIGRATIONS)
        while True:
            await db.execute("BEGIN IMMEDIATE")
            try:
                await db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
                )
                rows = await db.execute_fetchall("SELECT version FROM schema_version")
                if not rows:
                    await db.execute("INSERT INTO schema_version (version) VALUES (0)")
                version = rows[0][0] if rows else 0
                if version > latest:
                    raise StoreError(
                        f"database schema version {version} is newer than this gatewise "
                        f"({latest}); upgrade gatewise to open {self.path}"
                    )
                if version < latest:
                    for statement in split_statements(MIGRATIONS[version]):
                        await db.execute(statement)
                    await db.execute("UPDATE schema_version SET version = ?", (version + 1,))
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.rollback()
                raise
            if version >= latest:
                return

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._db is None:
            raise StoreError("the store is not open; call open() first")
        async with self._lock:
            yield self._db

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._connection() as db:
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.rollback()
                raise

    async def write_attempts(self, attempts: Sequence[Attempt]) -> None:
        rows = [attempt_row(a) for a in attempts]
        if not rows:
            return
        async with self._transaction() as db:
            await db.executemany(_INSERT_ATTEMPT, rows)

    async def save_states(self, items: Sequence[tuple[str, str, dict]]) -> None:
        now = time.time()
        rows = [(kind, key, orjson.dumps(data).decode(), now) for kind, key, data in items]
        if not rows:
            return
        async with self._transaction() as db:
            await db.executemany(_UPSERT_STATE, rows)

    async def load_states(self, kind: str) -> dict[str, dict]:
        async with self._connection() as db:
            rows = await db.execute_fetchall("SELECT key, data FROM state WHERE kind = ?", (kind,))
        return {key: orjson.loads(data) for key, data in rows}

    async def delete_state(self, kind: str, key: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM state WHERE kind = ? AND key = ?", (kind, key))

    async def prune(self, older_than: float) -> int:
        async with self._transaction() as db:
            await db.execute(_ROLL_UP, (older_than,))
            async with db.execute("DELETE FROM attempts WHERE ts < ?", (older_than,)) as cursor:
                return cursor.rowcount

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
        where, params = _where(model, conversation_type, since, until)
        sql = (
            f"SELECT id, {', '.join(ATTEMPT_COLUMNS)} FROM attempts {where} "
            "ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?"
        )
        async with self._connection() as db:
            rows = await db.execute_fetchall(sql, (*params, limit, offset))
        return [attempt_out(row) for row in rows]

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
        size = int(bucket_seconds)
        raw_where, raw_params = _where(model, conversation_type, since, until)
        hourly_where, hourly_params = _where(model, conversation_type, since, until, ts="hour")
        async with self._connection() as db:
            raw = await db.execute_fetchall(
                _RAW_BUCKETS.format(where=raw_where), (size, size, *raw_params)
            )
            hourly = await db.execute_fetchall(
                _HOURLY_BUCKETS.format(where=hourly_where), (size, size, *hourly_params)
            )
            ok_where = f"{raw_where} AND ok = 1" if raw_where else "WHERE ok = 1"
            ranked = await db.execute_fetchall(
                _RAW_PERCENTILES.format(where=ok_where), (size, size, size, size, *raw_params)
            )
        return merge_buckets([*raw, *hourly], ranked_percentiles(ranked))

    async def counts(self) -> dict[str, int]:
        async with self._connection() as db:
            result = {}
            for table in COUNTED_TABLES:
                rows = await db.execute_fetchall(f"SELECT COUNT(*) FROM {table}")
                result[table] = rows[0][0]
        return result

    async def schema_version(self) -> int:
        async with self._connection() as db:
            rows = await db.execute_fetchall("SELECT version FROM schema_version")
        return rows[0][0] if rows else 0

    async def journal_mode(self) -> str:
        """The connection's journal mode ("wal" for a file database)."""
        async with self._connection() as db:
            rows = await db.execute_fetchall("PRAGMA journal_mode")
        return rows[0][0]

    # ---- answers and their ratings (schema version 2) ----

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
        where, params = _where(model, conversation_type, since, until)
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
        where, params = _where(model, conversation_type, since, until, response_id=response_id)
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
        where, params = _where(model, conversation_type, since, until, always=[_LATEST])
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
        where, params = _where(model, conversation_type, since, until)
        joined_where, _ = _where(model, conversation_type, since, until, prefix="r.")
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
        where, params = _where(model, conversation_type, since, until)
        rated_where, rated_params = _where(model, conversation_type, since, until, always=[_LATEST])
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
