"""Builders shared by the store tests: a fixed hour, attempts, responses and ratings (the
test PostgreSQL server and a schema of one's own on it: tests/support/postgres.py).

The `harness`, `pg_schema` and `sqlite_store` fixtures are in conftest.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.core.types import Attempt
from gateway.storage import Store

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
        "owner": "team-a",
        "experiment": "haiku-vs-mini",
        "arm": "challenger",
        "cost": 0.0021,
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
