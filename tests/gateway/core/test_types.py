"""The vocabulary every layer shares: a response record's row is the store's columns."""

from __future__ import annotations

from gateway.core.types import ResponseRecord
from gateway.storage.rows import RESPONSE_COLUMNS, response_row


def test_a_record_row_has_every_stored_column_and_nothing_else() -> None:
    record = ResponseRecord("resp_1", "req_1", "m", "p", "text-to-text", "auto", "cost", 1.0, 2.5)
    record.flags, record.auto_score, record.prompt, record.answer = ["slow"], 0.9, "q", "a"
    row = record.to_row()
    assert tuple(row) == RESPONSE_COLUMNS
    assert set(ResponseRecord.__slots__) - set(row) == {"stored"}
    assert response_row(row) == row
