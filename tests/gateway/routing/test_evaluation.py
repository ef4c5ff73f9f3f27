"""Automatic judging of answers: the flags and scores of evaluate(), and the Evaluator that
does the work off the request path (answers out of bodies and streams: test_answers.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from gateway.core.config import parse_config
from gateway.core.types import Attempt, ResponseRecord
from gateway.routing import evaluation as evaluator_module
from gateway.routing.answers import Answer, StreamAnswer
from gateway.routing.catalog import Catalog
from gateway.routing.dispatch import Outcome, ReplyJob, StreamJob, Timings
from gateway.routing.evaluation import FLAGS, Evaluator, evaluate
from gateway.routing.feedback import ResponseIndex
from gateway.routing.tracker import Tracker
from providers.base import Endpoint

PLAIN: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
JSON_OBJECT = {**PLAIN, "response_format": {"type": "json_object"}}
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
JSON_SCHEMA = {
    **PLAIN,
    "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}},
}


def flags(request: dict[str, Any], answer: Answer, **kwargs: Any) -> list[str]:
    return evaluate(request, answer, **kwargs).flags


# ---- evaluate(): one flag at a time ----------------------------------------------------


def test_clean_answer_has_no_flag_and_scores_one() -> None:
    result = evaluate(PLAIN, Answer("Paris is the capital of France.", "stop"))
    assert result.flags == []
    assert result.score == 1.0


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_text_is_flagged_empty_and_scores_zero(text: str) -> None:
    result = evaluate(PLAIN, Answer(text, "stop"))
    assert result.flags == ["empty"]
    assert result.score == 0.0


def test_tool_call_without_text_is_not_empty() -> None:
    assert flags(PLAIN, Answer("", "tool_calls", None, ['{"city": "Paris"}'])) == []


def test_finish_reason_length_is_truncated() -> None:
    result = evaluate(PLAIN, Answer("The story begins and then", "length"))
    assert result.flags == ["truncated"]
    assert result.score == pytest.approx(0.6)


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I cannot assist with this request.",
        "As an AI, I have no opinion.",
    ],
)
def test_refusal_text_is_flagged(text: str) -> None:
    result = evaluate(PLAIN, Answer(text, "stop"))
    assert result.flags == ["refusal"]
    assert result.score == pytest.approx(0.4)


def test_message_refusal_field_and_content_filter_are_refusals() -> None:
    assert flags(PLAIN, Answer("", "stop", "I won't do that.")) == ["refusal"]  # not empty
    assert flags(PLAIN, Answer("partial", "content_filter")) == ["refusal"]


def test_a_sorry_that_is_not_a_refusal_is_not_flagged() -> None:
    assert flags(PLAIN, Answer("Sorry for the wait: the answer is 4.", "stop")) == []


def test_refusal_with_typographic_apostrophes_is_flagged() -> None:
    assert flags(PLAIN, Answer("I\u2019m sorry, but I can\u2019t help with that.", "stop")) == [
        "refusal"
    ]


def test_json_object_with_non_json_text_is_invalid_json() -> None:
    result = evaluate(JSON_OBJECT, Answer("Sure! Here is your JSON: {name: x}", "stop"))
    assert result.flags == ["invalid_json"]
    assert result.score == pytest.approx(0.4)


def test_json_object_with_json_text_is_clean_and_plain_requests_are_not_checked() -> None:
    assert flags(JSON_OBJECT, Answer('{"anything": [1, 2]}', "stop")) == []
    assert flags(PLAIN, Answer("{not json", "stop")) == []


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "Ada"}',  # required property missing
        '{"name": "Ada", "age": "36"}',  # wrong type
        '{"name": "Ada", "age": 36, "email": "a@b.c"}',  # extra property, not allowed
        '["Ada", 36]',  # not an object
    ],
)
def test_json_schema_violations_are_schema_mismatch(text: str) -> None:
    result = evaluate(JSON_SCHEMA, Answer(text, "stop"))
    assert result.flags == ["schema_mismatch"]
    assert result.score == pytest.approx(0.6)


def test_conforming_json_schema_answer_is_clean_and_non_json_is_invalid_json() -> None:
    assert flags(JSON_SCHEMA, Answer('{"name": "Ada", "age": 36}', "stop")) == []
    assert flags(JSON_SCHEMA, Answer("name: Ada", "stop")) == ["invalid_json"]


@pytest.mark.parametrize("arguments", ["{bad", "[1, 2]", '"text"'])
def test_unparsable_or_non_object_tool_arguments_are_flagged(arguments: str) -> None:
    answer = Answer("", "tool_calls", None, ['{"ok": 1}', arguments])
    result = evaluate(PLAIN, answer)
    assert result.flags == ["invalid_tool_arguments"]
    assert result.score == pytest.approx(0.5)


def test_empty_tool_arguments_count_as_an_empty_object() -> None:
    assert flags(PLAIN, Answer("", "tool_calls", None, [""])) == []


def test_latency_three_times_above_p95_is_slow() -> None:
    answer = Answer("fine", "stop")
    assert flags(PLAIN, answer, latency_ms=301.0, p95_ms=100.0) == ["slow"]
    assert flags(PLAIN, answer, latency_ms=300.0, p95_ms=100.0) == []
    assert flags(PLAIN, answer, latency_ms=10_000.0, p95_ms=None) == []
    assert evaluate(PLAIN, answer, 301.0, 100.0).score == pytest.approx(0.9)


def test_penalties_combine() -> None:
    result = evaluate(JSON_SCHEMA, Answer('{"name": "Ada"}', "length"), 500.0, 100.0)
    assert result.flags == ["truncated", "schema_mismatch", "slow"]
    assert result.score == pytest.approx(1 - 0.4 - 0.4 - 0.1)


def test_penalties_clamp_at_zero() -> None:
    answer = Answer("I'm sorry, but I can't do that {", "length", None, ["{bad"])
    result = evaluate(JSON_OBJECT, answer, 1000.0, 10.0)
    assert set(result.flags) == set(FLAGS) - {"empty", "schema_mismatch"}
    assert result.score == 0.0


# ---- the Evaluator ---------------------------------------------------------------------


CONFIG = parse_config(
    {"providers": [{"name": "p", "type": "mock"}], "models": [{"name": "m", "provider": "p"}]}
)
CATALOG = Catalog(CONFIG, {})
MODEL = CATALOG.models["m"]


def chat(text: str, finish: str = "stop") -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}


def answered(
    rid: str,
    request: dict[str, Any] = PLAIN,
    body: dict[str, Any] | None = None,
    *,
    latency: float = 100.0,
    said: StreamAnswer | None = None,
    endpoint: Endpoint = Endpoint.CHAT,
    gone: bool = False,
) -> Outcome:
    """The outcome of an answer that reached its client, as the dispatcher closes it."""
    kind = StreamJob if said is not None else ReplyJob
    job = kind("req_" + rid, endpoint, CATALOG.resolve("m", "text-to-text"), request)
    job.response_id = rid
    if body is None and said is None and endpoint is not Endpoint.SPEECH:
        body = chat("fine")
    return Outcome(
        job, MODEL, 1, None, Timings(latency, latency), None, 0.0, 1.0,
        answered=True, client_gone=gone, body=body, said=said,
    )  # fmt: skip


class Kept:
    """The writer's part: the records handed on to be stored."""

    def __init__(self) -> None:
        self.records: list[ResponseRecord] = []

    def enqueue_response(self, record: ResponseRecord) -> None:
        self.records.append(record)


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


