"""The shared vocabulary of providers/base.py: what an answer is charged when its
upstream never counted it."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from providers.base import (
    MAX_COUNT,
    MAX_SECONDS,
    Usage,
    answer_chars,
    estimate_prompt,
    estimate_usage,
    request_chars,
)


def test_request_text_is_counted_in_every_apis_shape() -> None:
    chat = {"messages": [{"role": "user", "content": "hello"}, {"content": [{"text": "abc"}]}]}
    assert request_chars(chat) == 8
    assert request_chars({"prompt": "12345678"}) == 8
    assert request_chars({"input": "ab", "instructions": "cd"}) == 4
    anthropic = {"system": "rules", "messages": [{"role": "user", "content": "hi"}]}
    assert request_chars(anthropic) == 7
    image = {"messages": [{"content": [{"type": "image_url", "image_url": {"url": "x" * 99}}]}]}
    assert request_chars(image) == 0  # what a picture costs is not its bytes


def test_an_estimate_is_four_characters_a_token_rounded_up() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 9}]}
    assert estimate_usage(body, 0) == Usage(3, 0)
    assert estimate_usage(body, 1) == Usage(3, 1)
    assert estimate_usage(body, 8) == Usage(3, 2)
    # The upstream's own count of the prompt (Anthropic's message_start) is kept.
    assert estimate_usage(body, 8, Usage(prompt_tokens=40)) == Usage(40, 2)


def test_an_answers_text_is_counted_in_every_apis_shape_labels_left_out() -> None:
    chat = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "hello",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    assert answer_chars(chat) == 5 + 1 + 2
    assert answer_chars({"choices": [{"text": "1234", "index": 0}]}) == 4
    anthropic = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "abc"}, {"type": "tool_use", "input": {"q": "de"}}],
        "stop_reason": "end_turn",
    }
    assert answer_chars(anthropic) == 5
    responses = {
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "xy"}]}]
    }
    assert answer_chars(responses) == 2
    assert answer_chars({"data": [{"embedding": [0.1, 0.2]}]}) == 0


def test_tools_definitions_count_as_prompt_and_a_prompt_is_at_least_a_token() -> None:
    """A model reads its tools' schemas as prompt: a request with large tools was charged
    as if they were free when its upstream did not count."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = {"messages": [{"role": "user", "content": "x" * 8}], "tools": tools}
    assert request_chars(body) == 8 + len(orjson.dumps(tools))
    assert estimate_prompt(body) == -(-request_chars(body) // 4)
    assert estimate_usage(body, 0).prompt_tokens == estimate_prompt(body)
    assert estimate_prompt({}) == 1


def test_text_nested_as_deep_as_json_can_be_read_is_counted_without_recursion() -> None:
    """orjson reads 1,024 levels; Python stops recursing at 1,000 frames. The mock model's
    count of a client's prompt hit that: a 500 and a traceback."""
    deep = orjson.loads("[" * 1000 + '"abcd"' + "]" * 1000)
    assert request_chars({"messages": deep}) == 4
    assert answer_chars({"choices": deep}) == 4
    assert request_chars({"messages": "x", "tools": [deep]}) == 1 + 4  # too deep for JSON


@pytest.mark.parametrize(
    "given",
    [
        {"prompt_tokens": 2**64 - 1},  # orjson reads it; no 64-bit column stores it
        {"completion_tokens": -5},
        {"prompt_tokens": True},
        {"images": 3.0},
        {"cached_tokens": MAX_COUNT + 1},
        {"seconds": math.nan},  # float("nan"): stored as NULL, refused NOT NULL
        {"seconds": math.inf},  # float("1e400"): a cost of infinity
        {"seconds": -1.0},
        {"seconds": MAX_SECONDS * 2},
    ],
)
def test_an_upstreams_absurd_count_is_taken_as_zero(given: dict[str, Any]) -> None:
    """Found by a misbehaving upstream: a video's "seconds": "nan" made a cost of NaN,
    which SQLite stores as NULL, so the store refused the batch and every write after
    it; a count past 2**63 did the same."""
    assert Usage(**given) == Usage()


def test_a_sane_usage_is_kept() -> None:
    usage = Usage(10, 20, images=2, seconds=8.5, cached_tokens=4, cache_write_tokens=1)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.seconds) == (10, 20, 8.5)
    assert Usage(seconds=4) == Usage(seconds=4.0) and Usage(MAX_COUNT).prompt_tokens == MAX_COUNT
