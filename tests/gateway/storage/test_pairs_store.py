"""Same-prompt pairs and pairwise verdicts (schema version 5), on every store."""

from __future__ import annotations

from gateway.storage.pairs import PAIR_COLUMNS
from tests.gateway.storage.helpers import H0, Harness


def pair(pair_id: str, ts: float, **fields) -> dict:
    values = {
        "pair_id": pair_id, "comparison": "auto-vs-gamma", "route": "auto",
        "a_response_id": f"{pair_id}-a", "b_response_id": f"{pair_id}-b",
        "model_a": "alpha", "model_b": "gamma", "prompt": "user: hi\x00",
        "answer_a": "hello", "answer_b": "hi there", "owner": None, "ts": ts,
        "cost_b": 0.25, "judged_at": None,
    }  # fmt: skip
    values.update(fields)
    return values


def verdict(a: str, b: str, winner: str, ts: float, pair_id: str | None = None) -> dict:
    return {
        "a_response_id": a, "b_response_id": b, "model_a": "alpha", "model_b": "gamma",
        "winner": winner, "pair_id": pair_id, "route": "auto", "ts": ts,
    }  # fmt: skip


async def test_pairs_are_found_by_their_answers_either_way_round(harness: Harness) -> None:
    store = harness.store
    await store.write_pairs([pair("p1", H0), pair("p2", H0 + 1)])
    found = await store.pair_of("p1-b", "p1-a")
    assert found is not None and set(found) == set(PAIR_COLUMNS)
    assert found["pair_id"] == "p1" and found["answer_b"] == "hi there"
    assert found["prompt"] in ("user: hi\x00", "user: hi\ufffd")  # PostgreSQL keeps no NUL
    assert await store.pair_of("p1-a", "p2-b") is None
    store = await harness.reopen()
    assert (await store.pair_of("p2-a", "p2-b"))["cost_b"] == 0.25  # type: ignore[index]


async def test_next_pair_is_the_newest_unjudged_one_the_caller_may_see(harness: Harness) -> None:
    store = harness.store
    await store.write_pairs(
        [pair("old", H0), pair("mine", H0 + 1, owner="team-a"), pair("theirs", H0 + 2,
         owner="team-b")]
    )  # fmt: skip
    admin = await store.next_pair(None, everyone=True)
    assert admin is not None and admin["pair_id"] == "theirs"
    second = await store.next_pair(None, everyone=True, offset=1)
    assert second is not None and second["pair_id"] == "mine"
    mine = await store.next_pair("team-a", everyone=False)
    assert mine is not None and mine["pair_id"] == "mine"
    assert (await store.next_pair("team-a", everyone=False, offset=1))["pair_id"] == "old"  # type: ignore[index]
    assert await store.next_pair("team-a", everyone=False, offset=2) is None
    # A verdict on "mine" takes it out of the queue.
    assert await store.add_verdict(verdict("mine-a", "mine-b", "a", H0 + 5, "mine")) is None
    assert (await store.next_pair("team-a", everyone=False))["pair_id"] == "old"  # type: ignore[index]


async def test_a_later_verdict_replaces_the_earlier_one(harness: Harness) -> None:
    store = harness.store
    assert await store.add_verdict(verdict("x", "y", "a", H0)) is None
    assert await store.add_verdict(verdict("u", "v", "tie", H0)) is None
    # The same two answers given the other way round: the earlier "a" (x) is now "b".
    assert await store.add_verdict(verdict("y", "x", "a", H0 + 1)) == "b"
    assert await store.add_verdict(verdict("x", "y", "tie", H0 + 2)) == "b"
    tallies = await store.verdict_tallies()
    assert sorted((t["winner"], t["count"]) for t in tallies) == [("tie", 2)]
    assert await store.verdict_tallies(route="elsewhere") == []


async def test_pair_counts_per_comparison(harness: Harness) -> None:
    store = harness.store
    await store.write_pairs([pair("p1", H0), pair("p2", H0), pair("q1", H0, comparison="other")])
    await store.add_verdict(verdict("p1-a", "p1-b", "b", H0 + 1, "p1"))
    assert await store.pair_counts() == [
        {"comparison": "auto-vs-gamma", "pairs": 2, "judged": 1},
        {"comparison": "other", "pairs": 1, "judged": 0},
    ]


async def test_pruning_payloads_clears_old_pairs_text_and_stops_offering_them(
    harness: Harness,
) -> None:
    store = harness.store
    await store.write_pairs([pair("old", H0), pair("new", H0 + 100)])
    await store.prune_payloads(H0 + 50)
    old = await store.pair_of("old-a", "old-b")
    assert old is not None and (old["prompt"], old["answer_a"], old["answer_b"]) == (
        None, None, None,
    )  # fmt: skip
    assert (await store.pair_of("new-a", "new-b"))["answer_a"] == "hello"  # type: ignore[index]
    assert (await store.next_pair(None, everyone=True))["pair_id"] == "new"  # type: ignore[index]
    assert await store.next_pair(None, everyone=True, offset=1) is None
