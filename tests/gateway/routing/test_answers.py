"""Answers pulled out of upstream bodies and streams, as the evaluator judges them."""

from __future__ import annotations

from typing import Any

from gateway.routing.answers import Answer, StreamAnswer, answer_from_body
from gateway.routing.evaluation import evaluate
from providers.base import Endpoint

PLAIN: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}


def test_answer_from_chat_body() -> None:
    body = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "content": "calling",
                    "refusal": None,
                    "tool_calls": [
                        {"type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                        {"type": "function", "function": {"name": "g", "arguments": "{bad"}},
                    ],
                },
            }
        ]
    }
    answer = answer_from_body(Endpoint.CHAT, body)
    assert answer == Answer("calling", "tool_calls", None, ['{"a":1}', "{bad"])


def test_answer_from_chat_body_with_refusal_and_null_content() -> None:
    body = {"choices": [{"finish_reason": "stop", "message": {"content": None, "refusal": "No."}}]}
    assert answer_from_body(Endpoint.CHAT, body) == Answer("", "stop", "No.", [])


def test_answer_from_completions_body() -> None:
    body = {"choices": [{"text": "once upon", "finish_reason": "length"}]}
    assert answer_from_body(Endpoint.COMPLETIONS, body) == Answer("once upon", "length")


def test_answer_from_responses_body() -> None:
    body = {
        "status": "incomplete",
        "output": [
            {"type": "message", "content": [{"type": "output_text", "text": "Hello "}]},
            {"type": "message", "content": [{"type": "output_text", "text": "there"}]},
            {"type": "function_call", "name": "f", "arguments": '{"x": 2}'},
        ],
    }
    assert answer_from_body(Endpoint.RESPONSES, body) == Answer(
        "Hello there", "length", None, ['{"x": 2}']
    )
    assert answer_from_body(Endpoint.RESPONSES, {"status": "completed"}).finish_reason == "stop"


def test_responses_refusal_part_is_a_refusal() -> None:
    part = {"type": "refusal", "refusal": "I can't help with that."}
    body = {"status": "completed", "output": [{"type": "message", "content": [part]}]}
    answer = answer_from_body(Endpoint.RESPONSES, body)
    assert answer is not None and evaluate(PLAIN, answer).flags == ["refusal"]


def test_responses_incomplete_by_content_filter_is_a_refusal() -> None:
    body = {
        "status": "incomplete",
        "incomplete_details": {"reason": "content_filter"},
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "Par"}]}],
    }
    answer = answer_from_body(Endpoint.RESPONSES, body)
    assert answer is not None and evaluate(PLAIN, answer).flags == ["refusal"]


def test_no_answer_from_bodies_without_choices_or_other_endpoints() -> None:
    assert answer_from_body(Endpoint.CHAT, {"choices": []}) is None
    assert answer_from_body(Endpoint.COMPLETIONS, {}) is None
    assert answer_from_body(Endpoint.EMBEDDINGS, {"data": []}) is None


