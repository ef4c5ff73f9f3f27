"""Ratings by response id: validation with clear 422s, 404 for unknown answers, durability
before the reply, and re-ratings that replace the first in the aggregates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.core.errors import GatewayError
from gateway.core.types import ResponseRecord
from gateway.http.errors import status_of
from gateway.routing.feedback import FeedbackService, ResponseIndex, parse_feedback
from gateway.routing.tracker import Tracker
from gateway.storage import Query, SQLiteStore

CTYPE = "text-to-text"


def rejected(payload: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse_feedback(payload)
    assert status_of(caught.value)[0] == 422
    assert caught.value.code == "invalid_feedback"
    return caught.value


# ---- parse_feedback ----------------------------------------------------------------------


def test_valid_feedback_is_parsed() -> None:
    payload = {"response_id": " chatcmpl-1 ", "overall": 4, "accuracy": 5.0, "comment": "nice"}
    assert parse_feedback(payload) == ("chatcmpl-1", {"accuracy": 5, "overall": 4}, "nice")


def test_empty_comment_becomes_none() -> None:
    assert parse_feedback({"response_id": "r", "creativity": 1, "comment": ""})[2] is None


def test_unknown_field_is_named() -> None:
    error = rejected({"response_id": "r", "overall": 3, "stars": 5})
    assert "stars" in error.message
    assert "Unknown field" in error.message
    assert error.param == "stars"


@pytest.mark.parametrize("value", [0, 6, -1, 2.5])
def test_out_of_range_or_fractional_scores_are_refused(value: Any) -> None:
    error = rejected({"response_id": "r", "overall": value})
    assert error.param == "overall"
    assert "'overall'" in error.message
    assert "1" in error.message and "5" in error.message


@pytest.mark.parametrize("value", ["5", True, False, [5], {"v": 5}])
def test_non_numeric_scores_are_refused(value: Any) -> None:
    error = rejected({"response_id": "r", "helpfulness": value})
    assert error.param == "helpfulness"
    assert "whole number from 1 to 5" in error.message


def test_a_rating_is_required() -> None:
    error = rejected({"response_id": "r", "comment": "no score"})
    assert "at least one rating" in error.message
    for dimension in ("relevance", "accuracy", "helpfulness", "creativity", "overall"):
        assert dimension in error.message


@pytest.mark.parametrize("payload", [{"overall": 3}, {"response_id": "", "overall": 3},
                                     {"response_id": "  ", "overall": 3},
                                     {"response_id": 12, "overall": 3}])  # fmt: skip
def test_response_id_is_required(payload: dict[str, Any]) -> None:
    error = rejected(payload)
    assert error.param == "response_id"
    assert "'response_id' is required" in error.message


def test_comment_too_long_or_not_a_string() -> None:
    error = rejected({"response_id": "r", "overall": 3, "comment": "x" * 4001})
    assert error.param == "comment"
    assert "longer than 4000" in error.message
    assert parse_feedback({"response_id": "r", "overall": 3, "comment": "x" * 4000})[2]
    assert rejected({"response_id": "r", "overall": 3, "comment": 7}).param == "comment"


@pytest.mark.parametrize("payload", [[], "text", None, 5])
def test_body_must_be_an_object(payload: Any) -> None:
    assert "JSON object" in rejected(payload).message


# ---- FeedbackService ---------------------------------------------------------------------


def record(rid: str, model: str = "alpha") -> ResponseRecord:
    return ResponseRecord(rid, "req_" + rid, model, "up", CTYPE, "auto", "accuracy", 1000.0, 12.0)


class Clock:
    def __init__(self) -> None:
        self.now = 2000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture
async def store() -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore() as store:
        yield store


@pytest.fixture
def index() -> ResponseIndex:
    return ResponseIndex(size=2)


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


@pytest.fixture
def service(index: ResponseIndex, store: SQLiteStore, tracker: Tracker) -> FeedbackService:
    return FeedbackService(index, store, tracker, clock=Clock())


async def test_unknown_response_id_is_404(service: FeedbackService, store: SQLiteStore) -> None:
    with pytest.raises(GatewayError) as caught:
        await service.submit({"response_id": "chatcmpl-nope", "overall": 5})
    assert status_of(caught.value)[0] == 404
    assert caught.value.code == "response_not_found"
    assert "chatcmpl-nope" in caught.value.message
    assert await store.feedback(Query()) == []


async def test_invalid_payload_is_422_before_lookup(service: FeedbackService) -> None:
    with pytest.raises(GatewayError) as caught:
        await service.submit({"response_id": "chatcmpl-nope", "overall": 9})
    assert status_of(caught.value)[0] == 422


async def test_rating_is_stored_before_submit_returns(
    service: FeedbackService, index: ResponseIndex, store: SQLiteStore, tracker: Tracker
) -> None:
    index.add(record("r1"))
    reply = await service.submit({"response_id": "r1", "overall": 4, "comment": "good"})
    assert reply == {
        "object": "feedback",
        "response_id": "r1",
        "model": "alpha",
        "provider": "up",
        "conversation_type": CTYPE,
        "scores": {"overall": 4},
        "comment": "good",
        "replaced_previous": False,
    }
    rows = await store.feedback(Query())
    assert [(r["response_id"], r["overall"], r["comment"]) for r in rows] == [("r1", 4, "good")]
    stored = await store.get_response("r1")  # the answer is durable too, for joins
    assert stored is not None and stored["model"] == "alpha"
    assert index.get("r1").stored is True
    stats = tracker.stats("alpha", CTYPE)
    assert stats is not None and stats.feedback_mean("overall") == 4


async def test_rerating_replaces_in_aggregates_but_keeps_history(
    service: FeedbackService, index: ResponseIndex, store: SQLiteStore, tracker: Tracker
) -> None:
    index.add(record("r1"))
    index.add(record("r2"))
    await service.submit({"response_id": "r2", "accuracy": 5})
    await service.submit({"response_id": "r1", "overall": 2, "accuracy": 1})
    again = await service.submit({"response_id": "r1", "overall": 5})
    assert again["replaced_previous"] is True
    stats = tracker.stats("alpha", CTYPE)
    assert stats is not None
    assert stats.feedback_mean("overall") == 5  # the second rating only
    assert stats.feedback["overall"][1] == 1
    assert stats.feedback_mean("accuracy") == 5  # r1's accuracy 1 was withdrawn; r2 stays
    assert stats.feedback["accuracy"][1] == 1
    history = await store.feedback(Query(response_id="r1"))
    assert [(r["overall"], r["accuracy"]) for r in history] == [(5, None), (2, 1)]
    [aggregate] = await store.feedback_aggregates(Query(model="alpha"))
    assert aggregate["count"] == 2
    assert aggregate["overall"] == 5
    assert aggregate["accuracy"] == 5


async def test_lookup_falls_back_to_the_store(
    service: FeedbackService, index: ResponseIndex, store: SQLiteStore, tracker: Tracker
) -> None:
    old = record("old", model="beta")
    old.flags = ["truncated"]
    old.auto_score = 0.6
    await store.write_responses([old.to_row()])
    index.add(record("n1"))
    index.add(record("n2"))  # the index holds 2: "old" was never (or no longer) in it
    assert index.get("old") is None
    found = await service.lookup("old")
    assert found is not None
    assert (found.model, found.flags, found.auto_score, found.stored) == (
        "beta",
        ["truncated"],
        0.6,
        True,
    )
    reply = await service.submit({"response_id": "old", "creativity": 3})
    assert reply["model"] == "beta"
    assert [r["creativity"] for r in await store.feedback(Query(model="beta"))] == [3]
    stats = tracker.stats("beta", CTYPE)
    assert stats is not None and stats.feedback_mean("creativity") == 3


async def test_forgotten_by_the_index_after_being_stored(
    service: FeedbackService, index: ResponseIndex, store: SQLiteStore
) -> None:
    index.add(record("first"))
    await service.submit({"response_id": "first", "overall": 1})
    index.add(record("x"))
    index.add(record("y"))
    assert index.get("first") is None
    second = await service.submit({"response_id": "first", "overall": 3})
    assert second["replaced_previous"] is True
    assert len(await store.feedback(Query(response_id="first"))) == 2


class SlowFirstAnswer(SQLiteStore):
    """Decides `previous` at once (as a store must) but answers the first call late."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.holding = asyncio.Event()  # the first answer is being held back
        self.calls = 0

    async def add_feedback(self, *args: Any, **kwargs: Any) -> dict[str, int] | None:
        previous = await super().add_feedback(*args, **kwargs)
        self.calls += 1
        if self.calls == 1:
            self.holding.set()
            await self.release.wait()
        return previous


