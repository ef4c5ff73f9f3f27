"""Responses, ratings and their aggregates (schema version 2), on every store."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import gateway.store.sqlite as sqlite_module
from gateway.store import MemoryStore, SQLiteStore, Store
from gateway.store.migrations import MIGRATIONS
from gateway.types import Attempt

H0 = 472_222 * 3600.0  # an hour boundary (2023-11-14 22:00 UTC)
NO_SCORES = {"relevance": None, "accuracy": None, "helpfulness": None, "creativity": None}


def attempt(ts: float) -> Attempt:
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
class Harness:
    store: Store
    reopen: Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", "memory"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    opened: list[Store] = []

    async def make() -> Store:
        if request.param == "memory":
            store = opened[-1] if opened else MemoryStore()
        else:
            store = SQLiteStore(tmp_path / "gw.db")
        if opened:
            await opened[-1].close()
        await store.open()
        opened.append(store)
        return store

    h = Harness(await make(), make)
    yield h
    await opened[-1].close()


# ---- migration 2 ----


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
        await store.write_attempts([attempt(H0)])
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


# ---- responses ----


async def test_response_round_trip_and_upsert(harness: Harness) -> None:
    store = harness.store
    first = response("a", H0 + 1.5, route=None, optimization=None, auto_score=None)
    await store.write_responses([first])
    assert await store.get_response("a") == first
    assert await store.get_response("missing") is None

    # A later write of the same id replaces flags, score and payload; one row remains.
    evaluated = response("a", H0 + 1.5, flags=["truncated", "slow"], auto_score=0.5, answer=None)
    await store.write_responses([evaluated])
    stored = await store.get_response("a")
    assert stored == evaluated
    assert type(stored["flags"]) is list and stored["ts"] == H0 + 1.5
    assert (await store.counts())["responses"] == 1

    # Defaults for the optional columns; integers come back as floats.
    await store.write_responses(
        [{"response_id": "b", "request_id": "rb", "model": "m", "provider": "p",
          "conversation_type": "embedding", "ts": int(H0), "latency_ms": 7}]
    )  # fmt: skip
    b = await store.get_response("b")
    assert b == {
        "response_id": "b", "request_id": "rb", "model": "m", "provider": "p",
        "conversation_type": "embedding", "route": None, "optimization": None, "ts": H0,
        "latency_ms": 7.0, "flags": [], "auto_score": None, "prompt": None, "answer": None,
    }  # fmt: skip
    assert type(b["ts"]) is float and type(b["latency_ms"]) is float

    # Stored data is not shared with the caller's objects.
    stored["flags"].append("mutated")
    evaluated["flags"].append("mutated")
    assert (await store.get_response("a"))["flags"] == ["truncated", "slow"]


async def test_bad_response_batch_writes_nothing(harness: Harness) -> None:
    store = harness.store
    with pytest.raises(ValueError, match="model"):
        await store.write_responses([response("ok", H0), response("bad", H0, model=None)])
    with pytest.raises(ValueError, match="flags"):
        await store.write_responses([response("ok", H0), response("bad", H0, flags="slow")])
    assert (await store.counts())["responses"] == 0
    await store.write_responses([])
    assert await store.responses() == []


async def test_responses_filters_paging_and_latest_feedback(harness: Harness) -> None:
    store = harness.store
    await store.write_responses(
        [response(f"r{i}", H0 + i, model="alpha" if i % 2 else "beta") for i in range(10)]
        + [response("tie", H0 + 3, model="e", conversation_type="embedding")]
    )
    rows = await store.responses()
    assert [r["response_id"] for r in rows] == [
        "r9", "r8", "r7", "r6", "r5", "r4", "tie", "r3", "r2", "r1", "r0",
    ]  # fmt: skip
    # Same ts: response_id descending.
    assert [r["response_id"] for r in rows if r["ts"] == H0 + 3] == ["tie", "r3"]
    assert all(r["feedback"] is None for r in rows)
    assert [r["response_id"] for r in await store.responses(model="alpha")] == [
        "r9", "r7", "r5", "r3", "r1",
    ]  # fmt: skip
    assert [r["response_id"] for r in await store.responses(conversation_type="embedding")] == [
        "tie"
    ]
    window = await store.responses(since=H0 + 2, until=H0 + 5)  # since inclusive, until not
    assert [r["response_id"] for r in window] == ["r4", "tie", "r3", "r2"]
    page = await store.responses(model="beta", limit=2, offset=1)
    assert [r["response_id"] for r in page] == ["r6", "r4"]
    assert await store.responses(limit=0) == []
    with pytest.raises(ValueError):
        await store.responses(offset=-1)

    assert await rate(store, "r9", H0 + 100, "meh", relevance=2, overall=3) is None
    assert await rate(store, "r9", H0 + 50, "better", overall=5, accuracy=4) == {
        "relevance": 2,
        "overall": 3,
    }
    # The latest rating is the one inserted last, even with an earlier ts.
    [r9] = await store.responses(limit=1)
    assert r9["feedback"] == {
        **NO_SCORES, "accuracy": 4, "overall": 5, "comment": "better", "ts": H0 + 50,
    }  # fmt: skip
    assert r9["flags"] == [] and r9["answer"] == "answer r9"


# ---- feedback ----


async def test_add_feedback_returns_previous_scores_and_keeps_history(harness: Harness) -> None:
    store = harness.store
    await store.write_responses([response("a", H0), response("b", H0)])
    assert await rate(store, "a", H0 + 10, "first", relevance=4, overall=4) is None
    assert await rate(store, "b", H0 + 11, overall=1) is None
    previous = await rate(store, "a", H0 + 20, "second", overall=2, creativity=5)
    assert previous == {"relevance": 4, "overall": 4}
    assert await rate(store, "a", H0 + 30, overall=3) == {"overall": 2, "creativity": 5}

    history = await store.feedback(response_id="a")
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
    ids = [r["id"] for r in await store.feedback()]
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
    assert [r["ts"] - H0 for r in await store.feedback()] == [5, 4, 3, 2, 2, 1, 0]
    assert [r["response_id"] for r in await store.feedback(model="alpha")] == ["r5", "r3", "r1"]
    assert [r["response_id"] for r in await store.feedback(conversation_type="embedding")] == ["e"]
    window = await store.feedback(since=H0 + 2, until=H0 + 4)
    assert [r["response_id"] for r in window] == ["r3", "e", "r2"]  # same ts: newer id first
    assert [r["response_id"] for r in await store.feedback(limit=2, offset=1)] == ["r4", "r3"]
    assert await store.feedback(response_id="nope") == []
    with pytest.raises(ValueError):
        await store.feedback(limit=-1)


async def test_feedback_aggregates_use_the_latest_rating(harness: Harness) -> None:
    store = harness.store
    await rate(store, "a", H0 + 1, relevance=1, overall=1)
    await rate(store, "a", H0 + 2, overall=5, accuracy=4)  # replaces the first
    await rate(store, "b", H0 + 3, overall=3, relevance=3)
    await rate(store, "c", H0 + 4, model="beta", helpfulness=2)
    await rate(store, "d", H0 + 5, conversation_type="embedding", overall=4)

    rows = await store.feedback_aggregates()
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

    assert [r["model"] for r in await store.feedback_aggregates(model="beta")] == ["beta"]
    only_text = await store.feedback_aggregates(conversation_type="text-to-text")
    assert sum(r["count"] for r in only_text) == 3
    # The window selects latest ratings by their ts: a's latest (H0 + 2) is outside.
    [late] = await store.feedback_aggregates(since=H0 + 3, until=H0 + 4)
    assert (late["count"], late["overall"]) == (1, pytest.approx(3.0))
    assert await store.feedback_aggregates(until=H0 + 2) == []
    assert await store.feedback_aggregates(model="nobody") == []


async def test_concurrent_feedback_loses_nothing(harness: Harness) -> None:
    store = harness.store
    await store.write_responses([response("same", H0), *(response(f"d{i}", H0) for i in range(50))])
    distinct = [rate(store, f"d{i}", H0 + 1, overall=3) for i in range(50)]
    same = [rate(store, "same", H0 + 1, relevance=i) for i in range(50)]
    results = await asyncio.gather(*distinct, *same)

    assert all(r is None for r in results[:50])
    assert (await store.counts())["feedback"] == 100
    assert len(await store.feedback(response_id="same", limit=1000)) == 50
    # Serialised: exactly one call saw no predecessor, and every other rating was seen as
    # "previous" exactly once - by the call that came right after it.
    previous = results[50:]
    assert previous.count(None) == 1
    seen = sorted(p["relevance"] for p in previous if p is not None)
    latest = (await store.feedback(response_id="same", limit=1))[0]["relevance"]
    assert seen == sorted(set(range(50)) - {latest})
    [agg] = await store.feedback_aggregates()
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
    assert [r["comment"] for r in await store.feedback()] == [None, "kept"]
    [row] = await store.responses()
    assert row["flags"] == ["refusal"] and row["feedback"]["overall"] == 5


# ---- evaluation ----


async def test_evaluation_aggregates(harness: Harness) -> None:
    store = harness.store
    await store.write_responses(
        [
            response("a", H0, flags=["truncated", "slow"], auto_score=0.5),
            response("b", H0 + 1, flags=["truncated", "truncated"], auto_score=0.6),
            response("c", H0 + 2, flags=[], auto_score=None),
            response("d", H0 + 3, flags=[], auto_score=1.0),
            response("e", H0 + 4, model="beta", flags=["refusal"], auto_score=0.4),
            response("f", H0 + 5, conversation_type="embedding", auto_score=None),
        ]
    )
    rows = await store.evaluation_aggregates()
    assert [(r["model"], r["conversation_type"]) for r in rows] == [
        ("alpha", "embedding"), ("alpha", "text-to-text"), ("beta", "text-to-text"),
    ]  # fmt: skip
    embedding, alpha, beta = rows
    assert (alpha["count"], alpha["scored"], alpha["flagged"]) == (4, 3, 2)
    assert alpha["auto_score"] == pytest.approx((0.5 + 0.6 + 1.0) / 3)
    assert alpha["flags"] == {"slow": 1, "truncated": 2}  # b's duplicate counts once
    assert beta["flags"] == {"refusal": 1} and beta["auto_score"] == pytest.approx(0.4)
    assert embedding == {
        "model": "alpha", "conversation_type": "embedding", "count": 1, "scored": 0,
        "auto_score": None, "flagged": 0, "flags": {},
    }  # fmt: skip

    [windowed] = await store.evaluation_aggregates(since=H0 + 1, until=H0 + 3)
    assert (windowed["count"], windowed["flags"]) == (2, {"truncated": 1})
    [only_beta] = await store.evaluation_aggregates(model="beta")
    assert only_beta["count"] == 1
    assert len(await store.evaluation_aggregates(conversation_type="text-to-text")) == 2
    assert await store.evaluation_aggregates(model="nobody") == []


async def test_evaluation_trend(harness: Harness) -> None:
    store = harness.store
    await store.write_responses(
        [
            response("a", H0 + 10, flags=["slow"], auto_score=0.5),
            response("b", H0 + 20, auto_score=1.0),
            response("c", H0 + 3600 + 5, auto_score=None, model="beta"),
            response("d", H0 + 7200 * 2, flags=["empty"], auto_score=0.0),
        ]
    )
    await rate(store, "a", H0 + 30, overall=1)
    await rate(store, "a", H0 + 3600 + 30, overall=5)  # re-rated an hour later: moves there
    await rate(store, "b", H0 + 40, relevance=4)  # no overall: counted, not averaged
    await rate(store, "x", H0 + 7200 + 1, overall=2, model="beta")  # a bucket with ratings only

    trend = await store.evaluation_trend(bucket_seconds=3600)
    assert [b["ts"] - H0 for b in trend] == [0, 3600, 7200, 14400]
    first, second, third, fourth = trend
    assert first == {
        "ts": H0, "responses": 2, "auto_score": pytest.approx(0.75), "flagged": 1,
        "feedback": 1, "overall": None,
    }  # fmt: skip
    assert (second["responses"], second["auto_score"], second["flagged"]) == (1, None, 0)
    assert (second["feedback"], second["overall"]) == (1, pytest.approx(5.0))
    assert (third["responses"], third["auto_score"], third["feedback"]) == (0, None, 1)
    assert third["overall"] == pytest.approx(2.0)
    assert (fourth["responses"], fourth["flagged"], fourth["auto_score"]) == (1, 1, 0.0)
    assert type(first["ts"]) is float

    [day] = await store.evaluation_trend(bucket_seconds=86400 * 365)
    assert (day["responses"], day["feedback"], day["flagged"]) == (4, 3, 2)
    beta = await store.evaluation_trend(model="beta")
    assert [(b["ts"] - H0, b["responses"], b["feedback"]) for b in beta] == [
        (3600, 1, 0), (7200, 0, 1),
    ]  # fmt: skip
    recent = await store.evaluation_trend(since=H0 + 3600, until=H0 + 7200)
    assert [(b["ts"] - H0, b["responses"], b["feedback"]) for b in recent] == [(3600, 1, 1)]
    assert await store.evaluation_trend(model="nobody") == []
    with pytest.raises(ValueError):
        await store.evaluation_trend(bucket_seconds=0)


# ---- retention ----


async def test_prune_keeps_responses_and_feedback(harness: Harness) -> None:
    store = harness.store
    await store.write_attempts([attempt(H0)])
    await store.write_responses([response("old", H0)])
    await rate(store, "old", H0 + 1, overall=3)
    assert await store.prune(H0 + 86400) == 1
    counts = await store.counts()
    assert (counts["attempts"], counts["responses"], counts["feedback"]) == (0, 1, 1)
    assert (await store.get_response("old"))["prompt"] == "prompt old"


async def test_prune_payloads_nulls_only_old_payloads(harness: Harness) -> None:
    store = harness.store
    await store.write_responses(
        [
            response("old", H0, flags=["slow"], auto_score=0.5),
            response("old-empty", H0 + 1, prompt=None, answer=None),
            response("old-half", H0 + 2, prompt=None),
            response("edge", H0 + 100),  # ts == cut-off: kept
            response("new", H0 + 200),
        ]
    )
    await rate(store, "old", H0 + 5, overall=4)
    assert await store.prune_payloads(H0 + 100) == 2
    old = await store.get_response("old")
    assert (old["prompt"], old["answer"]) == (None, None)
    assert (old["flags"], old["auto_score"], old["model"]) == (["slow"], 0.5, "alpha")
    assert (await store.get_response("old-half"))["answer"] is None
    for rid in ("edge", "new"):
        kept = await store.get_response(rid)
        assert (kept["prompt"], kept["answer"]) == (f"prompt {rid}", f"answer {rid}")
    assert await store.prune_payloads(H0 + 100) == 0  # nothing left to clear
    counts = await store.counts()
    assert (counts["responses"], counts["feedback"]) == (5, 1)
