"""SQLite schema migrations: applying, upgrading, rolling back and refusing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import gateway.storage.sqlite as sqlite_module
from gateway.storage import SQLiteStore, StoreError
from gateway.storage.migrations import MIGRATIONS
from gateway.storage.sqlite import split_statements
from tests.gateway.storage.helpers import H0, attempt, minimal_attempt, rate, response


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


def test_split_statements() -> None:
    script = "CREATE TABLE a (x TEXT DEFAULT ';'); -- note; here\n ; CREATE TABLE b (y);  "
    assert [s.strip() for s in split_statements(script)] == [
        "CREATE TABLE a (x TEXT DEFAULT ';');",
        "-- note; here\n ;",
        "CREATE TABLE b (y);",
    ]
    with pytest.raises(StoreError, match="incomplete"):
        list(split_statements("CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1;"))


# ---- migration 2: responses and feedback ----


def _schema(path: Path) -> tuple[set[str], set[str]]:
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    return tables, indexes


async def test_migration_2_on_a_fresh_database(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    async with SQLiteStore(path) as store:
        assert await store.schema_version() == len(MIGRATIONS) >= 2
        assert await store.counts() == {
            "attempts": 0, "attempt_hourly": 0, "state": 0, "responses": 0, "feedback": 0,
        }  # fmt: skip
    tables, indexes = _schema(path)
    assert {"attempts", "responses", "feedback"} <= tables
    assert {
        "responses_model_ts", "responses_ts", "feedback_response_id", "feedback_model_ts",
    } <= indexes  # fmt: skip


async def test_migration_2_upgrades_a_version_1_database(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "gw.db"
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", MIGRATIONS[:1])
    async with SQLiteStore(path) as store:
        assert await store.schema_version() == 1
        await store.write_attempts([minimal_attempt(H0)])
        await store.save_states([("stats", "alpha", {"n": 1})])
    tables, _ = _schema(path)
    assert "attempts" in tables and "responses" not in tables and "feedback" not in tables

    monkeypatch.setattr(sqlite_module, "MIGRATIONS", MIGRATIONS)
    async with SQLiteStore(path) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        counts = await store.counts()
        assert (counts["attempts"], counts["state"]) == (1, 1)
        assert (counts["responses"], counts["feedback"]) == (0, 0)
        await store.write_responses([response("a", H0)])
        assert await rate(store, "a", H0 + 1, overall=4) is None
        assert (await store.get_response("a"))["answer"] == "answer a"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (1,)
