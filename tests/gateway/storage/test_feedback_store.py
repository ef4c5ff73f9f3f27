"""Ratings (feedback) and their aggregates (schema version 2), on every store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.storage import Query, SQLiteStore
from tests.gateway.storage.helpers import H0, Harness, rate, response

# ---- feedback ----


async def test_add_feedback_returns_previous_scores_and_keeps_history(harness: Harness) -> None:
    store = harness.store
    await store.write_responses([response("a", H0), response("b", H0)])
    assert await rate(store, "a", H0 + 10, "first", relevance=4, overall=4) is None
    assert await rate(store, "b", H0 + 11, overall=1) is None
    previous = await rate(store, "a", H0 + 20, "second", overall=2, creativity=5)
    assert previous == {"relevance": 4, "overall": 4}
    assert await rate(store, "a", H0 + 30, overall=3) == {"overall": 2, "creativity": 5}

    history = await store.feedback(Query(response_id="a"))
    assert [(r["overall"], r["comment"]) for r in history] == [(3, None), (2, "second"),
                                                              (4, "first")]  # fmt: skip
    first = history[-1]
    assert isinstance(first.pop("id"), int)
    assert first == {
        "response_id": "a", "model": "alpha", "provider": "up",
        "conversation_type": "text-to-text", "relevance": 4, "accuracy": None,
        "helpfulness": None, "creativity": None, "overall": 4, "comment": "first",
        "ts": H0 + 10,
    }  # fmt: skip
    ids = [r["id"] for r in await store.feedback(Query())]
    assert len(ids) == 4 and ids == sorted(ids, reverse=True)
    assert (await store.counts())["feedback"] == 4

    # A rating may arrive before its response row.
    assert await rate(store, "unknown-yet", H0, overall=5) is None
    with pytest.raises(ValueError, match="unknown feedback dimension"):
        await rate(store, "a", H0, vibes=5)
    with pytest.raises(ValueError, match="int"):
        await rate(store, "a", H0, overall="5")
    assert (await store.counts())["feedback"] == 5


async def test_feedback_filters_and_paging(harness: Harness) -> None:
    store = harness.store
    for i in range(6):
        model = "alpha" if i % 2 else "beta"
        await rate(store, f"r{i}", H0 + i, model=model, overall=i % 5 + 1)
    await rate(store, "e", H0 + 2, conversation_type="embedding", model="e", overall=1)
    assert [r["ts"] - H0 for r in await store.feedback(Query())] == [5, 4, 3, 2, 2, 1, 0]

    async def rated(**selected: Any) -> list[str]:
        return [r["response_id"] for r in await store.feedback(Query(**selected))]

    assert await rated(model="alpha") == ["r5", "r3", "r1"]
    assert await rated(conversation_type="embedding") == ["e"]
    assert await rated(since=H0 + 2, until=H0 + 4) == ["r3", "e", "r2"]  # same ts: newer id first
    assert await rated(limit=2, offset=1) == ["r4", "r3"]
    assert await store.feedback(Query(response_id="nope")) == []
    with pytest.raises(ValueError):
        await store.feedback(Query(limit=-1))


async def test_feedback_aggregates_use_the_latest_rating(harness: Harness) -> None:
    store = harness.store
    await rate(store, "a", H0 + 1, relevance=1, overall=1)
    await rate(store, "a", H0 + 2, overall=5, accuracy=4)  # replaces the first
    await rate(store, "b", H0 + 3, overall=3, relevance=3)
    await rate(store, "c", H0 + 4, model="beta", helpfulness=2)
    await rate(store, "d", H0 + 5, conversation_type="embedding", overall=4)

    rows = await store.feedback_aggregates(Query())
    assert [(r["model"], r["conversation_type"], r["count"]) for r in rows] == [
        ("alpha", "embedding", 1), ("alpha", "text-to-text", 2), ("beta", "text-to-text", 1),
    ]  # fmt: skip
    alpha = rows[1]
    assert alpha["overall"] == pytest.approx(4.0)
    assert alpha["relevance"] == pytest.approx(3.0)  # only b's latest rating has relevance
    assert alpha["accuracy"] == pytest.approx(4.0)
    assert alpha["helpfulness"] is None and alpha["creativity"] is None
    assert alpha["samples"] == {
        "relevance": 1, "accuracy": 1, "helpfulness": 0, "creativity": 0, "overall": 2,
    }  # fmt: skip
    assert rows[2]["helpfulness"] == pytest.approx(2.0) and rows[2]["overall"] is None

    assert [r["model"] for r in await store.feedback_aggregates(Query(model="beta"))] == ["beta"]
    only_text = await store.feedback_aggregates(Query(conversation_type="text-to-text"))
    assert sum(r["count"] for r in only_text) == 3
    # The window selects latest ratings by their ts: a's latest (H0 + 2) is outside.
    [late] = await store.feedback_aggregates(Query(since=H0 + 3, until=H0 + 4))
    assert (late["count"], late["overall"]) == (1, pytest.approx(3.0))
    assert await store.feedback_aggregates(Query(until=H0 + 2)) == []
    assert await store.feedback_aggregates(Query(model="nobody")) == []


async def test_concurrent_feedback_loses_nothing(harness: Harness) -> None:
    store = harness.store
    await store.write_responses([response("same", H0), *(response(f"d{i}", H0) for i in range(50))])
    distinct = [rate(store, f"d{i}", H0 + 1, overall=3) for i in range(50)]
    same = [rate(store, "same", H0 + 1, relevance=i) for i in range(50)]
    results = await asyncio.gather(*distinct, *same)

    assert all(r is None for r in results[:50])
    assert (await store.counts())["feedback"] == 100
    assert len(await store.feedback(Query(response_id="same", limit=1000))) == 50
    # Serialised: exactly one call saw no predecessor, and every other rating was seen as
    # "previous" exactly once - by the call that came right after it.
    previous = results[50:]
    assert previous.count(None) == 1
    seen = sorted(p["relevance"] for p in previous if p is not None)
    latest = (await store.feedback(Query(response_id="same", limit=1)))[0]["relevance"]
    assert seen == sorted(set(range(50)) - {latest})
    [agg] = await store.feedback_aggregates(Query())
    assert agg["count"] == 51


async def test_concurrent_feedback_from_two_connections(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    async with SQLiteStore(path) as one, SQLiteStore(path) as two:
        calls = [rate(one if i % 2 else two, "same", H0, relevance=i) for i in range(40)]
        previous = await asyncio.gather(*calls)
        assert (await one.counts())["feedback"] == 40
    assert previous.count(None) == 1
    assert len({p["relevance"] for p in previous if p is not None}) == 39


async def test_feedback_survives_reopen(harness: Harness) -> None:
    await harness.store.write_responses([response("a", H0, flags=["refusal"])])
    await rate(harness.store, "a", H0 + 1, "kept", overall=2)
    store = await harness.reopen()
    assert await rate(store, "a", H0 + 2, overall=5) == {"overall": 2}
    assert [r["comment"] for r in await store.feedback(Query())] == [None, "kept"]
    [row] = await store.responses(Query())
    assert row["flags"] == ["refusal"] and row["feedback"]["overall"] == 5
