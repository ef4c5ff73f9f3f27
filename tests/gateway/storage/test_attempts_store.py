"""Attempts on every store: writing, querying, hourly rollups and timeseries."""

from __future__ import annotations

import pytest

from gateway.storage import Query
from tests.gateway.storage.helpers import H0, Harness, attempt

# ---- behaviour shared by every implementation (the `harness` fixture) ----


async def test_attempt_round_trip(harness: Harness) -> None:
    original = attempt(
        H0 + 1.25, ok=False, error_class="timeout", http_status=504, ttft_ms=12.5,
        stream=True, error_message="upstream timed out", counts_as_failure=True,
        retry_after=3.0, route=None, optimization=None, response_id=None,
    )  # fmt: skip
    await harness.store.write_attempts([original])
    [row] = await harness.store.attempts(Query())
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
    rows = await store.attempts(Query())
    assert [r["ts"] for r in rows] == sorted((r["ts"] for r in rows), reverse=True)
    assert rows[0]["ts"] == H0 + 9
    # Same ts: the later insert (higher id) comes first.
    same = [r for r in rows if r["ts"] == H0 + 3]
    assert [r["request_id"] for r in same] == ["tie", f"req-{H0 + 3}"]

    alpha = await store.attempts(Query(model="alpha"))
    assert [r["ts"] - H0 for r in alpha] == [9, 7, 5, 3, 1]
    embedding = await store.attempts(Query(conversation_type="embedding"))
    assert [r["request_id"] for r in embedding] == ["tie"]
    window = await store.attempts(Query(since=H0 + 2, until=H0 + 5))  # since inclusive, until not
    assert [r["ts"] - H0 for r in window] == [4, 3, 3, 2]
    page = await store.attempts(Query(model="beta", limit=2, offset=1))
    assert [r["ts"] - H0 for r in page] == [6, 4]
    assert await store.attempts(Query(model="nobody")) == []
    assert len(await store.attempts(Query(limit=0))) == 0
    with pytest.raises(ValueError):
        await store.attempts(Query(limit=-1))


async def test_empty_batches_are_fine(harness: Harness) -> None:
    await harness.store.write_attempts([])
    await harness.store.save_states([])
    assert (await harness.store.counts())["attempts"] == 0


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
    assert {r["ts"] for r in await store.attempts(Query())} == {a.timestamp for a in new}
    assert await store.prune(H0 + 7200) == 0  # safe to repeat
    assert (await store.counts())["attempt_hourly"] == 2

    series = await store.timeseries(Query(), bucket_seconds=3600)
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
    [bucket] = await store.timeseries(Query(), bucket_seconds=3600)
    assert bucket["ts"] == H0
    assert (bucket["requests"], bucket["successes"], bucket["failures"]) == (7, 6, 1)
    assert bucket["cost"] == pytest.approx(6.5)
    assert bucket["latency_ms"] == pytest.approx((0 + 10 + 20 + 30 + 40 + 50 + 100) / 7)


async def test_timeseries_has_latency_percentiles_of_successful_raw_attempts(
    harness: Harness,
) -> None:
    store = harness.store
    await store.write_attempts(
        [attempt(H0 + 10 + i * 0.4, latency_ms=float(v)) for i, v in enumerate(range(1, 101))]
        + [attempt(H0 + 20, latency_ms=9999.0, ok=False, counts_as_failure=True)]
        + [attempt(H0 + 70, latency_ms=7.0)]
    )
    first, second = await store.timeseries(Query(), bucket_seconds=60)
    assert (first["latency_p50_ms"], first["latency_p95_ms"]) == (50.0, 95.0)  # failure left out
    assert (second["latency_p50_ms"], second["latency_p95_ms"]) == (7.0, 7.0)
    await store.prune(H0 + 3600)  # a rollup keeps no distribution
    [rolled] = await store.timeseries(Query(), bucket_seconds=3600)
    assert rolled["latency_p50_ms"] is None and rolled["requests"] == 102


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
    minutes = await store.timeseries(Query(), bucket_seconds=60)
    # The rollup lands whole in the bucket starting at its hour; raw rows in their minute.
    assert [(b["ts"] - H0, b["requests"]) for b in minutes] == [(0, 2), (3600, 1), (3660, 2)]
    assert minutes[0]["latency_ms"] == pytest.approx(100.0)
    assert minutes[2]["latency_ms"] == pytest.approx(25.0)
    assert sum(b["requests"] for b in minutes) == 5
    assert sum(b["failures"] for b in minutes) == 1
    assert sum(b["successes"] for b in minutes) == 4
    assert sum(b["cost"] for b in minutes) == pytest.approx(2.5)

    day = await store.timeseries(Query(), bucket_seconds=86400)
    assert sum(b["requests"] for b in day) == 5

    alpha = await store.timeseries(Query(model="alpha"), bucket_seconds=3600)
    assert [(b["ts"] - H0, b["requests"]) for b in alpha] == [(0, 2), (3600, 2)]
    text = await store.timeseries(Query(model="alpha", conversation_type="text-to-text"))
    assert sum(b["requests"] for b in text) == 3
    recent = await store.timeseries(Query(since=H0 + 3600), bucket_seconds=3600)
    assert [(b["ts"] - H0, b["requests"]) for b in recent] == [(3600, 3)]
    older = await store.timeseries(Query(until=H0 + 3600), bucket_seconds=3600)
    assert [(b["ts"] - H0, b["requests"]) for b in older] == [(0, 2)]
    assert await store.timeseries(Query(model="nobody")) == []
    with pytest.raises(ValueError):
        await store.timeseries(Query(), bucket_seconds=0)


async def test_ten_thousand_attempts_in_one_batch(harness: Harness) -> None:
    batch = [attempt(H0 + i * 0.01, request_id=f"r{i}", model=f"m{i % 7}") for i in range(10_000)]
    await harness.store.write_attempts(batch)
    assert (await harness.store.counts())["attempts"] == 10_000
    assert len(await harness.store.attempts(Query(model="m3", limit=10_000))) == 1429


async def test_a_named_batch_is_written_once_however_often_it_is_sent(harness: Harness) -> None:
    store = harness.store
    batch = [attempt(H0 + i, request_id=f"r{i}") for i in range(3)]
    await store.write_attempts(batch, "batch-1")
    await store.write_attempts(batch, "batch-1")  # a retry after a lost commit answer
    await store.write_attempts(batch[:1], "batch-2")
    await store.write_attempts(batch[:1])  # unnamed: written as sent
    rows = await store.attempts(Query(limit=100))
    assert sorted(r["request_id"] for r in rows) == ["r0", "r0", "r0", "r1", "r2"]
