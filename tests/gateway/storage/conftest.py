"""Store fixtures: `harness` runs a test on a SQLite file, on SQLite in memory and on
PostgreSQL alike (PostgreSQL from $GATEWISE_TEST_POSTGRES_URL, a schema per test; skipped
with the reason when it is unset or unreachable, failed instead when CI is set)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from gateway.storage import SQLiteStore, Store
from tests.gateway.storage.helpers import Clock, Harness
from tests.support.postgres import PgSchema, new_pg_schema


@pytest.fixture(params=["file", "memory", "postgres"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    opened: list[Store] = []
    clock = Clock()
    async with AsyncExitStack() as stack:
        schema = None
        if request.param == "postgres":
            schema = await stack.enter_async_context(new_pg_schema())

        async def make() -> Store:
            if request.param == "memory" and opened:
                return opened[-1]  # an in-memory database ends with its connection: keep it open
            store: Store
            if schema is not None:
                store = schema.store(clock=clock)
            else:
                path = ":memory:" if request.param == "memory" else tmp_path / "gw.db"
                store = SQLiteStore(path, clock=clock)
            if opened:
                await opened[-1].close()
            await store.open()
            opened.append(store)
            return store

        h = Harness(await make(), make, clock)
        try:
            yield h
        finally:
            await opened[-1].close()


@pytest.fixture
async def pg_schema() -> AsyncIterator[PgSchema]:
    """A schema of the test's own on the test PostgreSQL (skipped like `harness`)."""
    async with new_pg_schema() as schema:
        yield schema


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "gw.db") as store:
        yield store
