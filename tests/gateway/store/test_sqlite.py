"""The storage layer: SQLiteStore, and MemoryStore wherever the two share semantics."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import gateway.store.sqlite as sqlite_module
from gateway.store import MemoryStore, SQLiteStore, Store, StoreError, create_store
from gateway.store.migrations import MIGRATIONS
from gateway.store.sqlite import split_statements
from gateway.types import Attempt

H0 = 472_222 * 3600.0  # an hour boundary (2023-11-14 22:00 UTC)


def attempt(ts: float, **fields) -> Attempt:
    values = {
        "request_id": f"req-{ts}",
        "response_id": f"resp-{ts}",
        "attempt": 1,
        "model": "alpha",
        "provider": "up",
        "conversation_type": "text-to-text",
        "route": "auto",
        "optimization": "accuracy",
        "ok": True,
        "latency_ms": 100.0,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost": 0.5,
        "timestamp": ts,
    }
    values.update(fields)
    return Attempt(**values)


@dataclass
class Harness:
    store: Store
    reopen: Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", "memory"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    opened: list[Store] = []

    async def make() -> Store:
        if request.param == "memory":
            store = opened[-1] if opened else MemoryStore()
        else:
            store = SQLiteStore(tmp_path / "gw.db")
        if opened:
            await opened[-1].close()
        await store.open()
        opened.append(store)
        return store

    h = Harness(await make(), make)
    yield h
    await opened[-1].close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "gw.db") as store:
        yield store


# ---- behaviour shared by every implementation ----


async def test_attempt_round_trip(harness: Harness) -> None:
    original = attempt(
        H0 + 1.25, ok=False, error_class="timeout", http_status=504, ttft_ms=12.5,
        stream=True, error_message="upstream timed out", counts_as_failure=True,
        retry_after=3.0, route=None, optimization=None, response_id=None,
    )  # fmt: skip
    await harness.store.write_attempts([original])
    [row] = await harness.store.attempts()
    assert isinstance(row.pop("id"), int)
    assert row == {
        "request_id": original.request_id, "response_id": None, "attempt": 1,
        "model": "alpha", "provider": "up", "conversation_type": "text-to-text",
        "route": None, "optimization": None, "ok": False, "error_class": "timeout",
        "http_status": 504, "latency_ms": 100.0, "ttft_ms": 12.5, "prompt_tokens": 10,
        "completion_tokens": 5, "cost": 0.5, "ts": H0 + 1.25, "stream": True,
        "error_message": "upstream timed out", "counts_as_failure": True,
    }  # fmt: skip
    assert all(type(row[k]) is bool for k in ("ok", "stream", "counts_as_failure"))


async def test_attempts_filters_and_paging(harness: Harness) -> None:
    store = harness.store
    await store.write_attempts(
        [attempt(H0 + i, model="alpha" if i % 2 else "beta") for i in range(10)]
        + [attempt(H0 + 3, request_id="tie", model="e", conversation_type="embedding")]
    )
    rows = await store.attempts()
    assert [r["ts"] for r in rows] == sorted((r["ts"] for r in rows), reverse=True)
    assert rows[0]["ts"] == H0 + 9
    # Same ts: the later insert (higher id) comes first.
    same = [r for r in rows if r["ts"] == H0 + 3]
    assert [r["request_id"] for r in same] == ["tie", f"req-{H0 + 3}"]

    alpha = await store.attempts(model="alpha")
    assert [r["ts"] - H0 for r in alpha] == [9, 7, 5, 3, 1]
    assert [r["request_id"] for r in await store.attempts(conversation_type="embedding")] == ["tie"]
    window = await store.attempts(since=H0 + 2, until=H0 + 5)  # since inclusive, until not
    assert [r["ts"] - H0 for r in window] == [4, 3, 3, 2]
    page = await store.attempts(model="beta", limit=2, offset=1)
    assert [r["ts"] - H0 for r in page] == [6, 4]
    assert await store.attempts(model="nobody") == []
    assert len(await store.attempts(limit=0)) == 0
    with pytest.raises(ValueError):
        await store.attempts(limit=-1)


async def test_empty_batches_are_fine(harness: Harness) -> None:
    await harness.store.write_attempts([])
    await harness.store.save_states([])
    assert (await harness.store.counts())["attempts"] == 0


async def test_state_upsert_load_delete_survives_reopen(harness: Harness) -> None:
    store = harness.store
    await store.save_states(
        [
            ("stats", "alpha", {"n": 1, "lat": [1.5, 2.0]}),
            ("stats", "beta", {"n": 2}),
            ("blacklist", "alpha", {"until": H0, "level": 1, "nested": {"a": None}}),
        ]
    )
    await store.save_states([("stats", "alpha", {"n": 3})])  # upsert replaces
    assert await store.load_states("stats") == {"alpha": {"n": 3}, "beta": {"n": 2}}
    await store.delete_state("stats", "beta")
    await store.delete_state("stats", "never-there")

    store = await harness.reopen()
    assert await store.load_states("stats") == {"alpha": {"n": 3}}
    assert await store.load_states("blacklist") == {
        "alpha": {"until": H0, "level": 1, "nested": {"a": None}}
    }
    assert await store.load_states("unknown") == {}
    assert (await store.counts())["state"] == 2


async def test_loaded_state_is_a_copy(harness: Harness) -> None:
    data = {"n": 1}
    await harness.store.save_states([("k", "a", data)])
    data["n"] = 99
    loaded = await harness.store.load_states("k")
    loaded["a"]["n"] = 42
    assert await harness.store.load_states("k") == {"a": {"n": 1}}


async def test_prune_rolls_up_old_rows_only(harness: Harness) -> None:
    store = harness.store
    old = [
        attempt(H0 + 10, latency_ms=100, cost=1.0),
        attempt(H0 + 20, ok=False, counts_as_failure=True, latency_ms=300, cost=0.0),
        attempt(H0 + 30, ok=False, counts_as_failure=False, latency_ms=200, cost=0.0),
        attempt(H0 + 3600 + 5, model="beta", cost=2.0),
    ]
    new = [attempt(H0 + 7200 + i) for i in range(3)]
    await store.write_attempts(old + new)

    assert await store.prune(H0 + 7200) == 4
    assert await store.counts() == {
        "attempts": 3,
        "attempt_hourly": 2,
        "state": 0,
        "responses": 0,
        "feedback": 0,
    }
    assert {r["ts"] for r in await store.attempts()} == {a.timestamp for a in new}
    assert await store.prune(H0 + 7200) == 0  # safe to repeat
    assert (await store.counts())["attempt_hourly"] == 2

    series = await store.timeseries(bucket_seconds=3600)
    assert [b["ts"] for b in series] == [H0, H0 + 3600, H0 + 7200]
    first = series[0]
    assert (first["requests"], first["successes"], first["failures"]) == (3, 1, 1)
    assert first["latency_ms"] == pytest.approx(200.0)
    assert first["cost"] == pytest.approx(1.0)
    assert (first["prompt_tokens"], first["completion_tokens"]) == (30, 15)
    assert series[1]["requests"] == 1 and series[1]["cost"] == pytest.approx(2.0)
    assert series[2]["requests"] == 3


async def test_repeated_prune_adds_to_existing_hourly_rows(harness: Harness) -> None:
    store = harness.store
    await store.write_attempts(
        [attempt(H0 + i * 600, cost=1.0, latency_ms=10.0 * i) for i in range(6)]
    )
    assert await store.prune(H0 + 1500) == 3  # the first half of the hour
    assert await store.counts() == {
        "attempts": 3,
        "attempt_hourly": 1,
        "state": 0,
        "responses": 0,
        "feedback": 0,
    }
    # Late arrivals for the same, already rolled-up hour:
    await store.write_attempts([attempt(H0 + 100, ok=False, counts_as_failure=True)])
    assert await store.prune(H0 + 3600) == 4
    assert await store.counts() == {
        "attempts": 0,
        "attempt_hourly": 1,
        "state": 0,
        "responses": 0,
        "feedback": 0,
    }
    [bucket] = await store.timeseries(bucket_seconds=3600)
    assert bucket["ts"] == H0
    assert (bucket["requests"], bucket["successes"], bucket["failures"]) == (7, 6, 1)
    assert bucket["cost"] == pytest.approx(6.5)
    assert bucket["latency_ms"] == pytest.approx((0 + 10 + 20 + 30 + 40 + 50 + 100) / 7)


async def test_timeseries_combines_rollups_and_raw_rows(harness: Harness) -> None:
    store = harness.store
    await store.write_attempts(
        [attempt(H0 + 30 * 60, latency_ms=50), attempt(H0 + 45 * 60, latency_ms=150)]
    )
    await store.prune(H0 + 3600)  # hour H0 is now one rollup row
    await store.write_attempts(
        [
            attempt(H0 + 3600 + 10, latency_ms=10, ok=False, counts_as_failure=True),
            attempt(H0 + 3600 + 70, latency_ms=30, conversation_type="embedding"),
            attempt(H0 + 3600 + 75, latency_ms=20, model="beta"),
        ]
    )
    minutes = await store.timeseries(bucket_seconds=60)
    # The rollup lands whole in the bucket starting at its hour; raw rows in their minute.
    assert [(b["ts"] - H0, b["requests"]) for b in minutes] == [(0, 2), (3600, 1), (3660, 2)]
    assert minutes[0]["latency_ms"] == pytest.approx(100.0)
    assert minutes[2]["latency_ms"] == pytest.approx(25.0)
    assert sum(b["requests"] for b in minutes) == 5
    assert sum(b["failures"] for b in minutes) == 1
    assert sum(b["successes"] for b in minutes) == 4
    assert sum(b["cost"] for b in minutes) == pytest.approx(2.5)

    day = await store.timeseries(bucket_seconds=86400)
    assert sum(b["requests"] for b in day) == 5

    alpha = await store.timeseries(model="alpha", bucket_seconds=3600)
    assert [(b["ts"] - H0, b["requests"]) for b in alpha] == [(0, 2), (3600, 2)]
    text = await store.timeseries(model="alpha", conversation_type="text-to-text")
    assert sum(b["requests"] for b in text) == 3
    recent = await store.timeseries(since=H0 + 3600, bucket_seconds=3600)
    assert [(b["ts"] - H0, b["requests"]) for b in recent] == [(3600, 3)]
    older = await store.timeseries(until=H0 + 3600, bucket_seconds=3600)
    assert [(b["ts"] - H0, b["requests"]) for b in older] == [(0, 2)]
    assert await store.timeseries(model="nobody") == []
    with pytest.raises(ValueError):
        await store.timeseries(bucket_seconds=0)


async def test_ten_thousand_attempts_in_one_batch(harness: Harness) -> None:
    batch = [attempt(H0 + i * 0.01, request_id=f"r{i}", model=f"m{i % 7}") for i in range(10_000)]
    await harness.store.write_attempts(batch)
    assert (await harness.store.counts())["attempts"] == 10_000
    assert len(await harness.store.attempts(model="m3", limit=10_000)) == 1429


# ---- SQLite specifics ----


async def test_migrations_applied_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "gw.db"  # parent directories are created
    async with SQLiteStore(path) as store:
        assert await store.schema_version() == len(MIGRATIONS) >= 1
        assert await store.counts() == {
            "attempts": 0,
            "attempt_hourly": 0,
            "state": 0,
            "responses": 0,
            "feedback": 0,
        }
        await store.write_attempts([attempt(H0)])
    async with SQLiteStore(path) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        assert (await store.counts())["attempts"] == 1
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (1,)
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"attempts_ts", "attempts_model_ts"} <= indexes


async def test_appended_migration_is_applied_on_open(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "gw.db"
    async with SQLiteStore(path):
        pass
    extra = """
        CREATE TABLE extra_notes (id INTEGER PRIMARY KEY, note TEXT DEFAULT 'a;b');
        -- a comment; with a semicolon
        CREATE TRIGGER extra_notes_touch AFTER INSERT ON extra_notes BEGIN
            UPDATE extra_notes SET note = note || ';' WHERE id = new.id;
        END;
    """
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [*MIGRATIONS, extra])
    async with SQLiteStore(path) as store:
        assert await store.schema_version() == len(MIGRATIONS) + 1
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO extra_notes (id) VALUES (1)")
        assert db.execute("SELECT note FROM extra_notes").fetchone() == ("a;b;",)


async def test_failed_migration_rolls_back(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "gw.db"
    broken = "CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);"
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(sqlite3.OperationalError):
        await SQLiteStore(path).open()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (len(MIGRATIONS),)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "attempts" in tables and "half_done" not in tables


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    async with SQLiteStore(path):
        pass
    newer = len(MIGRATIONS) + 3
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (newer,))
    store = SQLiteStore(path)
    message = f"database schema version {newer} is newer than this gatewise ({len(MIGRATIONS)})"
    with pytest.raises(StoreError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await store.open()
    with pytest.raises(StoreError, match="not open"):
        await store.counts()


async def test_wal_mode(sqlite_store: SQLiteStore) -> None:
    assert await sqlite_store.journal_mode() == "wal"
    with sqlite3.connect(sqlite_store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_failed_batch_writes_nothing(sqlite_store: SQLiteStore) -> None:
    bad = attempt(H0 + 1, model=None)  # violates NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        await sqlite_store.write_attempts([attempt(H0), bad])
    assert (await sqlite_store.counts())["attempts"] == 0
    await sqlite_store.write_attempts([attempt(H0)])  # the connection is still usable
    assert (await sqlite_store.counts())["attempts"] == 1


async def test_in_memory_sqlite() -> None:
    async with SQLiteStore(":memory:") as store:
        await store.write_attempts([attempt(H0)])
        assert (await store.counts())["attempts"] == 1
        assert await store.schema_version() == len(MIGRATIONS)


def test_split_statements() -> None:
    script = "CREATE TABLE a (x TEXT DEFAULT ';'); -- note; here\n ; CREATE TABLE b (y);  "
    assert [s.strip() for s in split_statements(script)] == [
        "CREATE TABLE a (x TEXT DEFAULT ';');",
        "-- note; here\n ;",
        "CREATE TABLE b (y);",
    ]
    with pytest.raises(StoreError, match="incomplete"):
        list(split_statements("CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1;"))


# ---- create_store ----


async def test_create_store_relative_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = create_store("sqlite:///data/gatewise.db")
    assert isinstance(store, SQLiteStore) and store.path == "data/gatewise.db"
    async with store:
        pass
    assert (tmp_path / "data" / "gatewise.db").is_file()
    assert create_store("sqlite:///gatewise.db").path == "gatewise.db"


def test_create_store_urls(tmp_path: Path) -> None:
    absolute = create_store(f"sqlite:///{tmp_path}/x.db")  # four slashes: absolute
    assert isinstance(absolute, SQLiteStore) and absolute.path == str(tmp_path / "x.db")
    assert create_store("sqlite:////tmp/x.db").path == "/tmp/x.db"
    memory = create_store("sqlite://:memory:")
    assert isinstance(memory, SQLiteStore) and memory.path == ":memory:"
    assert isinstance(create_store("memory://"), MemoryStore)
    for url in ("postgresql://u:pw@db/gatewise", "postgres://db/gatewise"):
        with pytest.raises(StoreError, match="PostgreSQL support is not available yet"):
            create_store(url)


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("mysql://user:secret@db/gw", "'mysql://'"),
        ("gatewise.db", "no scheme"),
        ("sqlite://gatewise.db", "three slashes"),
        ("sqlite:///", "three slashes"),
    ],
)
def test_create_store_rejects_bad_urls(url: str, fragment: str) -> None:
    with pytest.raises(StoreError, match=fragment) as info:
        create_store(url)
    assert "secret" not in str(info.value)
    assert "sqlite:///" in str(info.value)
