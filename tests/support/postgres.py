"""The test PostgreSQL server ($GATEWISE_TEST_POSTGRES_URL) and a schema of one's own on it.

Where the variable is unset or the server unreachable, a test that asks for it skips with
the reason; where CI is set it fails instead: CI must run every backend.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from gateway.storage import PostgresStore
from gateway.storage.postgres import describe_url

__all__ = ["POSTGRES_URL_ENV", "PgSchema", "new_pg_schema", "postgres_url"]

POSTGRES_URL_ENV = "GATEWISE_TEST_POSTGRES_URL"  # e.g. postgresql://postgres@127.0.0.1/test
_unusable: dict[str, str] = {}  # url -> why it cannot be used ("" once it could)


def _unavailable(reason: str) -> None:
    """Skip the test, visibly; where CI is set, fail it: CI must run every backend."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


async def postgres_url() -> str:
    """The test server's url: skip the test (fail it in CI) when unset or unreachable."""
    url = os.environ.get(POSTGRES_URL_ENV, "")
    if not url:
        _unavailable(f"{POSTGRES_URL_ENV} is not set")
    if url not in _unusable:
        try:
            conn = await asyncpg.connect(url, timeout=10)
            await conn.close()
            _unusable[url] = ""
        except Exception as exc:
            _unusable[url] = (
                f"PostgreSQL at {describe_url(url)} ({POSTGRES_URL_ENV}) is unreachable: "
                f"{type(exc).__name__}"
            )
    if _unusable[url]:
        _unavailable(_unusable[url])
    return url


@dataclass
class PgSchema:
    """A schema of the test's own on the test server: stores and connections there."""

    url: str
    name: str

    @property
    def settings(self) -> dict[str, str]:
        return {"search_path": self.name}

    def store(self, **options: Any) -> PostgresStore:
        options.setdefault("pool_size", 4)
        return PostgresStore(self.url, server_settings=self.settings, **options)

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.url, server_settings=self.settings)

    @property
    def gateway_url(self) -> str:
        """The storage url a gateway process uses to work in this schema."""
        return f"{self.url}?search_path={self.name}"


@asynccontextmanager
async def new_pg_schema() -> AsyncIterator[PgSchema]:
    """A new, empty, uniquely named schema, dropped with everything in it afterwards."""
    url = await postgres_url()
    name = f"gw_test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"CREATE SCHEMA {name}")
        yield PgSchema(url, name)
    finally:
        # A gateway still writing there (a fixture torn down after this one) can make the
        # drop a deadlock victim: it is the test's clean-up, so it tries again.
        for attempt in range(5):
            try:
                await admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
                break
            except asyncpg.exceptions.DeadlockDetectedError:
                if attempt == 4:
                    raise
        await admin.close()
