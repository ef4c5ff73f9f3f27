"""Responses, their evaluation aggregates and retention (schema version 2), on every store."""

from __future__ import annotations

import pytest

from gateway.storage import Query
from tests.gateway.storage.helpers import (
    H0,
    NO_SCORES,
    Harness,
    attempt,
    minimal_attempt,
    rate,
    response,
)

# ---- responses ----


async def test_response_round_trip_and_upsert(harness: Harness) -> None:
    store = harness.store
    first = response("a", H0 + 1.5, route=None, optimization=None, auto_score=None)
    await store.write_responses([first])
    assert await store.get_response("a") == first
    assert first["owner"] == "team-a"  # the key that received it, kept
    assert first["arm"] == "challenger"  # and the experiment arm that served it
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
        "owner": None, "experiment": None, "arm": None, "cost": None,
    }  # fmt: skip
    assert type(b["ts"]) is float and type(b["latency_ms"]) is float

    # Stored data is not shared with the caller's objects.
    stored["flags"].append("mutated")
    evaluated["flags"].append("mutated")
    assert (await store.get_response("a"))["flags"] == ["truncated", "slow"]


async def test_a_batch_writing_one_response_twice_keeps_the_last(harness: Harness) -> None:
    store = harness.store
    await store.write_responses(
        [response("d", H0, auto_score=0.1), response("e", H0), response("d", H0, auto_score=0.9)]
    )
    assert (await store.get_response("d"))["auto_score"] == 0.9
    assert (await store.counts())["responses"] == 2


async def test_bad_response_batch_writes_nothing(harness: Harness) -> None:
    store = harness.store
    with pytest.raises(ValueError, match="model"):
        await store.write_responses([response("ok", H0), response("bad", H0, model=None)])
    with pytest.raises(ValueError, match="flags"):
        await store.write_responses([response("ok", H0), response("bad", H0, flags="slow")])
    assert (await store.counts())["responses"] == 0
    await store.write_responses([])
    assert await store.responses(Query()) == []


async def test_responses_filters_paging_and_latest_feedback(harness: Harness) -> None:
    store = harness.store
    await store.write_responses(
        [response(f"r{i}", H0 + i, model="alpha" if i % 2 else "beta") for i in range(10)]
        + [response("tie", H0 + 3, model="e", conversation_type="embedding")]
    )
    rows = await store.responses(Query())
    assert [r["response_id"] for r in rows] == [
        "r9", "r8", "r7", "r6", "r5", "r4", "tie", "r3", "r2", "r1", "r0",
    ]  # fmt: skip
    # Same ts: response_id descending.
    assert [r["response_id"] for r in rows if r["ts"] == H0 + 3] == ["tie", "r3"]
    assert all(r["feedback"] is None for r in rows)
    assert [r["response_id"] for r in await store.responses(Query(model="alpha"))] == [
        "r9", "r7", "r5", "r3", "r1",
    ]  # fmt: skip
    embedding = await store.responses(Query(conversation_type="embedding"))
    assert [r["response_id"] for r in embedding] == ["tie"]
    window = await store.responses(Query(since=H0 + 2, until=H0 + 5))  # since inclusive, until not
    assert [r["response_id"] for r in window] == ["r4", "tie", "r3", "r2"]
    page = await store.responses(Query(model="beta", limit=2, offset=1))
    assert [r["response_id"] for r in page] == ["r6", "r4"]
    assert await store.responses(Query(limit=0)) == []
    with pytest.raises(ValueError):
        await store.responses(Query(offset=-1))

    assert await rate(store, "r9", H0 + 100, "meh", relevance=2, overall=3) is None
    assert await rate(store, "r9", H0 + 50, "better", overall=5, accuracy=4) == {
        "relevance": 2,
        "overall": 3,
    }
    # The latest rating is the one inserted last, even with an earlier ts.
    [r9] = await store.responses(Query(limit=1))
    assert r9["feedback"] == {
        **NO_SCORES, "accuracy": 4, "overall": 5, "comment": "better", "ts": H0 + 50,
    }  # fmt: skip
    assert r9["flags"] == [] and r9["answer"] == "answer r9"


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
    rows = await store.evaluation_aggregates(Query())
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

    [windowed] = await store.evaluation_aggregates(Query(since=H0 + 1, until=H0 + 3))
    assert (windowed["count"], windowed["flags"]) == (2, {"truncated": 1})
    [only_beta] = await store.evaluation_aggregates(Query(model="beta"))
    assert only_beta["count"] == 1
    assert len(await store.evaluation_aggregates(Query(conversation_type="text-to-text"))) == 2
    assert await store.evaluation_aggregates(Query(model="nobody")) == []


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

    trend = await store.evaluation_trend(Query(), bucket_seconds=3600)
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

    [day] = await store.evaluation_trend(Query(), bucket_seconds=86400 * 365)
    assert (day["responses"], day["feedback"], day["flagged"]) == (4, 3, 2)
    beta = await store.evaluation_trend(Query(model="beta"))
    assert [(b["ts"] - H0, b["responses"], b["feedback"]) for b in beta] == [
        (3600, 1, 0), (7200, 0, 1),
    ]  # fmt: skip
    recent = await store.evaluation_trend(Query(since=H0 + 3600, until=H0 + 7200))
    assert [(b["ts"] - H0, b["responses"], b["feedback"]) for b in recent] == [(3600, 1, 1)]
    assert await store.evaluation_trend(Query(model="nobody")) == []
    with pytest.raises(ValueError):
        await store.evaluation_trend(Query(), bucket_seconds=0)


