"""PostgresStore specifics: migrations (and replicas racing to apply them), the advisory
lock that serialises ratings of one response, pruning beside another pruner, the pool, and
a url whose password never reaches a message. The contract tests run on PostgreSQL through
the `harness` fixture; these need a schema of their own (`pg_schema`)."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

import gateway.storage.postgres as postgres_module
import gateway.storage.sqlite as sqlite_module
from gateway.storage import PostgresStore, Query, SQLiteStore, StoreError, create_store
from gateway.storage.migrations import MIGRATIONS as SQLITE_MIGRATIONS
from gateway.storage.migrations_postgres import MIGRATIONS
from gateway.storage.postgres import (
    FEEDBACK_LOCK,
    MIGRATION_LOCK,
    PRUNE_LOCK,
    describe_url,
    lock_key,
)
from tests.conftest import upstream_config
from tests.gateway.storage.helpers import H0, attempt, rate, response
from tests.support.gateway import GatewayProcess
from tests.support.postgres import PgSchema, new_pg_schema
from tests.support.upstream import FakeUpstream

SECRET = "S3cret-pw"


async def waiting_behind(holder: asyncpg.Connection, observer: asyncpg.Connection, n: int) -> None:
    """Return once `n` sessions wait for a lock `holder` holds. Watched from `observer`:
    within the holder's transaction the list of sessions would not change."""
    pid = holder.get_server_pid()
    sql = "SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND $1 = ANY(pg_blocking_pids(pid))"
    async with asyncio.timeout(60):  # a hang fails the test rather than the run
        while await observer.fetchval(sql, pid) < n:
            await asyncio.sleep(0.01)


# ---- migrations ----


async def test_replicas_opening_a_fresh_schema_together_all_come_up() -> None:
    for _ in range(5):  # each round a fresh schema, four stores racing to migrate it
        async with new_pg_schema() as schema:
            stores = [schema.store(pool_size=2) for _ in range(4)]
            await asyncio.gather(*(store.open() for store in stores))
            try:
                assert [await s.schema_version() for s in stores] == [len(MIGRATIONS)] * 4
                await stores[0].write_attempts([attempt(H0)])
                assert (await stores[3].counts())["attempts"] == 1
            finally:
                await asyncio.gather(*(store.close() for store in stores))
            conn = await schema.connect()
            assert await conn.fetch("SELECT version FROM schema_version") == [(len(MIGRATIONS),)]
            await conn.close()


async def test_opening_waits_for_the_replica_that_is_migrating(pg_schema: PgSchema) -> None:
    holder, observer = await pg_schema.connect(), await pg_schema.connect()
    try:
        # Another replica is migrating: it holds the schema's migration lock.
        await holder.execute(
            "SELECT pg_advisory_lock($1, $2)", MIGRATION_LOCK, lock_key(pg_schema.name)
        )
        stores = [pg_schema.store(pool_size=1) for _ in range(3)]
        opening = asyncio.gather(*(store.open() for store in stores))
        await waiting_behind(holder, observer, 3)
        assert not opening.done()
        await holder.execute("SELECT pg_advisory_unlock_all()")
        await opening
        assert [await s.schema_version() for s in stores] == [len(MIGRATIONS)] * 3
        await asyncio.gather(*(store.close() for store in stores))
    finally:
        await holder.close()
        await observer.close()


def test_both_migration_lists_have_every_version() -> None:
    assert len(MIGRATIONS) == len(SQLITE_MIGRATIONS)


async def _sqlite_schema(path: Path) -> dict[str, Any]:
    async with SQLiteStore(path) as store, store._connection() as db:
        names = await db.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        tables = {}
        for (name,) in names:
            info = await db.execute_fetchall(f"PRAGMA table_info({name})")
            # (name, required, primary key position); a rowid primary key is implicitly required
            tables[name] = [(c[1], bool(c[3] or c[5]), c[5]) for c in info]
        indexes = await db.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    return {"tables": tables, "indexes": {name for (name,) in indexes}}