def make_evaluator(tracker: Tracker, **kwargs: Any) -> tuple[Evaluator, list[ResponseRecord]]:
    kept = Kept()
    return Evaluator(tracker, ResponseIndex(), kept, **kwargs), kept.records


def test_submit_only_queues_and_drain_judges(tracker: Tracker) -> None:
    evaluator, seen = make_evaluator(tracker)
    truncated = evaluator.submit(answered("r1", body=chat("cut", "length")))
    evaluator.submit(answered("r2"))
    assert len(evaluator._pending) == 2
    assert seen == []
    assert truncated.flags == [] and truncated.auto_score is None
    assert tracker.stats("m", "text-to-text") is None
    evaluator.drain()
    assert evaluator._pending == []
    assert [r.response_id for r in seen] == ["r1", "r2"]
    assert truncated.flags == ["truncated"]
    assert truncated.auto_score == pytest.approx(0.6)
    stats = tracker.stats("m", "text-to-text")
    assert stats is not None
    assert stats.auto_score_count == 2
    assert stats.auto_score == pytest.approx(0.8)
    assert stats.flags == {"truncated": 1}


def test_a_streamed_answer_is_judged_by_what_it_said(tracker: Tracker) -> None:
    evaluator, seen = make_evaluator(tracker)
    said = StreamAnswer()
    chunk = {"choices": [{"index": 0, "delta": {"content": "cut"}, "finish_reason": "length"}]}
    said.add(None, chunk)
    evaluator.submit(answered("s1", said=said))
    evaluator.drain()
    assert seen[0].flags == ["truncated"]