def test_an_upstream_body_with_anything_where_a_list_or_object_belongs_is_judged_empty() -> None:
    """An Anthropic reply whose content was a number failed its judging with a traceback
    in the log (found by sending odd shapes from a fake upstream)."""
    for odd in (1.5, True, "text", {"a": 1}):
        chat = {"choices": [{"message": odd, "finish_reason": "stop"}]}
        assert answer_from_body(Endpoint.CHAT, chat) == Answer("", "stop", None, [])
        calls = {"choices": [{"message": {"content": "x", "tool_calls": odd}}]}
        assert answer_from_body(Endpoint.CHAT, calls) == Answer("x", None, None, [])
        message = {"content": odd, "stop_reason": "end_turn"}
        assert answer_from_body(Endpoint.MESSAGES, message) == Answer("", "stop", None, [])
        responses = {"output": odd, "status": "completed"}
        assert answer_from_body(Endpoint.RESPONSES, responses) == Answer("", "stop", None, [])
        items = {"output": [{"type": "message", "content": odd}], "status": "completed"}
        assert answer_from_body(Endpoint.RESPONSES, items) == Answer("", "stop", None, [])


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_stream_answer_accumulates_chat_chunks() -> None:
    stream = StreamAnswer()
    stream.add(None, chunk({"role": "assistant", "content": "Hel"}))
    stream.add(None, chunk({"content": "lo"}))
    call0 = {"index": 0, "function": {"name": "f", "arguments": '{"ci'}}
    stream.add(None, chunk({"tool_calls": [call0]}))
    call1 = {"index": 1, "function": {"name": "g", "arguments": "{bad"}}
    stream.add(None, chunk({"tool_calls": [call1]}))
    stream.add(None, chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": 1}'}}]}))
    stream.add(None, chunk({}, "length"))
    stream.add(None, {"choices": [], "usage": {"prompt_tokens": 1}})
    answer = stream.result()
    assert answer == Answer("Hello", "length", None, ['{"city": 1}', "{bad"])
    assert evaluate(PLAIN, answer).flags == ["truncated", "invalid_tool_arguments"]


def test_stream_answer_takes_odd_tool_calls_from_an_upstream_without_failing() -> None:
    stream = StreamAnswer()
    stream.add(None, chunk({"content": "x", "tool_calls": True}))
    stream.add(None, chunk({"tool_calls": [{"index": [1], "function": {"arguments": "{}"}}]}))
    assert stream.result() == Answer("x", None, None, ["{}"])


def test_stream_answer_counts_all_it_said_past_what_it_keeps() -> None:
    stream = StreamAnswer()
    stream.add(None, chunk({"role": "assistant", "content": "Hel"}))
    stream.add_escaped(b"lo \\u00e9")  # forwarded unparsed: its escaped bytes
    call = {"index": 0, "function": {"name": "f", "arguments": '{"a":1}'}}
    stream.add(None, chunk({"tool_calls": [call]}))
    stream.add(None, chunk({"refusal": "no"}))
    assert stream.spoken() == 3 + 9 + 7 + 2
    long = StreamAnswer()
    for _ in range(100):
        long.add_escaped(b"x" * 1024)  # 100 KiB: more than an answer keeps to judge
    assert long.spoken() == 100 * 1024
    assert len(long.result().text) < 100 * 1024


def test_stream_answer_collects_refusal_deltas_and_completion_text() -> None:
    stream = StreamAnswer()
    stream.add(None, chunk({"refusal": "I can't "}))
    stream.add(None, chunk({"refusal": "help."}, "stop"))
    assert stream.result().refusal == "I can't help."
    legacy = StreamAnswer()
    legacy.add(None, {"choices": [{"text": "abc", "finish_reason": None}]})
    legacy.add(None, {"choices": [{"text": "def", "finish_reason": "stop"}]})
    assert legacy.result() == Answer("abcdef", "stop")


def test_stream_answer_reads_responses_named_events() -> None:
    stream = StreamAnswer()
    stream.add("response.created", {"response": {"status": "in_progress"}})
    stream.add("response.output_text.delta", {"delta": "Hi "})
    stream.add("response.output_text.delta", {"delta": "you"})
    stream.add("response.completed", {"response": {"status": "completed"}})
    assert stream.result() == Answer("Hi you", "stop")
    cut = StreamAnswer()
    cut.add("response.output_text.delta", {"delta": "Hi"})
    cut.add("response.incomplete", {"response": {"status": "incomplete"}})
    assert cut.result().finish_reason == "length"


# -- Anthropic's Messages API --------------------------------------------------------------


def test_answer_from_a_message() -> None:
    body = {
        "content": [
            {"type": "thinking", "thinking": "hm"},
            {"type": "text", "text": "Checking "},
            {"type": "text", "text": "now."},
            {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": "max_tokens",
    }
    answer = answer_from_body(Endpoint.MESSAGES, body)
    assert answer == Answer("Checking now.", "length", None, ['{"a":1}'])
    assert "truncated" in evaluate(PLAIN, answer).flags


def test_stream_answer_from_anthropic_events() -> None:
    said = StreamAnswer()
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"message": {"id": "msg_1"}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "!"}}),
        (
            "content_block_delta",
            {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a"'}},
        ),
        (
            "content_block_delta",
            {"index": 1, "delta": {"type": "input_json_delta", "partial_json": ":1}"}},
        ),
        ("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}}),
        ("message_stop", {}),
    ]
    for event, data in events:
        said.add(event, data)
    assert said.result() == Answer("Hi!", "tool_calls", None, ['{"a":1}'])


def test_stream_answer_keeps_forwarded_chunks_text_in_order_and_decodes_it_once() -> None:
    """Chunks the gateway forwarded unparsed give their content still JSON-escaped."""
    said = StreamAnswer()
    said.add(None, {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "A"}}]})
    said.add_escaped(rb" \"quoted\"")
    said.add_escaped(b"")
    said.add_escaped(rb"\n\u00e9 \ud83d\ude00")
    said.add(
        None, {"choices": [{"index": 0, "delta": {"content": " end"}, "finish_reason": "stop"}]}
    )
    answer = said.result()
    assert answer.text == 'A "quoted"\né 😀 end'
    assert answer.finish_reason == "stop"
