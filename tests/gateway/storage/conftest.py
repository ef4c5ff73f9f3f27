"""Store fixtures: `harness` runs a test on a SQLite file and on SQLite in memory alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.storage import SQLiteStore, Store
from tests.gateway.storage.helpers import Clock, Harness


@pytest.fixture(params=["file", "memory"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    opened: list[Store] = []
    clock = Clock()

    async def make() -> Store:
        if request.param == "memory" and opened:
            return opened[-1]  # an in-memory database ends with its connection: keep it open
        path = ":memory:" if request.param == "memory" else tmp_path / "gw.db"
        store = SQLiteStore(path, clock=clock)
        if opened:
            await opened[-1].close()
        await store.open()
        opened.append(store)
        return store

    h = Harness(await make(), make, clock)
    yield h
    await opened[-1].close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "gw.db") as store:
        yield store