def test_drain_with_a_limit_judges_the_oldest_and_keeps_the_rest(tracker: Tracker) -> None:
    evaluator, seen = make_evaluator(tracker)
    for i in range(5):
        evaluator.submit(answered(f"r{i}"))
    evaluator.drain(2)
    assert [r.response_id for r in seen] == ["r0", "r1"]
    assert [r.response_id for r, _ in evaluator._pending] == ["r2", "r3", "r4"]
    evaluator.drain(10)
    assert [r.response_id for r in seen] == ["r0", "r1", "r2", "r3", "r4"]


def test_settle_judges_the_records_asked_for_now_and_leaves_the_rest_waiting(
    tracker: Tracker,
) -> None:
    """An admin read right after an answer shows it whole: its text and score."""
    evaluator, seen = make_evaluator(tracker, log_payloads=True)
    records = [evaluator.submit(answered(f"r{i}", body=chat(f"text {i}"))) for i in range(4)]
    assert records[2].answer is None and records[2].auto_score is None  # not judged yet
    evaluator.settle([records[2], records[0]])
    assert (records[2].answer, records[0].answer) == ("text 2", "text 0")
    assert records[2].auto_score is not None
    assert [r.response_id for r in seen] == ["r0", "r2"]  # stored, in the order they came
    assert [r.response_id for r, _ in evaluator._pending] == ["r1", "r3"]
    evaluator.settle(records)  # the judged ones are not judged twice
    assert [r.response_id for r in seen] == ["r0", "r2", "r1", "r3"]
    evaluator.settle(records)
    assert len(seen) == 4 and evaluator._pending == []