async def _postgres_schema(schema: PgSchema) -> dict[str, Any]:
    conn = await schema.connect()
    try:
        columns = await conn.fetch(
            """
            SELECT c.table_name, c.column_name, c.is_nullable = 'NO',
                   COALESCE(k.ordinal_position, 0)
            FROM information_schema.columns AS c
            LEFT JOIN information_schema.table_constraints AS t
                ON t.table_schema = c.table_schema AND t.table_name = c.table_name
               AND t.constraint_type = 'PRIMARY KEY'
            LEFT JOIN information_schema.key_column_usage AS k
                ON k.constraint_name = t.constraint_name AND k.table_schema = c.table_schema
               AND k.column_name = c.column_name
            WHERE c.table_schema = $1 ORDER BY c.table_name, c.ordinal_position
            """,
            schema.name,
        )
        indexes = await conn.fetch(
            "SELECT indexname FROM pg_indexes "
            "WHERE schemaname = $1 AND indexname NOT LIKE '%_pkey'",
            schema.name,
        )
    finally:
        await conn.close()
    tables: dict[str, list[tuple[str, bool, int]]] = {}
    for table, column, required, pk in columns:
        tables.setdefault(table, []).append((column, required, pk))
    return {"tables": tables, "indexes": {name for (name,) in indexes}}


