"""ResponseRecord rows carry exactly the store's columns; the index keeps the latest records."""

from __future__ import annotations

from gateway.routing.responses import ResponseIndex, ResponseRecord
from gateway.storage.rows import RESPONSE_COLUMNS, response_row


def test_a_record_row_has_every_stored_column_and_nothing_else() -> None:
    record = ResponseRecord("resp_1", "req_1", "m", "p", "text-to-text", "auto", "cost", 1.0, 2.5)
    record.flags, record.auto_score, record.prompt, record.answer = ["slow"], 0.9, "q", "a"
    row = record.to_row()
    assert tuple(row) == RESPONSE_COLUMNS
    assert set(ResponseRecord.__slots__) - set(row) == {"stored"}
    assert response_row(row) == row


def answer(rid: str) -> ResponseRecord:
    return ResponseRecord(rid, "req-" + rid, "alpha", "up", "text-to-text", None, None, 1.0, 2.0)


def test_the_index_keeps_the_latest_records_and_forgets_the_oldest() -> None:
    index = ResponseIndex(size=3)
    for i in range(5):
        index.add(answer(f"r{i}"))
    assert [index.get(f"r{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert [r.response_id for r in index.recent(10)] == ["r4", "r3", "r2"]


def test_adding_a_known_id_again_replaces_it_without_forgetting_another() -> None:
    index = ResponseIndex(size=2)
    index.add(answer("a"))
    index.add(answer("b"))
    again = answer("a")
    index.add(again)
    assert index.get("a") is again and index.get("b") is not None
    index.add(answer("c"))  # "a" is still the oldest id: it goes first
    assert (index.get("a"), index.get("b") is not None, index.get("c") is not None) == (
        None,
        True,
        True,
    )
