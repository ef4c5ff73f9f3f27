"""What the gateway remembers about each answer it returned, by response id.

Feedback arrives by id, sometimes before the store has the record, so recent
records stay in a bounded in-memory index; older ones are read from the store.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["ResponseIndex", "ResponseRecord"]


@dataclass(slots=True)
class ResponseRecord:
    response_id: str
    request_id: str
    model: str
    provider: str
    conversation_type: str
    route: str | None
    optimization: str | None
    ts: float
    latency_ms: float
    flags: list[str] = field(default_factory=list)
    auto_score: float | None = None
    prompt: str | None = None
    answer: str | None = None
    stored: bool = False

    def to_row(self) -> dict:
        """The store's columns (everything but `stored`); written for every answer."""
        return {
            "response_id": self.response_id, "request_id": self.request_id,
            "model": self.model, "provider": self.provider,
            "conversation_type": self.conversation_type, "route": self.route,
            "optimization": self.optimization, "ts": self.ts, "latency_ms": self.latency_ms,
            "flags": self.flags, "auto_score": self.auto_score, "prompt": self.prompt,
            "answer": self.answer,
        }  # fmt: skip


class ResponseIndex:
    """The latest `size` records by response id.

    The ids also wait in a deque, oldest first: finding a dict's oldest key with
    next(iter(d)) walks over every slot deleted before it, ~6 µs per answer once full.
    """

    def __init__(self, size: int = 20_000) -> None:
        self._records: dict[str, ResponseRecord] = {}  # insertion order = age
        self._order: deque[str] = deque()
        self._size = size

    def add(self, record: ResponseRecord) -> None:
        records = self._records
        rid = record.response_id
        if rid not in records:
            self._order.append(rid)
        records[rid] = record
        if len(records) > self._size:
            del records[self._order.popleft()]  # the oldest

    def get(self, response_id: str) -> ResponseRecord | None:
        return self._records.get(response_id)

    def recent(self, limit: int = 20) -> list[ResponseRecord]:
        out: list[ResponseRecord] = []
        for record in reversed(self._records.values()):
            out.append(record)
            if len(out) >= limit:
                break
        return out
