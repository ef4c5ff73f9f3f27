"""Opening one SQLite file from several processes at once (`gatewise serve --workers N`).

SQLite answers "database is locked" at once, without waiting out busy_timeout, when a
new file is switched to WAL while another connection holds a write lock: two workers on
a new database failed to start in 18 of 100 tries.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway.storage.sqlite as sqlite_store
from gateway.storage import SQLiteStore
from gateway.storage.migrations import MIGRATIONS


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's connection to gw.db, holding the write lock (rollback journal)."""
    db = sqlite3.connect(tmp_path / "gw.db", isolation_level=None)
    db.execute("CREATE TABLE other (x)")
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO other VALUES (1)")
    try:
        yield db
    finally:
        if db.in_transaction:
            db.execute("COMMIT")
        db.close()


async def test_switching_to_wal_waits_for_the_other_writer(
    tmp_path: Path, writer: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused: list[float] = []

    async def pause(seconds: float) -> None:
        paused.append(seconds)
        if writer.in_transaction:
            writer.execute("COMMIT")  # the other process is done
        await asyncio.sleep(0)

    monkeypatch.setattr(sqlite_store, "_pause", pause)
    async with SQLiteStore(tmp_path / "gw.db") as store:
        assert await store.journal_mode() == "wal"
        assert await store.schema_version() == len(MIGRATIONS)
    assert paused  # it was refused once and tried again


async def test_a_lock_held_too_long_still_fails_the_open(
    tmp_path: Path, writer: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "WAL_WAIT_SECONDS", 0.0)
    store = SQLiteStore(tmp_path / "gw.db")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await store.open()
    writer.execute("COMMIT")
    async with store:  # and a later open succeeds
        assert await store.journal_mode() == "wal"


def _open_and_report(path: str, start: multiprocessing.synchronize.Barrier) -> None:
    async def run() -> None:
        store = SQLiteStore(path)
        start.wait()
        async with store:
            assert await store.schema_version() == len(MIGRATIONS)

    asyncio.run(run())


def test_four_processes_open_a_new_database_together(tmp_path: Path) -> None:
    """The whole open, raced for real (a timing test: it caught reads left open once)."""
    context = multiprocessing.get_context("fork")
    for attempt in range(10):
        path = str(tmp_path / f"gw{attempt}.db")
        start = context.Barrier(4)
        processes = [context.Process(target=_open_and_report, args=(path, start)) for _ in range(4)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(30)
        assert [p.exitcode for p in processes] == [0, 0, 0, 0], f"attempt {attempt}"
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT version FROM schema_version").fetchall() == [
                (len(MIGRATIONS),)
            ]
