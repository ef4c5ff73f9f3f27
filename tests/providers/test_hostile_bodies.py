"""Bodies from strangers, generated: the translations between the two APIs' shapes take
whatever JSON a client or an upstream sends, and either translate it or refuse it with a
typed error (a client's `BadRequest`; an upstream's answer that is not one, None), never
another exception (a 500 and a traceback, as fuzzing a real gateway found twice: a
`tool_choice` whose type was a list, `tool_calls: true`). Each property runs a fixed set
of examples (derandomized), so a failure here is a failure every time."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.anthropic import to_anthropic, to_openai
from providers.anthropic_inbound import message_usage, to_chat, to_message
from providers.base import Usage
from providers.errors import BadRequest, request_json

# Keys the translations read, so that generated bodies reach their branches.
KEYS = (
    "type", "text", "role", "content", "tool_calls", "function", "name", "arguments", "id",
    "tool_call_id", "image_url", "url", "source", "media_type", "data", "input",
    "tool_use_id", "is_error", "input_schema", "description", "parameters", "tools",
    "tool_choice", "system", "messages", "max_tokens", "stop", "stop_sequences",
    "temperature", "top_p", "top_k", "metadata", "user", "user_id", "stream",
    "stream_options", "include_usage", "thinking", "disable_parallel_tool_use",
    "parallel_tool_calls", "max_completion_tokens", "refusal", "choices", "message",
    "finish_reason", "stop_reason", "usage", "prompt_tokens", "completion_tokens",
    "input_tokens", "output_tokens", "cache_read_input_tokens",
    "cache_creation_input_tokens", "index", "model", "signature",
)  # fmt: skip
WORDS = (
    "text", "image", "image_url", "tool_use", "tool_result", "thinking", "redacted_thinking",
    "document", "function", "auto", "any", "tool", "none", "required", "user", "assistant",
    "system", "developer", "base64", "url", "image/png", "data:image/png;base64,AAAA",
    "data:;base64,", "https://example.com/a.png", "ftp://x", "{}", "{", "[]", "stop",
    "length", "tool_calls", "end_turn", "max_tokens", "",
)  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what orjson reads as an int
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(WORDS)
    | st.text(max_size=4)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=10,
)


def shaped(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An object with any of `fields` (each of its own shape, or anything at all), or
    anything at all in its place."""
    # A scalar, or a small list or object, where a shape was expected: the commonest
    # mistakes, made likely.
    odd = scalars | st.lists(scalars, max_size=2) | st.dictionaries(word, scalars, max_size=2)
    return st.fixed_dictionaries({}, optional={k: v | odd for k, v in fields.items()}) | values


word = st.sampled_from(WORDS)
blocks = st.lists(
    shaped(
        type=word, text=word, image_url=shaped(url=word), source=shaped(type=word, data=word,
        media_type=word, url=word), id=word, name=word, input=values, tool_use_id=word,
        content=st.lists(shaped(type=word, text=word), max_size=2), is_error=st.booleans(),
        refusal=word, thinking=word, signature=word,
    ),
    max_size=3,
)  # fmt: skip
calls = st.lists(shaped(id=word, type=word, function=shaped(name=word, arguments=word)), max_size=2)
role = st.sampled_from(["user", "assistant", "assistant", "system", "tool", "developer"])
plain = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": word})
tools = st.lists(
    shaped(type=word, name=word, description=word, input_schema=values,
           function=shaped(name=word, description=word, parameters=values)),
    max_size=2,
)  # fmt: skip
choice = shaped(type=word, name=word, function=shaped(name=word), disable_parallel_tool_use=values)
# One odd part at a time in an otherwise plain body, so that each part is reached: a
# translation stops at the first part it refuses.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "system": blocks | word, "tools": tools, "tool_choice": choice | word,
    "max_tokens": values, "max_completion_tokens": values, "stop": values,
    "stop_sequences": values, "temperature": values, "top_p": values, "user": word,
    "metadata": shaped(user_id=word), "parallel_tool_calls": values,
    "stream_options": shaped(include_usage=values), "thinking": values, "top_k": values,
}  # fmt: skip


def request_with(field: str) -> st.SearchStrategy[dict[str, Any]]:
    """Plain messages, and `field` odd (beside tools, for a tool choice to apply to)."""
    return st.fixed_dictionaries(
        {"messages": st.lists(plain, max_size=2), field: FIELDS[field]},
        optional={"tools": tools} if field == "tool_choice" else {},
    )


MESSAGE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "content": blocks | word, "tool_calls": calls, "tool_call_id": word, "name": word,
    "role": role,
}  # fmt: skip


def conversation_with(field: str) -> st.SearchStrategy[dict[str, Any]]:
    """Plain messages, and one of any role whose `field` is odd (its role, for "role")."""
    odd_one = st.fixed_dictionaries(
        {"role": role, field: MESSAGE_FIELDS[field] | scalars | values},
        optional={"content": word} if field != "content" else {},
    )
    return st.fixed_dictionaries(
        {"messages": st.tuples(st.lists(plain, max_size=2), odd_one).map(lambda p: [*p[0], p[1]])}
    )


answers = st.dictionaries(st.sampled_from(KEYS), values, max_size=8) | st.fixed_dictionaries(
    {"choices": st.lists(st.dictionaries(st.sampled_from(KEYS), values), max_size=2)},
    optional={key: values for key in KEYS if key != "choices"},
)
EACH = settings(derandomize=True, max_examples=150, deadline=None, database=None)
FIXED = settings(
    derandomize=True, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def sendable(body: dict[str, Any]) -> None:
    """What goes upstream is encoded next: that refuses only as the client's error."""
    with contextlib.suppress(BadRequest):
        request_json(body)


def messages_to_chat(body: dict[str, Any]) -> None:
    try:
        chat = to_chat(body)
    except BadRequest as refused:
        assert refused.status == 400 and not refused.blames_model
        return
    assert isinstance(chat["messages"], list)
    sendable(chat)


def chat_to_messages(body: dict[str, Any], stream: bool = False) -> None:
    try:
        out = to_anthropic(body, "claude", stream=stream)
    except BadRequest as refused:
        assert refused.status == 400 and not refused.blames_model
        return
    assert out["model"] == "claude" and isinstance(out["messages"], list)
    sendable(out)


@pytest.mark.parametrize("field", list(FIELDS))
def test_an_odd_field_translates_or_is_a_bad_request(field: str) -> None:
    @EACH
    @given(request_with(field), st.booleans())
    def both_ways(body: dict[str, Any], stream: bool) -> None:
        messages_to_chat(body)
        chat_to_messages(body, stream)

    both_ways()


@pytest.mark.parametrize("field", list(MESSAGE_FIELDS))
def test_a_message_with_an_odd_field_translates_or_is_a_bad_request(field: str) -> None:
    @EACH
    @given(conversation_with(field))
    def both_ways(body: dict[str, Any]) -> None:
        messages_to_chat(body)
        chat_to_messages(body)

    both_ways()


@FIXED
@given(answers)
def test_an_upstreams_answer_translates_or_is_not_one(data: dict[str, Any]) -> None:
    for translate in (to_message, to_openai):
        out = translate(data, "m")
        if out is not None:
            orjson.dumps(out)  # what the client is sent must encode


@FIXED
@given(values)
def test_an_upstreams_usage_is_read_or_missing(usage: Any) -> None:
    for read in (Usage.from_openai, message_usage):
        got = read(usage)
        assert got is None or isinstance(got, Usage)
