"""Judges every completed answer automatically, off the request path.

The recorder hands over each answer and returns; a background task computes the
flags and a quality score in [0, 1] (the "auto score"), feeds the score to the
tracker (so selection learns from it) and queues the answer's record for the store.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from gateway.core.tasks import cancel
from gateway.core.types import ResponseRecord
from gateway.routing.answers import Answer, answer_from_body
from gateway.routing.dispatch import Outcome
from gateway.routing.feedback import ResponseIndex
from gateway.routing.schema_check import Conformance, conformance
from gateway.routing.tracker import Tracker

__all__ = ["FLAGS", "Evaluation", "Evaluator", "ResponseSink", "ScoreSink", "evaluate", "said"]

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
            if fmt["type"] == "json_schema" and conformance(parsed, schema) is Conformance.BREAKS:
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


class ScoreSink(Protocol):
    """Where the auto score of an answer in an experiment goes too (`Experiments`)."""

    def scored(self, record: ResponseRecord, score: float) -> None: ...


class ResponseSink(Protocol):
    """Where judged answers go to be stored (`StoreWriter`)."""

    def enqueue_response(self, record: ResponseRecord) -> None: ...


class Evaluator:
    """Judges answers in the background and passes each answer's record on to the
    store: the recorder submits, a task drains every `interval` seconds."""

    # Answers judged in one go: under load a quarter second brings ~1,500, ~9 ms of
    # work that would hold every request in flight at once.
    SLICE = 200

    def __init__(
        self,
        tracker: Tracker,
        index: ResponseIndex,
        writer: ResponseSink,
        *,
        log_payloads: bool = False,
        interval: float = 0.25,
        limit: int = 10_000,
        experiments: ScoreSink | None = None,
    ) -> None:
        self.tracker = tracker
        self.experiments = experiments
        self.index = index
        self.writer = writer
        self.log_payloads = log_payloads
        self.interval = interval
        self.limit = limit
        self.dropped = 0
        self.failed = 0  # answers that could not be judged (and were stored unjudged)
        self._pending: list[tuple[ResponseRecord, Outcome]] = []
        self._task: asyncio.Task[None] | None = None

    def submit(self, outcome: Outcome) -> ResponseRecord:
        """Remember an answer by its response id and queue it for judging: O(1) on the
        request path, the judging happens later."""
        job = outcome.job
        record = ResponseRecord(
            job.response_id,
            job.request_id,
            outcome.model.name,
            outcome.model.provider,
            job.ctype,
            job.target.route,
            job.optimization,
            outcome.at,
            outcome.timings.upstream_ms,
            owner=job.owner,
            experiment=job.experiment,
            arm=job.arm,
            cost=outcome.cost,
        )
        self.index.add(record)
        if not outcome.judged or len(self._pending) >= self.limit:
            if outcome.judged:
                self.dropped += 1
            self._keep(record, outcome, None)
        else:
            self._pending.append((record, outcome))
        return record

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
        self._judge_all(batch)

    def settle(self, records: Iterable[ResponseRecord]) -> None:
        """Judge now those of `records` still waiting: an answer read through the admin
        API right after it was given is then shown whole (its text, score and flags),
        not as it was before judging. Linear in what waits (at most `limit`); for admin
        reads, never on the request path."""
        wanted = {id(record) for record in records}
        if not wanted or not self._pending:
            return
        batch = [entry for entry in self._pending if id(entry[0]) in wanted]
        if batch:
            self._pending = [entry for entry in self._pending if id(entry[0]) not in wanted]
            self._judge_all(batch)

    def _judge_all(self, batch: list[tuple[ResponseRecord, Outcome]]) -> None:
        p95s: dict[tuple[str, str], float | None] = {}
        for record, outcome in batch:
            answer = None
            try:  # one answer that cannot be judged must not keep the others from the store
                answer = said(outcome)
                if answer is not None:
                    self._judge(record, outcome, answer, p95s)
            except Exception:
                self.failed += 1
                log.exception("could not judge an answer; it is stored unjudged")
            self._keep(record, outcome, answer)

    def _judge(
        self,
        record: ResponseRecord,
        outcome: Outcome,
        answer: Answer,
        p95s: dict[tuple[str, str], float | None],
    ) -> None:
        key = (record.model, record.conversation_type)
        if key not in p95s:  # one quantile per model per slice
            stats = self.tracker.stats(*key)
            p95s[key] = (
                stats.latency.quantile(0.95)
                if stats is not None and stats.latency.count >= _SLOW_MIN_SAMPLES
                else None
            )
        result = evaluate(outcome.job.body, answer, record.latency_ms, p95s[key])
        record.flags = result.flags
        record.auto_score = result.score
        self.tracker.add_auto_score(
            record.model, record.conversation_type, result.score, result.flags
        )
        if record.experiment is not None and self.experiments is not None:
            self.experiments.scored(record, result.score)

    def _keep(self, record: ResponseRecord, outcome: Outcome, answer: Answer | None) -> None:
        if self.log_payloads:
            record.prompt = _prompt_text(outcome.job.body)
            if answer is None:
                answer = said(outcome)
            record.answer = answer.text if answer is not None else None
        self.writer.enqueue_response(record)

    async def close(self) -> None:
        await cancel(self._task)
        self._task = None
        self.drain()


def said(outcome: Outcome) -> Answer | None:
    """What an answer said: its text, finish reason, refusal and tool arguments."""
    if outcome.said is not None:
        return outcome.said.result()
    if outcome.body is not None:
        return answer_from_body(outcome.job.endpoint, outcome.body)
    return None


def _prompt_text(body: dict[str, Any]) -> str | None:
    """The prompt as stored when payload logging is on: messages or prompt/input, as JSON."""
    for key in ("messages", "prompt", "input"):
        if key in body:
            value = body[key]
            return value if isinstance(value, str) else orjson.dumps(value).decode()
    return None