async def test_ratings_reach_the_tracker_in_the_order_the_store_took_them(
    index: ResponseIndex, tracker: Tracker
) -> None:
    async with SlowFirstAnswer() as store:
        service = FeedbackService(index, store, tracker)
        index.add(record("r1"))
        first = asyncio.create_task(service.submit({"response_id": "r1", "overall": 2}))
        second = asyncio.create_task(service.submit({"response_id": "r1", "overall": 4}))
        await asyncio.wait_for(store.holding.wait(), 5)
        await asyncio.wait({second}, timeout=0.2)  # let the second rating run as far as it can
        store.release.set()
        await asyncio.gather(first, second)
    stats = tracker.stats("alpha", "text-to-text")
    assert stats is not None
    assert stats.feedback["overall"] == [4.0, 1]  # the re-rating replaced the first one


# ---- beside sibling workers: their answers reach the store within a flush ---------------


class SiblingWriter:
    """A sibling worker's writer: it stores `record` on its n-th flush (our n-th pause)."""

    def __init__(self, store: SQLiteStore, record: ResponseRecord, flushes: int) -> None:
        self.store, self.record, self.flushes = store, record, flushes
        self.paused: list[float] = []

    async def pause(self, seconds: float) -> None:
        self.paused.append(seconds)
        if len(self.paused) == self.flushes:
            await self.store.write_responses([self.record.to_row()])


