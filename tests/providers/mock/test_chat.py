"""The mock upstream's chat completions: OpenAI-exact shapes, formats, tools and streams."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from providers.mock.config import MockConfig
from tests.providers.mock.mock_helpers import CHAT_BODY, chat, collect, make

# ------------------------------------------------------------------ chat


async def test_chat_shape_validates_with_the_sdk() -> None:
    provider = make(MockConfig(completion_tokens=20, prompt_tokens=11, quality=1.0))
    first = await provider.send(chat())
    second = await provider.send(chat())
    parsed = ChatCompletion.model_validate(first.body)
    assert parsed.id == "chatcmpl-mock-1"
    assert second.body["id"] == "chatcmpl-mock-2"
    assert parsed.model == "up-model"
    assert parsed.created == 1_700_000_000
    assert parsed.choices[0].message.role == "assistant"
    assert parsed.choices[0].message.content.startswith("Mock answer from up-model: ")
    assert len(parsed.choices[0].message.content.split()) == 20
    assert parsed.choices[0].finish_reason == "stop"
    assert parsed.usage is not None
    assert (parsed.usage.prompt_tokens, parsed.usage.completion_tokens) == (11, 20)
    assert parsed.usage.total_tokens == 31
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (11, 20)


async def test_json_object_format_gives_parseable_json() -> None:
    provider = make(MockConfig(quality=1.0))
    body = {**CHAT_BODY, "response_format": {"type": "json_object"}}
    content = (await provider.send(chat(body))).body["choices"][0]["message"]["content"]
    assert json.loads(content)["answer"].startswith("Mock answer")


async def test_json_schema_format_fills_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "count": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "mood": {"enum": ["happy", "sad"]},
            "nested": {"$ref": "#/$defs/Inner"},
            "maybe": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        },
        "$defs": {"Inner": {"type": "object", "properties": {"ok": {"type": "boolean"}}}},
    }
    provider = make(MockConfig(quality=1.0))
    body = {
        **CHAT_BODY,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    content = (await provider.send(chat(body))).body["choices"][0]["message"]["content"]
    value = json.loads(content)
    assert isinstance(value["title"], str)
    assert value["count"] == 0
    assert isinstance(value["tags"], list) and isinstance(value["tags"][0], str)
    assert value["mood"] == "happy"
    assert value["nested"] == {"ok": True}
    assert value["maybe"] == 0.0


async def test_truncated_json_is_not_valid_json() -> None:
    provider = make(MockConfig(quality=1.0))
    body = {**CHAT_BODY, "response_format": {"type": "json_object"}, "max_tokens": 4}
    reply = await provider.send(chat(body))
    assert reply.body["choices"][0]["finish_reason"] == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.body["choices"][0]["message"]["content"])


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]


@pytest.mark.parametrize(
    ("choice", "name"),
    [
        ("required", "get_weather"),
        ({"type": "function", "function": {"name": "get_time"}}, "get_time"),
        ("auto", "get_weather"),  # offered and allowed: a real model would call one
        ("none", None),
        (None, "get_weather"),  # "auto" is the default when tools are offered
    ],
)
async def test_tool_choice(choice: Any, name: str | None) -> None:
    provider = make()
    body = {**CHAT_BODY, "tools": TOOLS}
    if choice is not None:
        body["tool_choice"] = choice
    parsed = ChatCompletion.model_validate((await provider.send(chat(body))).body)
    message = parsed.choices[0].message
    if name is None:
        assert message.tool_calls is None
        assert parsed.choices[0].finish_reason == "stop"
        return
    assert parsed.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == name
    assert json.loads(call.function.arguments) == {}
    assert call.id.startswith("call_")


PERSON = {
    "type": "object",
    "title": "Person",
    "properties": {
        "name": {"type": "string", "minLength": 2},
        "age": {"type": "integer", "minimum": 18, "maximum": 130},
        "score": {"type": "number", "exclusiveMinimum": 0},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "pet": {"anyOf": [{"$ref": "#/$defs/Pet"}, {"type": "null"}]},
        "kind": {"enum": ["friend", "foe"]},
    },
    "required": ["name", "age", "score", "email", "tags", "pet", "kind"],
    "additionalProperties": False,
    "$defs": {
        "Pet": {
            "type": "object",
            "properties": {"species": {"type": "string"}, "legs": {"type": "integer"}},
            "required": ["species", "legs"],
            "additionalProperties": False,
        }
    },
}


async def test_tool_arguments_validate_against_the_tools_schema() -> None:
    tools = [{"type": "function", "function": {"name": "Person", "parameters": PERSON}}]
    body = {**CHAT_BODY, "tools": tools, "tool_choice": "required"}
    parsed = ChatCompletion.model_validate((await make().send(chat(body))).body)
    [call] = parsed.choices[0].message.tool_calls or []
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, PERSON)
    assert arguments["age"] == 18 and arguments["pet"]["species"]


async def test_auto_calls_the_tool_the_message_names_and_answers_after_its_result() -> None:
    body = {
        **CHAT_BODY,
        "messages": [{"role": "user", "content": "What is the time in Paris?"}],
        "tools": [
            *TOOLS,
            {"type": "function", "function": {"name": "time", "parameters": {"type": "object"}}},
        ],
    }
    message = (await make().send(chat(body))).body["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["name"] == "time"
    call = {"role": "assistant", "content": None, "tool_calls": message["tool_calls"]}
    result = {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "9:00"}
    body["messages"] = [*body["messages"], call, result]
    parsed = ChatCompletion.model_validate((await make().send(chat(body))).body)
    assert parsed.choices[0].finish_reason == "stop"
    assert parsed.choices[0].message.content and not parsed.choices[0].message.tool_calls


async def test_n_choices_each_with_its_index_and_usage_for_all() -> None:
    provider = make(MockConfig(quality=1.0, completion_tokens=10))
    parsed = ChatCompletion.model_validate((await provider.send(chat({**CHAT_BODY, "n": 3}))).body)
    assert [c.index for c in parsed.choices] == [0, 1, 2]
    assert all(c.message.content for c in parsed.choices)
    assert parsed.usage is not None and parsed.usage.completion_tokens == 30
    body = {**CHAT_BODY, "n": 2, "stream": True}
    chunks = [
        ChatCompletionChunk.model_validate(d)
        for _, d in await collect(await provider.stream(chat(body)))
    ]
    texts = ["", ""]
    for c in chunks:
        texts[c.choices[0].index] += c.choices[0].delta.content or ""
    assert texts[0] == texts[1] == parsed.choices[0].message.content
    finished = {
        c.choices[0].index: c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason
    }
    assert finished == {0: "stop", 1: "stop"}


async def test_logprobs_when_asked_only() -> None:
    provider = make(MockConfig(quality=1.0))
    plain = ChatCompletion.model_validate((await provider.send(chat())).body)
    assert plain.choices[0].logprobs is None
    body = {**CHAT_BODY, "logprobs": True, "top_logprobs": 3}
    parsed = ChatCompletion.model_validate((await provider.send(chat(body))).body)
    logprobs = parsed.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert "".join(t.token for t in logprobs.content) == parsed.choices[0].message.content
    assert all(len(t.top_logprobs) == 3 and t.logprob < 0 for t in logprobs.content)
    assert all(bytes(t.bytes or []) == t.token.encode() for t in logprobs.content)
    stream = await provider.stream(chat({**body, "stream": True}))
    chunks = [ChatCompletionChunk.model_validate(d) for _, d in await collect(stream)]
    streamed = [
        t.token
        for c in chunks
        if c.choices[0].logprobs
        for t in c.choices[0].logprobs.content or []
    ]
    assert "".join(streamed) == parsed.choices[0].message.content


async def test_chat_stream_chunks_validate_and_add_up() -> None:
    provider = make(MockConfig(quality=1.0, prompt_tokens=9))
    whole = (await provider.send(chat())).body["choices"][0]["message"]["content"]
    stream = await provider.stream(chat({**CHAT_BODY, "stream": True}))
    assert stream.usage is None
    events = await collect(stream)
    chunks = [ChatCompletionChunk.model_validate(data) for _, data in events]
    assert all(name is None for name, _ in events)
    assert 4 <= len(chunks) <= 8
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].delta.content is None
    assert all(c.usage is None for c in chunks)
    assert stream.finish_reason == "stop"
    assert stream.usage is not None
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (9, 16)


async def test_include_usage_adds_a_final_usage_chunk_only_when_asked() -> None:
    provider = make(MockConfig(quality=1.0))
    body = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
    events = await collect(await provider.stream(chat(body)))
    last = ChatCompletionChunk.model_validate(events[-1][1])
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens == 16
    assert all(data.get("choices") for _, data in events[:-1])
    body["stream_options"] = {"include_usage": False}
    events = await collect(await provider.stream(chat(body)))
    assert all(data["choices"] for _, data in events)
    assert all("usage" not in data for _, data in events)


async def test_chat_stream_tool_call() -> None:
    provider = make()
    body = {**CHAT_BODY, "stream": True, "tools": TOOLS, "tool_choice": "required"}
    stream = await provider.stream(chat(body))
    chunks = [ChatCompletionChunk.model_validate(d) for _, d in await collect(stream)]
    first = chunks[0].choices[0].delta.tool_calls
    assert first is not None and first[0].function is not None
    assert first[0].function.name == "get_weather"
    arguments = "".join(
        (c.choices[0].delta.tool_calls or [])[0].function.arguments or ""
        for c in chunks
        if c.choices[0].delta.tool_calls
    )
    assert json.loads(arguments) == {}
    assert len([c for c in chunks if c.choices[0].delta.tool_calls]) >= 2
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert stream.finish_reason == "tool_calls"


async def test_stream_stops_after_aclose() -> None:
    provider = make()
    stream = await provider.stream(chat({**CHAT_BODY, "stream": True}))
    seen = []
    async for event in stream:
        seen.append(event)
        await stream.aclose()
    assert len(seen) == 1