async def test_the_background_task_judges_a_backlog_in_slices(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests run between the slices: a backlog never holds the event loop at once."""
    monkeypatch.setattr(Evaluator, "SLICE", 2)
    evaluator, seen = make_evaluator(tracker, interval=0)
    for i in range(5):
        evaluator.submit(answered(f"r{i}"))
    observed: list[int] = []
    evaluator.start()
    try:
        while len(seen) < 5:
            await asyncio.sleep(0)  # what a request handler does between its steps
            observed.append(len(seen))
    finally:
        await evaluator.close()
    assert {2, 4} <= set(observed)  # seen between slices
    assert [r.response_id for r in seen] == ["r0", "r1", "r2", "r3", "r4"]


def test_submit_judges_nothing(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    """Queueing on the request path judges nothing, however heavy the answer: the work
    happens in drain(), off the request path."""
    judged: list[Answer] = []
    real = evaluator_module.evaluate
    monkeypatch.setattr(
        evaluator_module, "evaluate", lambda *a, **k: judged.append(a[1]) or real(*a, **k)
    )
    schema = {"type": "array", "items": {"type": "object", "required": ["a"]}}
    request = {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}
    heavy = chat(orjson.dumps([{"a": i} for i in range(5000)]).decode())
    evaluator, _ = make_evaluator(tracker, limit=1_000_000)
    for i in range(1000):
        evaluator.submit(answered(f"r{i}", request, heavy))
    assert len(evaluator._pending) == 1000
    assert judged == []
    assert tracker.stats("m", "text-to-text") is None
    evaluator._pending = evaluator._pending[:3]
    evaluator.drain()
    assert len(judged) == 3


def test_an_answer_that_cannot_be_judged_keeps_no_other_from_the_store(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = evaluator_module.evaluate

    def fragile(request: dict[str, Any], answer: Answer, *args: Any) -> Any:
        if answer.text == "poison":
            raise RecursionError("a client's input the judge cannot take")
        return real(request, answer, *args)

    monkeypatch.setattr(evaluator_module, "evaluate", fragile)
    evaluator, seen = make_evaluator(tracker)
    for rid, text in (("a", "fine"), ("b", "poison"), ("c", "fine")):
        evaluator.submit(answered(rid, body=chat(text)))
    evaluator.drain()
    assert [r.response_id for r in seen] == ["a", "b", "c"]
    assert [r.auto_score for r in seen] == [1.0, None, 1.0]
    assert evaluator.failed == 1


def test_a_self_referential_schema_is_not_held_against_the_answer(tracker: Tracker) -> None:
    request = {"response_format": {"type": "json_schema", "json_schema": {"schema": {"$ref": "#"}}}}
    evaluator, seen = make_evaluator(tracker)
    evaluator.submit(answered("r", request, chat('{"a": 1}')))
    evaluator.drain()
    assert seen[0].flags == [] and seen[0].auto_score == 1.0


def test_answerless_records_are_passed_on_unjudged(tracker: Tracker) -> None:
    evaluator, seen = make_evaluator(tracker)
    speech = evaluator.submit(answered("s1", {"input": "say hi"}, endpoint=Endpoint.SPEECH))
    evaluator.drain()
    assert seen == [speech]
    assert speech.auto_score is None
    assert tracker.stats("m", "text-to-audio") is None


def test_an_answer_whose_client_left_is_kept_unjudged(tracker: Tracker) -> None:
    evaluator, seen = make_evaluator(tracker)
    left = evaluator.submit(answered("g1", body=chat(""), gone=True))
    assert seen == [left] and evaluator.index.get("g1") is left
    assert left.auto_score is None  # half an answer says nothing of the model's quality


def test_over_the_limit_records_skip_judging_and_are_counted(tracker: Tracker) -> None:
    evaluator, seen = make_evaluator(tracker, limit=1)
    evaluator.submit(answered("a"))
    evaluator.submit(answered("b"))
    assert evaluator.dropped == 1
    assert [r.response_id for r in seen] == ["b"]


@pytest.mark.parametrize(("samples", "flagged"), [(25, ["slow"]), (5, [])])
def test_drain_flags_slow_answers_against_the_models_own_p95(
    tracker: Tracker, samples: int, flagged: list[str]
) -> None:
    """Slow means 3x the model's own p95, once it has at least 20 timed answers."""
    for i in range(samples):
        tracker.record(Attempt(f"q{i}", None, 1, "m", "p", "text-to-text", None, None, True,
                               latency_ms=100.0, timestamp=time.time()))  # fmt: skip
    evaluator, _ = make_evaluator(tracker)
    slow = evaluator.submit(answered("slow", latency=5_000.0))
    normal = evaluator.submit(answered("ok", latency=110.0))
    evaluator.drain()
    assert (slow.flags, normal.flags) == (flagged, [])


PROMPT = {"messages": [{"role": "user", "content": "secret prompt"}]}


@pytest.mark.parametrize("log_payloads", [False, True])
def test_submit_indexes_and_logs_payloads_only_when_asked(
    tracker: Tracker, log_payloads: bool
) -> None:
    evaluator, seen = make_evaluator(tracker, log_payloads=log_payloads)
    outcome = answered("r9", PROMPT, chat("secret answer"), latency=42.0)
    rec = evaluator.submit(outcome)
    assert evaluator.index.get("r9") is rec
    assert (rec.model, rec.request_id, rec.latency_ms, rec.ts) == ("m", "req_r9", 42.0, 1.0)
    evaluator.drain()
    assert seen == [rec]
    assert rec.auto_score == 1.0
    if log_payloads:
        assert rec.prompt == '[{"role":"user","content":"secret prompt"}]'
        assert rec.answer == "secret answer"
    else:
        assert rec.prompt is None and rec.answer is None
