"""Builders shared by the store tests: a fixed hour, attempts, responses and ratings; the
test PostgreSQL server and a schema of one's own on it.

The `harness`, `pg_schema` and `sqlite_store` fixtures are in conftest.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from gateway.core.types import Attempt
from gateway.storage import PostgresStore, Store
from gateway.storage.postgres import describe_url

H0 = 472_222 * 3600.0  # an hour boundary (2023-11-14 22:00 UTC)
NO_SCORES = {"relevance": None, "accuracy": None, "helpfulness": None, "creativity": None}


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


def minimal_attempt(ts: float) -> Attempt:
    """An attempt with only the required fields set (the responses/feedback tests' rows)."""
    return Attempt(
        request_id=f"req-{ts}", response_id=f"resp-{ts}", attempt=1, model="alpha",
        provider="up", conversation_type="text-to-text", route="auto", optimization=None,
        ok=True, timestamp=ts,
    )  # fmt: skip


def response(response_id: str, ts: float, **fields) -> dict:
    values = {
        "response_id": response_id,
        "request_id": f"req-{response_id}",
        "model": "alpha",
        "provider": "up",
        "conversation_type": "text-to-text",
        "route": "auto",
        "optimization": "accuracy",
        "ts": ts,
        "latency_ms": 120.0,
        "flags": [],
        "auto_score": 1.0,
        "prompt": f"prompt {response_id}",
        "answer": f"answer {response_id}",
    }
    values.update(fields)
    return values


async def rate(
    store: Store,
    response_id: str,
    ts: float,
    comment: str | None = None,
    model: str = "alpha",
    conversation_type: str = "text-to-text",
    **scores: int,
) -> dict[str, int] | None:
    return await store.add_feedback(
        response_id, scores, comment, ts, model, "up", conversation_type
    )


@dataclass
class Clock:
    """The stores' clock (it stamps saved state): `now` until a test moves it."""

    now: float = H0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """A test's store, and `reopen`: close it and open the same database again (in memory,
    where a database ends with its connection, the same store stays open); `clock` is the
    store's."""

    store: Store
    reopen: Callable[[], Awaitable[Store]]
    clock: Clock = field(default_factory=Clock)


# ---- PostgreSQL ----

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
        await admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        await admin.close()
