"""The PostgreSQL store (asyncpg): a connection pool, one transaction per write.

It keeps base.py's semantics to the letter; the rows are shaped by rows.py and the filters
written by query.py, as in sqlite.py. What PostgreSQL needs done otherwise:

* Schema: its own migration list (migrations_postgres.py, version N = SQLite's version N),
  applied at open under a session advisory lock on the schema, so replicas opening one
  fresh database together all come up and each script runs once.
* Batches: attempts go in with ``COPY`` (``copy_records_to_table``), upserts (responses,
  state) with ``executemany``, each batch in one transaction. For 1,000 attempts COPY took
  14 ms against 28 ms for ``executemany`` and 27 ms for one ``INSERT ... SELECT FROM
  unnest(...)``, with 1.9 ms of client CPU against 4.4 and 11 (bench/store_batches.py);
  COPY cannot upsert, and for 1,000 responses ``executemany`` took the 38 ms ``unnest``
  took, with 10 ms of CPU against 16.
* ``add_feedback`` serialises the ratings of one response with ``pg_advisory_xact_lock``
  on a hash of its id: under READ COMMITTED the read after the lock sees the rating that
  the previous holder committed, so every rating has exactly one predecessor.
* ``prune`` deletes old attempts and rolls up the deleted rows in one statement
  (``DELETE ... RETURNING`` feeding the ``INSERT``): replicas pruning at the same moment
  each roll up only the rows they deleted, so no attempt is counted twice; and they take
  turns (an advisory lock on the schema), so their deletes cannot deadlock.
* Batches of upserts are written in key order: replicas saving the same states lock
  their rows in the same order and never deadlock.
* Reads made of several statements (time series, aggregates) run in one read-only
  REPEATABLE READ transaction: one snapshot, as SQLite's single connection gives.
* Text cannot hold NUL. A batch PostgreSQL refuses for one is written again with U+FFFD in
  its place, so an odd prompt or upstream message never blocks the writer's queue.
* The url may hold a password: it is kept private, and errors name the scheme and host
  only (``describe_url``).
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, unquote, urlsplit

import asyncpg
import orjson

from gateway.core.types import Attempt
from gateway.storage.base import Merge, Store, StoreError
from gateway.storage.migrations_postgres import MIGRATIONS
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

__all__ = [
    "FEEDBACK_LOCK",
    "FOLD_LOCK",
    "MIGRATION_LOCK",
    "PRUNE_LOCK",
    "VERDICT_LOCK",
    "PostgresStore",
    "describe_url",
    "lock_key",
]

Connection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"

# Tables reported by counts(); add new tables here when a migration creates them.
COUNTED_TABLES = ("attempts", "attempt_hourly", "state", "responses", "feedback")
# Advisory locks take two int4 keys: the first names what is locked, the second which one.
MIGRATION_LOCK = 0x67770001  # (this, lock_key(schema)): migrating one schema
FEEDBACK_LOCK = 0x67770002  # (this, lock_key(response_id)): rating one response
PRUNE_LOCK = 0x67770003  # (this, lock_key(schema)): pruning one schema
FOLD_LOCK = 0x67770004  # (this, lock_key(schema)): folding state rows in one schema
VERDICT_LOCK = 0x67770005  # (this, lock_key(pair_key)): judging one pair of answers
# PostgreSQL's refusals of a NUL character (22021) or its \u0000 escape (22P05).
_NUL_REFUSED = (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError)
_HOST = r"(?:[\w.-]+|\[[\w:.%]+\])(?::\d+)?"  # name, IPv4 or [IPv6], and a port
_HOSTS = re.compile(f"{_HOST}(?:,{_HOST})*")


def lock_key(text: str) -> int:
    """A stable int4 for ``text`` (CRC-32 as a signed integer): the same in every process,
    unlike ``hash()``. Two texts sharing one only wait for each other."""
    value = zlib.crc32(text.encode("utf-8", "surrogatepass"))
    return value - (1 << 32) if value >= 1 << 31 else value


def describe_url(url: str) -> str:
    """The scheme and host(s) of a PostgreSQL url, for messages: never its user, password,
    database or options.

    The user and password end at the last ``@`` before the query, whatever they hold (a
    password may hold an unescaped ``/``). What is left must look like hosts and ports, or
    it is not shown: an ``@`` only after a ``?`` may mean a password holding a ``?``.
    """
    scheme, _, rest = url.partition("://")
    before_query = rest.split("?", 1)[0]
    hosts = before_query.rpartition("@")[2].split("/", 1)[0] or "localhost"
    if ("@" in rest and "@" not in before_query) or not _HOSTS.fullmatch(hosts):
        hosts = "(host not shown)"
    return f"{scheme.lower()}://{hosts}"


def _secrets(url: str) -> list[str]:
    """What must not appear in a message about ``url``: the url and its passwords."""
    found = [url]
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    if ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    found += [value for name, value in parse_qsl(parts.query) if name == "password"]
    found += [unquote(secret) for secret in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


def _redact(message: str, url: str) -> str:
    for secret in _secrets(url):
        message = message.replace(secret, "***")
    return message


def _without_nul(row: Sequence[Any]) -> tuple[Any, ...]:
    """``row`` with every NUL in its strings (and lists of strings) replaced by U+FFFD."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("\x00", "\ufffd")
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    return tuple(clean(value) for value in row)