async def test_version_n_is_the_same_schema_in_both_dialects(
    pg_schema: PgSchema, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tables, columns in order, which are required, primary keys and index names, after
    each version in turn (each an upgrade of the one before)."""
    for version in range(1, len(MIGRATIONS) + 1):
        monkeypatch.setattr(sqlite_module, "MIGRATIONS", SQLITE_MIGRATIONS[:version])
        monkeypatch.setattr(postgres_module, "MIGRATIONS", MIGRATIONS[:version])
        async with pg_schema.store() as store:
            assert await store.schema_version() == version
        sqlite = await _sqlite_schema(tmp_path / "gw.db")
        assert await _postgres_schema(pg_schema) == sqlite, f"version {version}"


async def test_an_upgrade_keeps_the_data(pg_schema: PgSchema, monkeypatch) -> None:
    monkeypatch.setattr(postgres_module, "MIGRATIONS", MIGRATIONS[:1])
    async with pg_schema.store() as store:
        assert await store.schema_version() == 1
        await store.write_attempts([attempt(H0)])
        await store.save_states([("stats", "alpha", {"n": 1})])
    monkeypatch.setattr(postgres_module, "MIGRATIONS", MIGRATIONS)
    async with pg_schema.store() as store:
        assert await store.schema_version() == len(MIGRATIONS)
        counts = await store.counts()
        assert (counts["attempts"], counts["state"], counts["responses"]) == (1, 1, 0)
        await store.write_responses([response("a", H0)])
        assert await rate(store, "a", H0 + 1, overall=4) is None


async def test_a_failed_migration_rolls_back_and_lets_go(pg_schema: PgSchema, monkeypatch) -> None:
    async with pg_schema.store():
        pass
    broken = "CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);"
    monkeypatch.setattr(postgres_module, "MIGRATIONS", [*MIGRATIONS, broken])
    store = pg_schema.store()
    with pytest.raises(asyncpg.UndefinedTableError):
        await store.open()
    with pytest.raises(StoreError, match="not open"):
        await store.counts()
    conn = await pg_schema.connect()
    try:
        assert await conn.fetchval("SELECT version FROM schema_version") == len(MIGRATIONS)
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
    finally:
        await conn.close()
    monkeypatch.setattr(postgres_module, "MIGRATIONS", MIGRATIONS)
    async with pg_schema.store() as again:  # the lock went with the failed open
        assert await again.schema_version() == len(MIGRATIONS)


async def test_a_newer_schema_is_refused(pg_schema: PgSchema) -> None:
    async with pg_schema.store():
        pass
    conn = await pg_schema.connect()
    await conn.execute("UPDATE schema_version SET version = $1", len(MIGRATIONS) + 3)
    await conn.close()
    with pytest.raises(StoreError, match=f"version {len(MIGRATIONS) + 3} is newer"):
        await pg_schema.store().open()


async def test_a_search_path_without_a_schema_is_named(pg_schema: PgSchema) -> None:
    store = PostgresStore(pg_schema.url, server_settings={"search_path": "gw_nowhere"})
    with pytest.raises(StoreError, match="no schema to create the tables in"):
        await store.open()


# ---- ratings of one response, serialised ----


async def test_a_rating_waits_for_the_one_in_progress(pg_schema: PgSchema) -> None:
    """Another replica is rating response "same": it holds the response's lock and has
    inserted, not committed. This rating waits, then sees that one as its predecessor;
    without the lock it would read before the commit and see none."""
    async with pg_schema.store() as store:
        holder, observer = await pg_schema.connect(), await pg_schema.connect()
        try:
            other = holder.transaction()
            await other.start()
            await holder.execute(
                "SELECT pg_advisory_xact_lock($1, $2)", FEEDBACK_LOCK, lock_key("same")
            )
            await holder.execute(
                "INSERT INTO feedback (response_id, model, provider, conversation_type, "
                "overall, ts) VALUES ('same', 'alpha', 'up', 'text-to-text', 2, $1)",
                H0,
            )
            rating = asyncio.ensure_future(rate(store, "same", H0 + 1, overall=5))
            await waiting_behind(holder, observer, 1)
            assert not rating.done()
            await other.commit()
            assert await rating == {"overall": 2}
        finally:
            await holder.close()
            await observer.close()
        history = await store.feedback(Query(response_id="same"))
        assert [r["overall"] for r in history] == [5, 2]


async def test_replicas_rating_one_response_each_see_one_predecessor(pg_schema: PgSchema) -> None:
    async with pg_schema.store(pool_size=5) as one, pg_schema.store(pool_size=5) as two:
        calls = [rate(one if i % 2 else two, "same", H0, relevance=i) for i in range(40)]
        previous = await asyncio.gather(*calls)
        assert (await one.counts())["feedback"] == 40
    assert previous.count(None) == 1
    assert len({p["relevance"] for p in previous if p is not None}) == 39


def test_lock_keys_are_stable_int4() -> None:
    assert lock_key("same") == lock_key("same") != lock_key("other")
    keys = [lock_key(f"resp-{i}") for i in range(1000)]
    assert all(-(2**31) <= k < 2**31 for k in keys) and min(keys) < 0 < max(keys)


# ---- pruning beside another pruner ----


async def test_a_prune_beside_another_counts_each_attempt_once(pg_schema: PgSchema) -> None:
    async with pg_schema.store() as store:
        await store.write_attempts([attempt(H0 + i) for i in range(10)])
        holder, observer = await pg_schema.connect(), await pg_schema.connect()
        try:
            other = holder.transaction()  # another replica's prune, not committed yet
            await other.start()
            assert await holder.fetchval(postgres_module._PRUNE, H0 + 3600) == 10
            pruning = asyncio.ensure_future(store.prune(H0 + 3600))
            await waiting_behind(holder, observer, 1)
            await other.commit()
            assert await pruning == 0  # the rows it waited for were gone
        finally:
            await holder.close()
            await observer.close()
        [bucket] = await store.timeseries(Query(), bucket_seconds=3600)
        assert bucket["requests"] == 10
        assert (await store.counts())["attempt_hourly"] == 1


async def test_replicas_prune_in_turn(pg_schema: PgSchema) -> None:
    async with pg_schema.store() as store:
        await store.write_attempts([attempt(H0 + i) for i in range(3)])
        holder, observer = await pg_schema.connect(), await pg_schema.connect()
        try:
            other = holder.transaction()  # another replica is pruning this schema
            await other.start()
            await holder.execute(
                "SELECT pg_advisory_xact_lock($1, $2)", PRUNE_LOCK, lock_key(pg_schema.name)
            )
            pruning = asyncio.ensure_future(store.prune(H0 + 3600))
            await waiting_behind(holder, observer, 1)
            await other.commit()
            assert await pruning == 3
        finally:
            await holder.close()
            await observer.close()


# ---- the pool and failed batches ----


async def test_the_pool_has_the_configured_size(pg_schema: PgSchema) -> None:
    async with pg_schema.store(pool_size=3) as store:
        assert store._pool is not None and store._pool.get_max_size() == 3
        await asyncio.gather(*(store.counts() for _ in range(10)))
    with pytest.raises(StoreError, match="pool_size"):
        pg_schema.store(pool_size=0)


async def test_a_failed_batch_writes_nothing(pg_schema: PgSchema) -> None:
    async with pg_schema.store() as store:
        with pytest.raises(asyncpg.NotNullViolationError):
            await store.write_attempts([attempt(H0), attempt(H0 + 1, model=None)])
        assert (await store.counts())["attempts"] == 0
        await store.write_attempts([attempt(H0)])  # the pool is still usable
        assert (await store.counts())["attempts"] == 1


async def test_an_unopened_store_says_so() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1/test")
    with pytest.raises(StoreError, match="not open"):
        await store.attempts(Query())
    await store.close()  # closing what never opened is fine


# ---- the url's password stays out of every message ----


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://gatewise:{SECRET}@127.0.0.1:1/gw",  # nothing listens on port 1
        f"postgres://gatewise:{SECRET}@127.0.0.1:1/gw?sslmode=disable",
        f"postgresql://gatewise@127.0.0.1:1/gw?password={SECRET}",
        f"postgresql://gatewise:{SECRET}@127.0.0.1:notaport/gw",
        f"postgresql://gatewise:{SECRET}%40x@127.0.0.1:1/gw",  # percent-encoded
    ],
)
async def test_a_failed_connection_never_shows_the_password(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = create_store(url)
    assert SECRET not in repr(store)
    with pytest.raises(StoreError) as info:
        await store.open()
    shown = "".join(traceback.format_exception(info.value))
    assert SECRET not in shown and "gatewise:" not in shown
    assert describe_url(url) in str(info.value)
    assert str(info.value).startswith("cannot connect to PostgreSQL at postgres")
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "url, shown",
    [
        (f"postgresql://u:{SECRET}@db.internal:5433/gw", "postgresql://db.internal:5433"),
        (f"postgres://u:{SECRET}@h1:5432,h2:5433/gw?x=1", "postgres://h1:5432,h2:5433"),
        (f"postgresql://u:{SECRET}@[::1]:5432/gw", "postgresql://[::1]:5432"),
        (f"postgresql:///gw?password={SECRET}", "postgresql://localhost"),
        (f"POSTGRESQL://u:{SECRET}@db", "postgresql://db"),
        (f"postgresql://u:{SECRET}/x@db/gw", "postgresql://db"),  # an unescaped / in it
        (f"postgresql://u:{SECRET}@x@db/gw", "postgresql://db"),  # an unescaped @
        (f"postgresql://u:{SECRET}?x@db/gw", "postgresql://(host not shown)"),  # an unescaped ?
        (f"postgresql://u:{SECRET}/gw", "postgresql://(host not shown)"),  # no @ at all
        (f"postgresql://u:{SECRET}@db:notaport/gw", "postgresql://(host not shown)"),
    ],
)
def test_describe_url_names_the_scheme_and_hosts_only(url: str, shown: str) -> None:
    assert describe_url(url) == shown


def test_a_gateway_that_cannot_reach_its_database_logs_no_password(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    env = {"GATEWISE_STORAGE_URL": f"postgresql://gatewise:{SECRET}@127.0.0.1:1/gw"}
    gw = start_gateway(upstream_config(upstream), env=env)  # it serves, degraded
    ready = httpx.get(gw.url + "/readyz", timeout=10).json()
    assert ready["storage"]["state"] == "degraded"
    assert "cannot connect to PostgreSQL at postgresql://127.0.0.1:1" in gw.logs()
    assert SECRET not in gw.logs() and SECRET not in str(ready)


# ---- a gateway on PostgreSQL ----


async def test_a_gateway_keeps_its_attempts_in_postgresql(
    pg_schema: PgSchema,
    upstream: FakeUpstream,
    start_gateway: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    """GATEWISE_STORAGE_URL replaces storage.url; the url's query picks the schema."""
    env = {"GATEWISE_STORAGE_URL": f"{pg_schema.url}?search_path={pg_schema.name}"}
    unused = tmp_path / "unused.db"
    config = upstream_config(upstream, storage={"url": f"sqlite:///{unused}", "pool_size": 2})
    gw = await asyncio.to_thread(start_gateway, config, env)
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": "Bearer test-key"}
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        reply = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    await asyncio.to_thread(gw.stop)  # a graceful stop flushes the writer
    async with pg_schema.store() as store:
        [row] = await store.attempts(Query())
        assert (row["model"], row["ok"]) == ("alpha", True)
        assert await store.load_states("stats")
    assert not unused.exists()
