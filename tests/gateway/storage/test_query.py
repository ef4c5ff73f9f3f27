"""Query: validated once, turned into one WHERE clause in any placeholder style; and the
reads that refuse what they cannot select."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.storage import Query
from gateway.storage.query import Params, bucket_size, where
from tests.gateway.storage.helpers import H0, Harness


def test_a_query_selects_everything_by_default_and_pages_by_100() -> None:
    assert Query() == Query(limit=100, offset=0)
    params = Params()
    assert where(Query(), params) == ""
    assert params.values == []


@pytest.mark.parametrize("fields", [{"limit": -1}, {"offset": -1}])
def test_negative_paging_is_refused_when_the_query_is_made(fields: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        Query(**fields)


def test_a_query_is_immutable_and_keyword_only() -> None:
    query = Query(model="alpha")
    with pytest.raises(dataclasses.FrozenInstanceError):
        query.model = "beta"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Query("alpha")  # type: ignore[misc]


def test_bucket_size() -> None:
    assert bucket_size(60) == 60
    for bad in (0, -60):
        with pytest.raises(ValueError, match="bucket_seconds must be positive"):
            bucket_size(bad)


def test_where_in_sqlite_style() -> None:
    params = Params()
    query = Query(model="m", conversation_type="text-to-text", since=1.0, until=2.0)
    assert where(query, params, prefix="r.", also=["ok = 1"]) == (
        "WHERE r.model = ? AND r.conversation_type = ? AND r.ts >= ? AND r.ts < ? AND ok = 1"
    )
    assert params.values == ["m", "text-to-text", 1.0, 2.0]


def test_numbered_placeholders_count_what_came_before_the_where_clause() -> None:
    p = Params(lambda n: f"${n}")  # asyncpg's style
    query = Query(model="m", response_id="r1", until=9.0, limit=5, offset=10)
    sql = (
        f"SELECT {p(60)} FROM feedback {where(query, p, ts='hour', by_response=True)} "
        f"LIMIT {p(query.limit)} OFFSET {p(query.offset)}"
    )
    assert sql == (
        "SELECT $1 FROM feedback WHERE model = $2 AND response_id = $3 AND hour < $4 "
        "LIMIT $5 OFFSET $6"
    )
    assert p.values == [60, "m", "r1", 9.0, 5, 10]


def test_only_reads_of_ratings_take_a_response_id() -> None:
    with pytest.raises(ValueError, match="response_id"):
        where(Query(response_id="r1"), Params())


# ---- on every store (the `harness` fixture) ----


async def test_reads_other_than_feedback_refuse_a_response_id(harness: Harness) -> None:
    store, query = harness.store, Query(response_id="r1")
    for read in (
        store.attempts,
        store.timeseries,
        store.responses,
        store.feedback_aggregates,
        store.evaluation_aggregates,
        store.evaluation_trend,
    ):
        with pytest.raises(ValueError, match="response_id"):
            await read(query)
    assert await store.feedback(query) == []


async def test_aggregates_ignore_the_page(harness: Harness) -> None:
    store = harness.store
    await store.write_responses(
        [
            {"response_id": f"r{i}", "request_id": f"q{i}", "model": "alpha", "provider": "up",
             "conversation_type": "text-to-text", "ts": H0 + i}
            for i in range(3)
        ]
    )  # fmt: skip
    page = Query(limit=1, offset=1)
    assert len(await store.responses(page)) == 1
    [aggregate] = await store.evaluation_aggregates(page)
    assert aggregate["count"] == 3
    [bucket] = await store.evaluation_trend(page)
    assert bucket["responses"] == 3