def _numbered() -> Params:
    return Params(lambda n: f"${n}")


# ---- writes ----

_UPSERT_STATE = (
    "INSERT INTO state (kind, key, data, updated_at) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at"
)
# Delete and roll up in one statement: the rows a concurrent prune already deleted are
# not seen here, so each attempt lands in exactly one rollup.
_PRUNE = f"""
    WITH gone AS (
        DELETE FROM attempts WHERE ts < $1
        RETURNING model, provider, conversation_type, ts, ok, counts_as_failure, latency_ms,
                  cost, prompt_tokens, completion_tokens
    ), rolled AS (
        INSERT INTO attempt_hourly AS h (model, provider, conversation_type, hour, requests,
                                         successes, failures, latency_sum, cost_sum,
                                         prompt_tokens, completion_tokens)
        SELECT model, provider, conversation_type,
               (floor(ts / {HOUR}) * {HOUR})::bigint AS hour, COUNT(*),
               COUNT(*) FILTER (WHERE ok), COUNT(*) FILTER (WHERE counts_as_failure),
               SUM(latency_ms), SUM(cost), SUM(prompt_tokens), SUM(completion_tokens)
        FROM gone
        GROUP BY model, provider, conversation_type, hour
        ON CONFLICT (model, provider, conversation_type, hour) DO UPDATE SET
            requests = h.requests + excluded.requests,
            successes = h.successes + excluded.successes,
            failures = h.failures + excluded.failures,
            latency_sum = h.latency_sum + excluded.latency_sum,
            cost_sum = h.cost_sum + excluded.cost_sum,
            prompt_tokens = h.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = h.completion_tokens + excluded.completion_tokens
    )
    SELECT COUNT(*) FROM gone
"""
_UPSERT_RESPONSE = (
    f"INSERT INTO responses ({', '.join(RESPONSE_COLUMNS)}) "
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(RESPONSE_COLUMNS) + 1))}) "
    "ON CONFLICT (response_id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in RESPONSE_COLUMNS[1:])
)
_FLAGS = RESPONSE_COLUMNS.index("flags")
_GET_RESPONSE = f"SELECT {', '.join(RESPONSE_COLUMNS)} FROM responses WHERE response_id = $1"
_INSERT_FEEDBACK = (
    f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}) "
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(FEEDBACK_COLUMNS) + 1))})"
)
_PREVIOUS_FEEDBACK = (
    f"SELECT {', '.join(FEEDBACK_SCORES)} FROM feedback WHERE response_id = $1 "
    "ORDER BY id DESC LIMIT 1"
)
_PRUNE_PAYLOADS = (
    "UPDATE responses SET prompt = NULL, answer = NULL "
    "WHERE ts < $1 AND (prompt IS NOT NULL OR answer IS NOT NULL)"
)

# ---- reads: the pieces each statement is built from around its WHERE clause ----

