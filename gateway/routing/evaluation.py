"""Judges every completed answer automatically, off the request path.

Requests hand over a small record and return; a background task computes the
flags and a quality score in [0, 1], feeds the score to the tracker (so selection
learns from it) and queues the record for the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from gateway.core.types import Attempt
from gateway.routing.answers import Answer
from gateway.routing.responses import ResponseIndex, ResponseRecord
from gateway.routing.schema_check import schema_errors
from gateway.routing.tracker import Tracker

if TYPE_CHECKING:
    from gateway.routing.dispatch import Job

__all__ = ["FLAGS", "Evaluation", "Evaluator", "evaluate"]

log = logging.getLogger("gatewise.evaluator")

FLAGS = (
    "empty",
    "truncated",
    "refusal",
    "invalid_json",
    "schema_mismatch",
    "invalid_tool_arguments",
    "slow",
)
_PENALTY = {
    "truncated": 0.4,
    "refusal": 0.6,
    "invalid_json": 0.6,
    "schema_mismatch": 0.4,
    "invalid_tool_arguments": 0.5,
    "slow": 0.1,
}
_REFUSAL = re.compile(
    r"^\s*(i(?:'|\u2019)?m sorry|i am sorry|i apologi[sz]e)?[,.]?\s*(but\s+)?"
    r"(i\s+(can(?:no|'|\u2019)?t|am unable to|am not able to|won(?:'|\u2019)?t|will not)\s+"
    r"(help|assist|comply|provide|do that|fulfil)|as an ai\b)",
    re.IGNORECASE,
)
_SLOW_FACTOR = 3.0  # latency this many times the model's own p95 is flagged
_SLOW_MIN_SAMPLES = 20


@dataclass(slots=True)
class Evaluation:
    flags: list[str] = field(default_factory=list)
    score: float = 1.0


def evaluate(
    request: dict[str, Any],
    answer: Answer,
    latency_ms: float | None = None,
    p95_ms: float | None = None,
) -> Evaluation:
    flags: list[str] = []
    text = answer.text
    if not text.strip() and not answer.tool_arguments and not answer.refusal:
        flags.append("empty")
    if answer.finish_reason == "length":
        flags.append("truncated")
    if answer.refusal or answer.finish_reason == "content_filter" or _REFUSAL.match(text):
        flags.append("refusal")
    fmt = request.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema") and text:
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            flags.append("invalid_json")
        else:
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if fmt["type"] == "json_schema" and schema_errors(parsed, schema):
                flags.append("schema_mismatch")
    for arguments in answer.tool_arguments:
        try:
            if not isinstance(orjson.loads(arguments or "{}"), dict):
                raise ValueError
        except ValueError:
            flags.append("invalid_tool_arguments")
            break
    if latency_ms is not None and p95_ms and latency_ms > _SLOW_FACTOR * p95_ms:
        flags.append("slow")
    score = 0.0 if "empty" in flags else max(0.0, 1.0 - sum(_PENALTY.get(f, 0) for f in flags))
    return Evaluation(flags, round(score, 4))


class Evaluator:
    # Answers judged in one go: under load a quarter second brings ~1,500, ~9 ms of
    # work that would hold every request in flight at once.
    SLICE = 200

    def __init__(
        self,
        tracker: Tracker,
        index: ResponseIndex,
        on_record: Callable[[ResponseRecord], None],
        *,
        log_payloads: bool = False,
        interval: float = 0.25,
        limit: int = 10_000,
    ) -> None:
        self.tracker = tracker
        self.index = index
        self.on_record = on_record
        self.log_payloads = log_payloads
        self.interval = interval
        self.limit = limit
        self.dropped = 0
        self._pending: list[tuple[ResponseRecord, dict[str, Any], Answer | None]] = []
        self._task: asyncio.Task[None] | None = None

    def answered(self, job: Job, attempt: Attempt, answer: Answer | None) -> ResponseRecord:
        """Remember an answer by its response id and queue it for judging."""
        record = ResponseRecord(
            job.response_id,
            job.request_id,
            attempt.model,
            attempt.provider,
            job.ctype,
            job.target.route,
            job.optimization,
            attempt.timestamp,
            attempt.latency_ms,
        )
        if self.log_payloads:
            record.prompt = _prompt_text(job.body)
            record.answer = answer.text if answer is not None else None
        self.index.add(record)
        self.submit(record, job.body, answer)
        return record

    def submit(
        self, record: ResponseRecord, request: dict[str, Any], answer: Answer | None
    ) -> None:
        """O(1) on the request path: the judging happens later."""
        if len(self._pending) >= self.limit:
            self.dropped += 1
            self.on_record(record)
            return
        self._pending.append((record, request, answer))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gatewise-evaluator")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            while self._pending:
                try:
                    self.drain(self.SLICE)
                except Exception:
                    log.exception("evaluation failed")
                await asyncio.sleep(0)  # requests go first between slices

    def drain(self, limit: int | None = None) -> None:
        """Judge the first `limit` answers waiting (all by default)."""
        if limit is None or limit >= len(self._pending):
            batch, self._pending = self._pending, []
        else:
            batch = self._pending[:limit]
            del self._pending[:limit]
        p95s: dict[tuple[str, str], float | None] = {}  # one quantile per model per batch
        for record, request, answer in batch:
            if answer is not None:
                key = (record.model, record.conversation_type)
                if key not in p95s:
                    stats = self.tracker.stats(*key)
                    enough = stats is not None and stats.latency.count >= _SLOW_MIN_SAMPLES
                    p95s[key] = stats.latency.quantile(0.95) if enough else None
                result = evaluate(request, answer, record.latency_ms, p95s[key])
                record.flags = result.flags
                record.auto_score = result.score
                self.tracker.add_auto_score(
                    record.model, record.conversation_type, result.score, result.flags
                )
            self.on_record(record)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.drain()


def _prompt_text(body: dict[str, Any]) -> str | None:
    """The prompt as stored when payload logging is on: messages or prompt/input, as JSON."""
    for key in ("messages", "prompt", "input"):
        if key in body:
            value = body[key]
            return value if isinstance(value, str) else orjson.dumps(value).decode()
    return None