# ---- retention ----


async def test_prune_keeps_responses_and_feedback(harness: Harness) -> None:
    store = harness.store
    await store.write_attempts([minimal_attempt(H0)])
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


# ---- text the database may not hold as it is ----


async def test_a_nul_in_free_text_never_refuses_a_batch(harness: Harness) -> None:
    """PostgreSQL's text cannot hold NUL: the store writes U+FFFD in its place, where SQLite
    keeps it. Either way the batch lands, so one odd answer never blocks the writer."""
    store = harness.store
    await store.write_attempts([attempt(H0, error_message="upstream said \x00no")])
    await store.write_responses(
        [response("nul", H0, prompt="a\x00b", answer="\x00", flags=["odd\x00flag"])]
    )
    await rate(store, "nul", H0 + 1, "bad\x00comment", overall=3)
    await store.save_states([("stats", "model\x00x", {"note": "a\x00b"})])

    def kept(stored: str, written: str) -> bool:
        return stored in (written, written.replace("\x00", "\ufffd"))

    [row] = await store.attempts(Query())
    assert kept(row["error_message"], "upstream said \x00no")
    stored = await store.get_response("nul")
    assert stored is not None
    assert kept(stored["prompt"], "a\x00b") and kept(stored["answer"], "\x00")
    assert kept(stored["flags"][0], "odd\x00flag")
    [rating] = await store.feedback(Query(response_id="nul"))
    assert kept(rating["comment"], "bad\x00comment")
    [(key, data)] = (await store.load_states("stats")).items()
    assert kept(key, "model\x00x") and data == {"note": "a\x00b"}  # JSON escapes it
    assert (await store.counts())["attempts"] == 1


async def test_answers_can_be_listed_for_one_client_key_only(harness: Harness) -> None:
    store = harness.store
    await store.write_responses(
        [response("a1", H0, owner="alice"), response("b1", H0 + 1, owner="bob"),
         response("a2", H0 + 2, owner="alice"), response("n1", H0 + 3, owner=None)]
    )  # fmt: skip
    listed = await store.responses(Query(owner="alice"))
    assert [r["response_id"] for r in listed] == ["a2", "a1"]
    assert len(await store.responses(Query())) == 4
    with pytest.raises(ValueError, match="owner selects answers only"):
        await store.attempts(Query(owner="alice"))