# (requests, successes, failures, latency sum, cost sum, prompt tokens, completion tokens);
# SUM of a bigint is numeric: cast back, so no Decimal reaches the merge functions.
_ATTEMPT_SUMS = (
    "COUNT(*), COUNT(*) FILTER (WHERE ok), COUNT(*) FILTER (WHERE counts_as_failure), "
    "SUM(latency_ms), SUM(cost), SUM(prompt_tokens)::bigint, SUM(completion_tokens)::bigint"
)
_HOURLY_SUMS = (
    "SUM(requests)::bigint, SUM(successes)::bigint, SUM(failures)::bigint, SUM(latency_sum), "
    "SUM(cost_sum), SUM(prompt_tokens)::bigint, SUM(completion_tokens)::bigint"
)
# (responses, scored, auto score sum, flagged) - the partial sums merge functions expect.
_EVALUATION_SUMS = (
    "COUNT(*), COUNT(auto_score), SUM(auto_score), "
    "COUNT(*) FILTER (WHERE jsonb_array_length(flags) > 0)"
)
# The latest rating of each response is the one inserted last.
_LATEST = "id IN (SELECT MAX(id) FROM feedback GROUP BY response_id)"
# attempt_hourly.hour is an integer: compared as float8, a fractional since/until keeps its
# fraction (asyncpg would truncate it to the column's type).
_HOUR = "hour::float8"


def _bucket(size: int, p: Params) -> str:
    """The start of the epoch-aligned ``size``-second bucket holding ``ts`` (``floor``:
    a cast to an integer would round)."""
    return f"floor(ts / {p(size)}) * {p(size)}"


_PAIRS = PairSql(lambda n: f"${n}")


