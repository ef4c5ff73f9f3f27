"""The SQLite store (aiosqlite): one connection, WAL mode, explicit transactions.

``SQLiteStore(":memory:")`` keeps a private database in memory for as long as the store is
open (the ``memory://`` storage URL, and the tests).

The SQL sticks to what PostgreSQL also has (``ON CONFLICT ... DO UPDATE``, window
functions, correlated ``MAX(id)`` sub-queries, ``SUM``/``COUNT`` partial sums), and the
filters of every read come from ``query.where``. What the PostgreSQL store (postgres.py)
writes otherwise: bucket starts with ``floor()`` (PostgreSQL's ``CAST`` to an integer
rounds where SQLite's truncates); ``jsonb_array_elements_text``/``jsonb_array_length`` for
``json_each``/``json_array_length``; an ``add_feedback`` that serialises ratings of one
response with ``pg_advisory_xact_lock`` where ``BEGIN IMMEDIATE`` takes SQLite's single
write lock; and a ``prune`` that rolls up the rows its own ``DELETE`` returned, where here
the write lock keeps a second pruner out.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from gateway.core.types import Attempt
from gateway.storage.base import Merge, Store, StoreError
from gateway.storage.migrations import MIGRATIONS
from gateway.storage.pairs import (
    PAIR_COLUMNS,
    PairSql,
    pair_values,
    previous_winner,
    verdict_values,
)
from gateway.storage.query import Params, Query, bucket_size, where
from gateway.storage.rows import (
    ATTEMPT_COLUMNS,
    FEEDBACK_COLUMNS,
    FEEDBACK_SCORES,
    HOUR,
    RATING_COLUMNS,
    RESPONSE_COLUMNS,
    Row,
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

__all__ = ["SQLiteStore", "split_statements"]

PRAGMAS = (
    "PRAGMA busy_timeout=5000",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
WAL_WAIT_SECONDS = 5.0  # as long as busy_timeout lets any other statement wait
# Tables reported by counts(); add new tables here when a migration creates them.
COUNTED_TABLES = ("attempts", "attempt_hourly", "state", "responses", "feedback")

# ---- writes ----

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
_UPSERT_RESPONSE = (
    f"INSERT INTO responses ({', '.join(RESPONSE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in RESPONSE_COLUMNS)}) "
    "ON CONFLICT (response_id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in RESPONSE_COLUMNS[1:])
)
_FLAGS = RESPONSE_COLUMNS.index("flags")
_GET_RESPONSE = f"SELECT {', '.join(RESPONSE_COLUMNS)} FROM responses WHERE response_id = ?"
_INSERT_FEEDBACK = (
    f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in FEEDBACK_COLUMNS)})"
)
_PREVIOUS_FEEDBACK = (
    f"SELECT {', '.join(FEEDBACK_SCORES)} FROM feedback WHERE response_id = ? "
    "ORDER BY id DESC LIMIT 1"
)
_PRUNE_PAYLOADS = (
    "UPDATE responses SET prompt = NULL, answer = NULL "
    "WHERE ts < ? AND (prompt IS NOT NULL OR answer IS NOT NULL)"
)

# ---- reads: the pieces each statement is built from around its WHERE clause ----

# (requests, successes, failures, latency sum, cost sum, prompt tokens, completion tokens)
_ATTEMPT_SUMS = (
    "COUNT(*), SUM(ok), SUM(counts_as_failure), SUM(latency_ms), SUM(cost), "
    "SUM(prompt_tokens), SUM(completion_tokens)"
)
_HOURLY_SUMS = (
    "SUM(requests), SUM(successes), SUM(failures), SUM(latency_sum), SUM(cost_sum), "
    "SUM(prompt_tokens), SUM(completion_tokens)"
)
# (responses, scored, auto score sum, flagged) - the partial sums merge functions expect.
_EVALUATION_SUMS = (
    "COUNT(*), COUNT(auto_score), SUM(auto_score), "
    "SUM(CASE WHEN json_array_length(flags) > 0 THEN 1 ELSE 0 END)"
)
# The latest rating of each response is the one inserted last.
_LATEST = "id IN (SELECT MAX(id) FROM feedback GROUP BY response_id)"


def _bucket(size: int, p: Params) -> str:
    """The start of the epoch-aligned ``size``-second bucket holding ``ts``."""
    return f"CAST(ts / {p(size)} AS INTEGER) * {p(size)}"


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


async def _fetch(
    db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()
) -> list[sqlite3.Row]:
    return list(await db.execute_fetchall(sql, params))


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


_PAIRS = PairSql(lambda n: f"?{n}")  # numbered: a value may appear twice


class SQLiteStore(Store):
    """A store in one SQLite file (or ``":memory:"``), brought up to date on open."""

    OUTAGES = (*Store.OUTAGES, sqlite3.OperationalError)  # locked, disk full, unopenable
    # NOT NULL (a NaN is stored as NULL), an int past 64 bits, a type it cannot bind
    REFUSALS = (*Store.REFUSALS, sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError)

    def __init__(
        self, path: str | os.PathLike[str] = ":memory:", *, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = os.fspath(path)
        self.clock = clock  # stamps saved state (updated_at)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    def preflight(self) -> str | None:
        """The file must be writable where it is, or creatable: SQLite also writes its
        journal (-wal, -shm) beside it, so its directory must take new files too. Tried
        for real (a file opened, a temporary one made and removed): permission bits do
        not tell a read-only mount, /proc or an ACL apart, and root passes them all."""
        if self.path == ":memory:":
            return None
        path = Path(self.path).absolute()
        if path.is_dir():
            return f"storage path {self.path!r} is a directory, not a database file"
        parent = path.parent
        while not parent.exists():  # created on open: the first existing ancestor decides
            parent = parent.parent
        if not parent.is_dir():
            return f"storage path {self.path!r}: {str(parent)!r} is not a directory"
        try:
            if path.exists():
                with open(path, "r+b"):
                    pass
            with tempfile.TemporaryFile(dir=parent):
                pass
        except OSError as exc:
            where = path if path.exists() else parent
            return f"storage path {self.path!r}: cannot write in {str(where)!r}: {exc.strerror}"
        return None

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
                rows = await _fetch(db, "SELECT version FROM schema_version")
                if not rows:
                    await db.execute("INSERT INTO schema_version (version) VALUES (0)")
                version: int = rows[0][0] if rows else 0
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

    async def _select(self, sql: str, p: Params) -> list[sqlite3.Row]:
        async with self._connection() as db:
            return await _fetch(db, sql, p.values)

    # ---- attempts and state ----

    async def write_attempts(self, attempts: Sequence[Attempt], batch: str | None = None) -> None:
        rows = [attempt_row(a) for a in attempts]
        if not rows:
            return
        async with self._transaction() as db:
            if batch is not None:
                sql = "INSERT OR IGNORE INTO written_batches (batch, ts) VALUES (?, ?)"
                async with db.execute(sql, (batch, self.clock())) as cursor:
                    if cursor.rowcount == 0:
                        return  # written before: its commit's answer was what got lost
            await db.executemany(_INSERT_ATTEMPT, rows)

    async def save_states(self, items: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        now = self.clock()
        rows = [(kind, key, orjson.dumps(data).decode(), now) for kind, key, data in items]
        if not rows:
            return
        async with self._transaction() as db:
            await db.executemany(_UPSERT_STATE, rows)

    async def load_states(
        self, kind: str, *, changed_since: float | None = None
    ) -> dict[str, dict[str, Any]]:
        p = Params()
        sql = f"SELECT key, data FROM state WHERE kind = {p(kind)}"
        if changed_since is not None:
            sql += f" AND updated_at >= {p(float(changed_since))}"
        rows = await self._select(sql, p)
        return {key: orjson.loads(data) for key, data in rows}

    async def delete_state(self, kind: str, key: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM state WHERE kind = ? AND key = ?", (kind, key))

    async def fold_states(self, kind: str, moves: Mapping[str, str], merge: Merge) -> int:
        now = self.clock()
        folded = 0
        read = "SELECT data FROM state WHERE kind = ? AND key = ?"
        async with self._transaction() as db:  # BEGIN IMMEDIATE: no other writer meanwhile
            for key, into in moves.items():
                row = await _fetch(db, read, (kind, key))
                if not row:
                    continue  # folded already (by another process)
                target = await _fetch(db, read, (kind, into))
                merged = merge(
                    orjson.loads(target[0][0]) if target else None, orjson.loads(row[0][0])
                )
                await db.execute(_UPSERT_STATE, (kind, into, orjson.dumps(merged).decode(), now))
                await db.execute("DELETE FROM state WHERE kind = ? AND key = ?", (kind, key))
                folded += 1
        return folded

    async def prune(self, older_than: float) -> int:
        async with self._transaction() as db:
            await db.execute(_ROLL_UP, (older_than,))
            await db.execute("DELETE FROM written_batches WHERE ts < ?", (self.clock() - 86400,))
            async with db.execute("DELETE FROM attempts WHERE ts < ?", (older_than,)) as cursor:
                return cursor.rowcount

    async def attempts(self, query: Query) -> list[Row]:
        p = Params()
        sql = (
            f"SELECT id, {', '.join(ATTEMPT_COLUMNS)} FROM attempts {where(query, p)} "
            f"ORDER BY ts DESC, id DESC LIMIT {p(query.limit)} OFFSET {p(query.offset)}"
        )
        return [attempt_out(row) for row in await self._select(sql, p)]

    async def timeseries(self, query: Query, bucket_seconds: int = 60) -> list[Row]:
        size = bucket_size(bucket_seconds)
        raw = Params()
        raw_sql = (
            f"SELECT {_bucket(size, raw)} AS bucket, {_ATTEMPT_SUMS} "
            f"FROM attempts {where(query, raw)} GROUP BY bucket"
        )
        hourly = Params()
        hourly_sql = (
            f"SELECT (hour / {hourly(size)}) * {hourly(size)} AS bucket, {_HOURLY_SUMS} "
            f"FROM attempt_hourly {where(query, hourly, ts='hour')} GROUP BY bucket"
        )
        # p50 and p95 (nearest rank) of the successful attempts' latency in each bucket.
        ranked = Params()
        ranked_sql = f"""
            SELECT bucket, rn, n, latency_ms FROM (
                SELECT {_bucket(size, ranked)} AS bucket, latency_ms,
                       ROW_NUMBER() OVER (PARTITION BY CAST(ts / {ranked(size)} AS INTEGER)
                                          ORDER BY latency_ms) AS rn,
                       COUNT(*) OVER (PARTITION BY CAST(ts / {ranked(size)} AS INTEGER)) AS n
                FROM attempts {where(query, ranked, also=["ok = 1"])}
            ) WHERE rn = (n * 50 + 99) / 100 OR rn = (n * 95 + 99) / 100
        """
        async with self._connection() as db:
            raw_rows = await _fetch(db, raw_sql, raw.values)
            hourly_rows = await _fetch(db, hourly_sql, hourly.values)
            ranked_rows = await _fetch(db, ranked_sql, ranked.values)
        return merge_buckets([*raw_rows, *hourly_rows], ranked_percentiles(ranked_rows))

    async def counts(self) -> dict[str, int]:
        async with self._connection() as db:
            result = {}
            for table in COUNTED_TABLES:
                rows = await _fetch(db, f"SELECT COUNT(*) FROM {table}")
                result[table] = int(rows[0][0])
        return result

    async def schema_version(self) -> int:
        async with self._connection() as db:
            rows = await _fetch(db, "SELECT version FROM schema_version")
        return int(rows[0][0]) if rows else 0

    async def journal_mode(self) -> str:
        """The connection's journal mode ("wal" for a file database)."""
        async with self._connection() as db:
            rows = await _fetch(db, "PRAGMA journal_mode")
        return str(rows[0][0])

    # ---- answers and their ratings (schema version 2) ----

    async def write_responses(self, records: Sequence[Mapping[str, Any]]) -> None:
        rows = []
        for record in records:
            values = response_values(record)  # validates: a bad record writes nothing
            flags = orjson.dumps(values[_FLAGS]).decode()
            rows.append((*values[:_FLAGS], flags, *values[_FLAGS + 1 :]))
        if not rows:
            return
        async with self._transaction() as db:
            await db.executemany(_UPSERT_RESPONSE, rows)

    async def get_response(self, response_id: str) -> Row | None:
        async with self._connection() as db:
            rows = await _fetch(db, _GET_RESPONSE, (response_id,))
        return response_out(rows[0]) if rows else None

    async def responses(self, query: Query) -> list[Row]:
        p = Params()
        sql = f"""
            SELECT {", ".join(f"r.{name}" for name in RESPONSE_COLUMNS)},
                   {", ".join(f"f.{name}" for name in RATING_COLUMNS)}, f.id
            FROM (
                SELECT {", ".join(RESPONSE_COLUMNS)} FROM responses {where(query, p, by_owner=True)}
                ORDER BY ts DESC, response_id DESC LIMIT {p(query.limit)} OFFSET {p(query.offset)}
            ) AS r
            LEFT JOIN feedback AS f ON f.id = (
                SELECT MAX(g.id) FROM feedback AS g WHERE g.response_id = r.response_id
            )
            ORDER BY r.ts DESC, r.response_id DESC
        """
        return [listed_response(tuple(row)) for row in await self._select(sql, p)]

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
            previous = await _fetch(db, _PREVIOUS_FEEDBACK, (response_id,))
            await db.execute(_INSERT_FEEDBACK, tuple(row[name] for name in FEEDBACK_COLUMNS))
        return present_scores(previous[0]) if previous else None

    async def feedback(self, query: Query) -> list[Row]:
        p = Params()
        sql = (
            f"SELECT id, {', '.join(FEEDBACK_COLUMNS)} FROM feedback "
            f"{where(query, p, by_response=True)} "
            f"ORDER BY ts DESC, id DESC LIMIT {p(query.limit)} OFFSET {p(query.offset)}"
        )
        return [feedback_out(row) for row in await self._select(sql, p)]

    async def feedback_aggregates(self, query: Query) -> list[Row]:
        p = Params()
        pairs = ", ".join(f"SUM({name}), COUNT({name})" for name in FEEDBACK_SCORES)
        sql = (
            f"SELECT model, conversation_type, COUNT(*), {pairs} FROM feedback "
            f"{where(query, p, also=[_LATEST])} GROUP BY model, conversation_type"
        )
        return feedback_aggregate_rows(await self._select(sql, p))

    async def evaluation_aggregates(self, query: Query) -> list[Row]:
        groups = Params()
        groups_sql = (
            f"SELECT model, conversation_type, {_EVALUATION_SUMS} FROM responses "
            f"{where(query, groups)} GROUP BY model, conversation_type"
        )
        flags = Params()
        flags_sql = (
            "SELECT r.model, r.conversation_type, j.value, COUNT(DISTINCT r.response_id) "
            f"FROM responses AS r, json_each(r.flags) AS j {where(query, flags, prefix='r.')} "
            "GROUP BY r.model, r.conversation_type, j.value"
        )
        async with self._connection() as db:
            group_rows = await _fetch(db, groups_sql, groups.values)
            flag_rows = await _fetch(db, flags_sql, flags.values)
        return evaluation_rows(group_rows, flag_rows)

    async def evaluation_trend(self, query: Query, bucket_seconds: int = 3600) -> list[Row]:
        size = bucket_size(bucket_seconds)
        answered = Params()
        answered_sql = (
            f"SELECT {_bucket(size, answered)} AS bucket, {_EVALUATION_SUMS} FROM responses "
            f"{where(query, answered)} GROUP BY bucket"
        )
        rated = Params()
        rated_sql = (
            f"SELECT {_bucket(size, rated)} AS bucket, COUNT(*), COUNT(overall), SUM(overall) "
            f"FROM feedback {where(query, rated, also=[_LATEST])} GROUP BY bucket"
        )
        async with self._connection() as db:
            answered_rows = await _fetch(db, answered_sql, answered.values)
            rated_rows = await _fetch(db, rated_sql, rated.values)
        return merge_trend(answered_rows, rated_rows)

    async def prune_payloads(self, older_than: float) -> int:
        async with self._transaction() as db:
            await db.execute(_PAIRS.prune_texts, (older_than,))
            async with db.execute(_PRUNE_PAYLOADS, (older_than,)) as cursor:
                return cursor.rowcount

    # ---- same-prompt pairs and pairwise verdicts (schema version 5) ----

    async def write_pairs(self, pairs: Sequence[Mapping[str, Any]]) -> None:
        rows = [pair_values(pair) for pair in pairs]
        if not rows:
            return
        async with self._transaction() as db:
            await db.executemany(_PAIRS.upsert_pair, rows)

    async def pair_of(self, a_response_id: str, b_response_id: str) -> Row | None:
        async with self._connection() as db:
            rows = await _fetch(db, _PAIRS.pair_of, (a_response_id, b_response_id))
        return dict(zip(PAIR_COLUMNS, rows[0], strict=True)) if rows else None

    async def next_pair(self, owner: str | None, *, everyone: bool, offset: int = 0) -> Row | None:
        sql, values = _PAIRS.next_pair_sql(owner, everyone, offset)
        async with self._connection() as db:
            rows = await _fetch(db, sql, values)
        return dict(zip(PAIR_COLUMNS, rows[0], strict=True)) if rows else None

    async def add_verdict(self, verdict: Mapping[str, Any]) -> str | None:
        values = verdict_values(verdict)
        async with self._transaction() as db:
            previous = await _fetch(db, _PAIRS.previous_verdict, (values[0],))
            await db.execute(_PAIRS.upsert_verdict, values)
            if verdict.get("pair_id") is not None:
                await db.execute(_PAIRS.judged, (verdict["ts"], verdict["pair_id"]))
        return previous_winner(tuple(previous[0]) if previous else None, values[1])

    async def verdict_tallies(self, route: str | None = None) -> list[Row]:
        sql, values = _PAIRS.tallies_sql(route)
        async with self._connection() as db:
            rows = await _fetch(db, sql, values)
        return [{"model_a": a, "model_b": b, "winner": w, "count": int(n)} for a, b, w, n in rows]

    async def pair_counts(self) -> list[Row]:
        async with self._connection() as db:
            rows = await _fetch(db, _PAIRS.pair_counts)
        return [{"comparison": c, "pairs": int(n), "judged": int(j)} for c, n, j in rows]
