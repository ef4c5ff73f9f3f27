"""SQLiteStore specifics (WAL, atomic batches, :memory:) and create_store URLs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.storage import PostgresStore, SQLiteStore, StoreError, create_store
from gateway.storage.migrations import MIGRATIONS
from tests.gateway.storage.helpers import H0, attempt


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
    memory = create_store("memory://")  # the url of the former plain-Python store
    assert isinstance(memory, SQLiteStore) and memory.path == ":memory:"
    postgres = create_store("postgresql://u:pw@db.internal:5433/gatewise", pool_size=3)
    assert isinstance(postgres, PostgresStore) and postgres.pool_size == 3
    assert postgres.location == "postgresql://db.internal:5433"
    assert ":pw" not in repr(postgres)
    short = create_store("postgres://db/gatewise")
    assert isinstance(short, PostgresStore) and short.pool_size == 10
    with pytest.raises(StoreError, match="postgresql://"):
        create_store("postgresql+asyncpg://u:secret@db/gatewise")


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("mysql://user:secret@db/gw", "'mysql://'"),
        ("gatewise.db", "no scheme"),
        ("user:secret@db/gw", "no scheme"),
        ("sqlite://gatewise.db", "three slashes"),
        ("sqlite:///", "three slashes"),
    ],
)
def test_create_store_rejects_bad_urls(url: str, fragment: str) -> None:
    with pytest.raises(StoreError, match=fragment) as info:
        create_store(url)
    assert "secret" not in str(info.value)
    assert "sqlite:///" in str(info.value)