class PostgresStore(Store):
    """A store in one PostgreSQL schema (the connection's ``search_path``), reached
    through a pool of ``pool_size`` connections, brought up to date on open.

    ``server_settings`` are sent when each connection starts (``{"search_path": "gw"}``
    puts the tables in schema ``gw``); settings in the url's query do the same.
    """

    OUTAGES = (
        *Store.OUTAGES,
        asyncpg.PostgresConnectionError,  # refused, dropped, the server shutting down
        asyncpg.InterfaceError,  # a connection closed under the pool
        asyncpg.CannotConnectNowError,
    )
    # a value out of a column's range or type, a constraint (asyncpg.DataError is neither
    # an outage nor a ValueError)
    REFUSALS = (*Store.REFUSALS, asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        server_settings: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if pool_size < 1:
            raise StoreError(f"pool_size must be at least 1, got {pool_size}")
        self._url = url  # may hold a password: never shown
        self.location = describe_url(url)
        self.pool_size = pool_size
        self.server_settings = dict(server_settings or {})
        self.clock = clock
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._schema_key = 0  # lock_key of the schema, known once open

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r}, pool_size={self.pool_size})"

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self.pool_size,
                server_settings=self.server_settings or None,
            )
        except Exception as exc:  # the driver's words may quote the url: redact, unchain
            detail = _redact(f"{type(exc).__name__}: {exc}", self._url)
            raise StoreError(f"cannot connect to PostgreSQL at {self.location}: {detail}") from None
        try:
            await self._migrate(pool)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _migrate(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        """Apply pending migrations, each in its own transaction with its version bump,
        holding a session advisory lock on the schema throughout: a replica that opens
        the same schema meanwhile waits, then finds it up to date. The lock goes with the
        session if this one dies (and asyncpg unlocks all when it returns the connection
        to the pool)."""
        async with pool.acquire() as conn:
            schema = await conn.fetchval("SELECT current_schema()")
            if schema is None:
                raise StoreError(
                    f"no schema to create the tables in at {self.location}: "
                    "the search_path names none that exists"
                )
            self._schema_key = key = lock_key(schema)
            await conn.execute("SELECT pg_advisory_lock($1, $2)", MIGRATION_LOCK, key)
            try:
                await self._apply_migrations(conn)
            finally:
                if not conn.is_closed():  # a lost session took its lock along
                    await conn.execute("SELECT pg_advisory_unlock($1, $2)", MIGRATION_LOCK, key)

    async def _apply_migrations(self, conn: Connection) -> None:
        latest = len(MIGRATIONS)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        while True:
            async with conn.transaction():
                version = await conn.fetchval("SELECT version FROM schema_version")
                if version is None:
                    await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
                    version = 0
                if version > latest:
                    raise StoreError(
                        f"database schema version {version} is newer than this gatewise "
                        f"({latest}); upgrade gatewise to open {self.location}"
                    )
                if version == latest:
                    return
                await conn.execute(MIGRATIONS[version])  # several statements: simple query
                await conn.execute("UPDATE schema_version SET version = $1", version + 1)

    def _ready(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise StoreError("the store is not open; call open() first")
        return self._pool

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        async with self._ready().acquire() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[Connection]:
        """A read-only transaction seeing one snapshot, for reads of several statements."""
        async with (
            self._ready().acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield conn

    async def _select(self, sql: str, p: Params) -> list[asyncpg.Record]:
        return await self._ready().fetch(sql, *_without_nul(p.values))

    async def _write(
        self,
        rows: list[tuple[Any, ...]],
        write: Callable[[Connection, list[tuple[Any, ...]]], Awaitable[None]],
    ) -> None:
        """Write ``rows`` in one transaction; refused for a NUL, write them again without."""
        if not rows:
            return
        try:
            async with self._transaction() as conn:
                await write(conn, rows)
        except _NUL_REFUSED:
            clean = [_without_nul(row) for row in rows]
            if clean == rows:
                raise
            async with self._transaction() as conn:
                await write(conn, clean)

    # ---- attempts and state ----

    async def write_attempts(self, attempts: Sequence[Attempt], batch: str | None = None) -> None:
        async def copy(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
            if batch is not None:
                status = await conn.execute(
                    "INSERT INTO written_batches (batch, ts) VALUES ($1, $2) "
                    "ON CONFLICT (batch) DO NOTHING",
                    batch,
                    self.clock(),
                )
                if status == "INSERT 0 0":
                    return  # written before: its commit's answer was what got lost
            await conn.copy_records_to_table("attempts", records=rows, columns=ATTEMPT_COLUMNS)

        await self._write([attempt_row(a) for a in attempts], copy)

    async def save_states(self, items: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        now = self.clock()
        rows = [(kind, key, orjson.dumps(data).decode(), now) for kind, key, data in items]
        rows.sort(key=lambda row: (row[0], row[1]))  # stable: the last of a key still wins

        async def upsert(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
            await conn.executemany(_UPSERT_STATE, rows)

        await self._write(rows, upsert)

    async def load_states(
        self, kind: str, *, changed_since: float | None = None
    ) -> dict[str, dict[str, Any]]:
        p = _numbered()
        sql = f"SELECT key, data FROM state WHERE kind = {p(kind)}"
        if changed_since is not None:
            sql += f" AND updated_at >= {p(float(changed_since))}"
        return {key: orjson.loads(data) for key, data in await self._select(sql, p)}

    async def delete_state(self, kind: str, key: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "DELETE FROM state WHERE kind = $1 AND key = $2", *_without_nul((kind, key))
            )

    async def fold_states(self, kind: str, moves: Mapping[str, str], merge: Merge) -> int:
        now = float(self.clock())
        folded = 0
        read = "SELECT data FROM state WHERE kind = $1 AND key = $2"
        async with self._transaction() as conn:
            # Folds run one at a time: two folding into the same new row would both see
            # none and the second's insert would replace the first's.
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", FOLD_LOCK, self._schema_key)
            for key, into in moves.items():
                data = await conn.fetchval(read, *_without_nul((kind, key)))
                if data is None:
                    continue  # folded already (by another process)
                target = await conn.fetchval(read, *_without_nul((kind, into)))
                merged = merge(
                    orjson.loads(target) if target is not None else None, orjson.loads(data)
                )
                row = _without_nul((kind, into, orjson.dumps(merged).decode(), now))
                await conn.execute(_UPSERT_STATE, *row)
                await conn.execute(
                    "DELETE FROM state WHERE kind = $1 AND key = $2", *_without_nul((kind, key))
                )
                folded += 1
        return folded

    async def prune(self, older_than: float) -> int:
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", PRUNE_LOCK, self._schema_key)
            removed = await conn.fetchval(_PRUNE, float(older_than))
            await conn.execute(
                "DELETE FROM written_batches WHERE ts < $1", float(self.clock() - 86400)
            )
        return int(removed)

    async def attempts(self, query: Query) -> list[Row]:
        p = _numbered()
        sql = (
            f"SELECT id, {', '.join(ATTEMPT_COLUMNS)} FROM attempts {where(query, p)} "
            f"ORDER BY ts DESC, id DESC LIMIT {p(query.limit)} OFFSET {p(query.offset)}"
        )
        return [attempt_out(row) for row in await self._select(sql, p)]

    async def timeseries(self, query: Query, bucket_seconds: int = 60) -> list[Row]:
        size = bucket_size(bucket_seconds)
        raw = _numbered()
        raw_sql = (
            f"SELECT {_bucket(size, raw)} AS bucket, {_ATTEMPT_SUMS} "
            f"FROM attempts {where(query, raw)} GROUP BY bucket"
        )
        hourly = _numbered()
        hourly_sql = (
            f"SELECT (hour / {hourly(size)}) * {hourly(size)} AS bucket, {_HOURLY_SUMS} "
            f"FROM attempt_hourly {where(query, hourly, ts=_HOUR)} GROUP BY bucket"
        )
        # p50 and p95 (nearest rank) of the successful attempts' latency in each bucket.
        ranked = _numbered()
        ranked_sql = f"""
            SELECT bucket, rn, n, latency_ms FROM (
                SELECT {_bucket(size, ranked)} AS bucket, latency_ms,
                       ROW_NUMBER() OVER (PARTITION BY floor(ts / {ranked(size)})
                                          ORDER BY latency_ms) AS rn,
                       COUNT(*) OVER (PARTITION BY floor(ts / {ranked(size)})) AS n
                FROM attempts {where(query, ranked, also=["ok"])}
            ) AS ranked
            WHERE rn = (n * 50 + 99) / 100 OR rn = (n * 95 + 99) / 100
        """
        async with self._snapshot() as conn:
            raw_rows = await conn.fetch(raw_sql, *_without_nul(raw.values))
            hourly_rows = await conn.fetch(hourly_sql, *_without_nul(hourly.values))
            ranked_rows = await conn.fetch(ranked_sql, *_without_nul(ranked.values))
        return merge_buckets([*raw_rows, *hourly_rows], ranked_percentiles(ranked_rows))

    async def counts(self) -> dict[str, int]:
        sql = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {t})" for t in COUNTED_TABLES)
        [row] = await self._ready().fetch(sql)
        return {table: int(n) for table, n in zip(COUNTED_TABLES, row, strict=True)}

    async def schema_version(self) -> int:
        version = await self._ready().fetchval("SELECT version FROM schema_version")
        return int(version) if version is not None else 0

    # ---- answers and their ratings (schema version 2) ----

    async def write_responses(self, records: Sequence[Mapping[str, Any]]) -> None:
        # Validated first: a bad record writes nothing. Sorted (stably) by id, as states are.
        rows = sorted((response_values(record) for record in records), key=lambda row: row[0])

        async def upsert(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
            encoded = [
                (*row[:_FLAGS], orjson.dumps(row[_FLAGS]).decode(), *row[_FLAGS + 1 :])
                for row in rows
            ]
            await conn.executemany(_UPSERT_RESPONSE, encoded)

        await self._write(rows, upsert)

    async def get_response(self, response_id: str) -> Row | None:
        row = await self._ready().fetchrow(_GET_RESPONSE, *_without_nul((response_id,)))
        return response_out(row) if row is not None else None

    async def responses(self, query: Query) -> list[Row]:
        p = _numbered()
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
        values = _without_nul([row[name] for name in FEEDBACK_COLUMNS])
        response_id = values[0]
        async with self._transaction() as conn:
            # Ratings of one response queue here until the previous one commits.
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, $2)", FEEDBACK_LOCK, lock_key(response_id)
            )
            previous = await conn.fetchrow(_PREVIOUS_FEEDBACK, response_id)
            await conn.execute(_INSERT_FEEDBACK, *values)
        return present_scores(previous) if previous is not None else None

    async def feedback(self, query: Query) -> list[Row]:
        p = _numbered()
        sql = (
            f"SELECT id, {', '.join(FEEDBACK_COLUMNS)} FROM feedback "
            f"{where(query, p, by_response=True)} "
            f"ORDER BY ts DESC, id DESC LIMIT {p(query.limit)} OFFSET {p(query.offset)}"
        )
        return [feedback_out(row) for row in await self._select(sql, p)]

    async def feedback_aggregates(self, query: Query) -> list[Row]:
        p = _numbered()
        pairs = ", ".join(f"SUM({name})::bigint, COUNT({name})" for name in FEEDBACK_SCORES)
        sql = (
            f"SELECT model, conversation_type, COUNT(*), {pairs} FROM feedback "
            f"{where(query, p, also=[_LATEST])} GROUP BY model, conversation_type"
        )
        return feedback_aggregate_rows(await self._select(sql, p))

    async def evaluation_aggregates(self, query: Query) -> list[Row]:
        groups = _numbered()
        groups_sql = (
            f"SELECT model, conversation_type, {_EVALUATION_SUMS} FROM responses "
            f"{where(query, groups)} GROUP BY model, conversation_type"
        )
        flags = _numbered()
        flags_sql = (
            "SELECT r.model, r.conversation_type, j.value, COUNT(DISTINCT r.response_id) "
            "FROM responses AS r, jsonb_array_elements_text(r.flags) AS j(value) "
            f"{where(query, flags, prefix='r.')} "
            "GROUP BY r.model, r.conversation_type, j.value"
        )
        async with self._snapshot() as conn:
            group_rows = await conn.fetch(groups_sql, *_without_nul(groups.values))
            flag_rows = await conn.fetch(flags_sql, *_without_nul(flags.values))
        return evaluation_rows(group_rows, flag_rows)

    async def evaluation_trend(self, query: Query, bucket_seconds: int = 3600) -> list[Row]:
        size = bucket_size(bucket_seconds)
        answered = _numbered()
        answered_sql = (
            f"SELECT {_bucket(size, answered)} AS bucket, {_EVALUATION_SUMS} FROM responses "
            f"{where(query, answered)} GROUP BY bucket"
        )
        rated = _numbered()
        rated_sql = (
            f"SELECT {_bucket(size, rated)} AS bucket, COUNT(*), COUNT(overall), "
            f"SUM(overall)::bigint FROM feedback {where(query, rated, also=[_LATEST])} "
            "GROUP BY bucket"
        )
        async with self._snapshot() as conn:
            answered_rows = await conn.fetch(answered_sql, *_without_nul(answered.values))
            rated_rows = await conn.fetch(rated_sql, *_without_nul(rated.values))
        return merge_trend(answered_rows, rated_rows)

    async def prune_payloads(self, older_than: float) -> int:
        async with self._transaction() as conn:
            await conn.execute(_PAIRS.prune_texts, float(older_than))
            status = await conn.execute(_PRUNE_PAYLOADS, float(older_than))
        return int(status.rpartition(" ")[2])  # "UPDATE n"

    # ---- same-prompt pairs and pairwise verdicts (schema version 5) ----

    async def write_pairs(self, pairs: Sequence[Mapping[str, Any]]) -> None:
        rows = sorted((pair_values(pair) for pair in pairs), key=lambda row: str(row[0]))

        async def upsert(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
            await conn.executemany(_PAIRS.upsert_pair, rows)

        await self._write(rows, upsert)

    async def pair_of(self, a_response_id: str, b_response_id: str) -> Row | None:
        values = _without_nul((a_response_id, b_response_id))
        row = await self._ready().fetchrow(_PAIRS.pair_of, *values)
        return dict(zip(PAIR_COLUMNS, row, strict=True)) if row is not None else None

    async def next_pair(self, owner: str | None, *, everyone: bool, offset: int = 0) -> Row | None:
        sql, values = _PAIRS.next_pair_sql(owner, everyone, offset)
        row = await self._ready().fetchrow(sql, *_without_nul(values))
        return dict(zip(PAIR_COLUMNS, row, strict=True)) if row is not None else None

    async def add_verdict(self, verdict: Mapping[str, Any]) -> str | None:
        values = _without_nul(verdict_values(verdict))
        async with self._transaction() as conn:
            # Verdicts on one pair of answers queue here until the previous one commits.
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, $2)", VERDICT_LOCK, lock_key(values[0])
            )
            previous = await conn.fetchrow(_PAIRS.previous_verdict, values[0])
            await conn.execute(_PAIRS.upsert_verdict, *values)
            if verdict.get("pair_id") is not None:
                await conn.execute(_PAIRS.judged, verdict["ts"], values[6])
        return previous_winner(tuple(previous) if previous is not None else None, values[1])

    async def verdict_tallies(self, route: str | None = None) -> list[Row]:
        sql, values = _PAIRS.tallies_sql(route)
        rows = await self._ready().fetch(sql, *_without_nul(values))
        return [{"model_a": a, "model_b": b, "winner": w, "count": int(n)} for a, b, w, n in rows]

    async def pair_counts(self) -> list[Row]:
        rows = await self._ready().fetch(_PAIRS.pair_counts)
        return [{"comparison": c, "pairs": int(n), "judged": int(j)} for c, n, j in rows]