async def test_a_rating_for_a_sibling_workers_answer_waits_for_its_flush(
    index: ResponseIndex, store: SQLiteStore, tracker: Tracker
) -> None:
    sibling = SiblingWriter(store, record("theirs", model="beta"), flushes=3)
    service = FeedbackService(
        index, store, tracker, Clock(), settle=lambda: 1.5, pause=sibling.pause
    )
    reply = await service.submit({"response_id": "theirs", "overall": 5})
    assert reply["model"] == "beta"
    assert sibling.paused == [FeedbackService.STEP] * 3  # it looked again after each pause
    assert [r["overall"] for r in await store.feedback(Query(model="beta"))] == [5]


async def test_an_unknown_id_beside_siblings_is_404_after_the_settle_time(
    index: ResponseIndex, store: SQLiteStore, tracker: Tracker
) -> None:
    sibling = SiblingWriter(store, record("never"), flushes=10**6)
    service = FeedbackService(
        index, store, tracker, Clock(), settle=lambda: 1.5, pause=sibling.pause
    )
    with pytest.raises(GatewayError) as caught:
        await service.submit({"response_id": "chatcmpl-nope", "overall": 5})
    assert status_of(caught.value)[0] == 404
    assert sum(sibling.paused) == pytest.approx(1.5)


async def test_only_so_many_unknown_ids_wait_at_once(
    index: ResponseIndex, store: SQLiteStore, tracker: Tracker
) -> None:
    """Hostile or mistaken ratings of ids nobody gave cannot each hold a request open."""
    gate = asyncio.Event()
    waiting: list[float] = []

    async def pause(seconds: float) -> None:
        waiting.append(seconds)
        await gate.wait()

    service = FeedbackService(index, store, tracker, Clock(), settle=lambda: 1.5, pause=pause)
    held = [
        asyncio.create_task(service.lookup(f"nope-{i}"))
        for i in range(FeedbackService.MAX_SETTLING)
    ]
    while len(waiting) < FeedbackService.MAX_SETTLING:
        await asyncio.sleep(0)
    assert await service.lookup("one-more") is None  # at once: no pause of its own
    assert len(waiting) == FeedbackService.MAX_SETTLING
    gate.set()
    assert await asyncio.gather(*held) == [None] * FeedbackService.MAX_SETTLING


async def test_a_single_worker_does_not_wait_for_unknown_ids(
    service: FeedbackService, store: SQLiteStore
) -> None:
    async def pause(seconds: float) -> None:
        raise AssertionError("a lone worker has no sibling to wait for")

    service.pause = pause
    with pytest.raises(GatewayError) as caught:
        await service.submit({"response_id": "chatcmpl-nope", "overall": 5})
    assert status_of(caught.value)[0] == 404


# ---- the index of recent answers ---------------------------------------------------


def indexed(rid: str) -> ResponseRecord:
    return ResponseRecord(rid, "req-" + rid, "alpha", "up", "text-to-text", None, None, 1.0, 2.0)


def test_the_index_keeps_the_latest_records_and_forgets_the_oldest() -> None:
    index = ResponseIndex(size=3)
    for i in range(5):
        index.add(indexed(f"r{i}"))
    assert [index.get(f"r{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert [r.response_id for r in index.recent(10)] == ["r4", "r3", "r2"]


def test_adding_a_known_id_again_replaces_it_without_forgetting_another() -> None:
    index = ResponseIndex(size=2)
    index.add(indexed("a"))
    index.add(indexed("b"))
    again = indexed("a")
    index.add(again)
    assert index.get("a") is again and index.get("b") is not None
    index.add(indexed("c"))  # "a" is still the oldest id: it goes first
    assert (index.get("a"), index.get("b") is not None, index.get("c") is not None) == (
        None,
        True,
        True,
    )
