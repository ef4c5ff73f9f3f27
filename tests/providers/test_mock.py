"""The mock upstream: deterministic misbehaviour and OpenAI-exact shapes on every endpoint."""

from __future__ import annotations

import base64
import io
import json
import math
import wave
from array import array
from typing import Any

import pytest
from openai.types import Completion, CreateEmbeddingResponse, ImagesResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.video import Video
from pydantic import TypeAdapter

from gateway.config import MockConfig
from gateway.types import Endpoint
from providers.base import Call, Chunk, ProviderError
from providers.mock import MockProvider

CHAT_BODY = {"model": "client-name", "messages": [{"role": "user", "content": "Say hi"}]}
EVENT = TypeAdapter(ResponseStreamEvent)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make(
    default: MockConfig | None = None,
    models: dict[str, MockConfig] | None = None,
    sleeps: Sleeps | None = None,
    clock: FakeClock | None = None,
) -> MockProvider:
    return MockProvider(
        "mocky",
        models or {},
        default or MockConfig(quality=1.0),
        sleep=sleeps if sleeps is not None else Sleeps(),
        clock=clock or FakeClock(),
    )


def chat(body: dict[str, Any] | None = None, model: str = "up-model") -> Call:
    return Call(Endpoint.CHAT, body or CHAT_BODY, model)


async def outcomes(provider: MockProvider, count: int) -> list[str]:
    seen = []
    for _ in range(count):
        try:
            reply = await provider.send(chat())
        except ProviderError as exc:
            seen.append(exc.kind)
        else:
            seen.append(reply.body["choices"][0]["finish_reason"])
    return seen


async def collect(stream: Any) -> list[Chunk]:
    return [event async for event in stream]


# ------------------------------------------------------------------ determinism and failures


async def test_same_seed_gives_same_sequence_and_other_seed_differs() -> None:
    def config(seed: int) -> MockConfig:
        return MockConfig(
            failure_rate=0.5, failure_kinds=["5xx", "429", "timeout"], quality=0.2, seed=seed
        )

    first = await outcomes(make(config(7)), 60)
    second = await outcomes(make(config(7)), 60)
    other = await outcomes(make(config(8)), 60)
    assert first == second
    assert first != other
    assert {"server_error", "rate_limited", "timeout", "stop"} <= set(first)


async def test_each_model_has_its_own_sequence() -> None:
    flaky = MockConfig(failure_rate=0.5, seed=3)
    provider = make(models={"a": flaky, "b": flaky})
    a_then_b = []
    for _ in range(20):
        for name in ("a", "b"):
            try:
                await provider.send(chat(model=name))
                a_then_b.append((name, True))
            except ProviderError:
                a_then_b.append((name, False))
    a = [ok for name, ok in a_then_b if name == "a"]
    b = [ok for name, ok in a_then_b if name == "b"]
    assert a == b  # interleaving calls does not disturb either model's sequence


async def test_failure_rate_zero_never_fails() -> None:
    provider = make(MockConfig(failure_rate=0.0, quality=1.0))
    assert set(await outcomes(provider, 100)) == {"stop"}


@pytest.mark.parametrize(
    ("kind", "expected", "status"),
    [
        ("5xx", "server_error", 500),
        ("429", "rate_limited", 429),
        ("timeout", "timeout", None),
        ("malformed", "invalid_body", None),
    ],
)
async def test_failure_rate_one_raises_the_mapped_kind(
    kind: str, expected: str, status: int | None
) -> None:
    provider = make(MockConfig(failure_rate=1.0, failure_kinds=[kind]))
    for _ in range(5):
        with pytest.raises(ProviderError) as caught:
            await provider.send(chat())
        assert caught.value.kind == expected
        assert caught.value.status == status
        assert caught.value.retryable
    if kind == "5xx":
        assert caught.value.message == "mocky: simulated upstream error (HTTP 500)"
    if kind == "429":
        assert caught.value.retry_after == 1.0


async def test_every_endpoint_can_fail_and_streams_fail_before_returning() -> None:
    provider = make(MockConfig(failure_rate=1.0))
    body = {"input": "x", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}
    for endpoint in (Endpoint.EMBEDDINGS, Endpoint.IMAGES, Endpoint.VIDEOS, Endpoint.RESPONSES):
        with pytest.raises(ProviderError, match="HTTP 500"):
            await provider.send(Call(endpoint, body, "m"))
    for endpoint in (Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES):
        with pytest.raises(ProviderError, match="HTTP 500"):
            await provider.stream(Call(endpoint, body, "m", stream=True))
    with pytest.raises(ProviderError, match="HTTP 500"):
        await provider.binary(Call(Endpoint.SPEECH, body, "m"))


async def test_unknown_models_use_the_default_and_known_ones_their_own() -> None:
    provider = make(
        MockConfig(failure_rate=1.0), models={"good": MockConfig(failure_rate=0.0, quality=1.0)}
    )
    reply = await provider.send(chat(model="good"))
    assert reply.body["model"] == "good"
    with pytest.raises(ProviderError):
        await provider.send(chat(model="anything-else"))


async def test_unsupported_combinations() -> None:
    provider = make()
    with pytest.raises(ProviderError) as caught:
        await provider.stream(Call(Endpoint.EMBEDDINGS, {"input": "x"}, "m", stream=True))
    assert caught.value.kind == "unsupported"
    with pytest.raises(ProviderError):
        await provider.binary(chat())
    with pytest.raises(ProviderError):
        await provider.send(Call(Endpoint.SPEECH, {"input": "x"}, "m"))
    assert all(provider.supports(endpoint) for endpoint in Endpoint)


# ------------------------------------------------------------------ latency


async def test_latency_goes_to_the_injected_sleep() -> None:
    sleeps = Sleeps()
    provider = make(MockConfig(latency_ms=250), sleeps=sleeps)
    await provider.send(chat())
    assert sleeps == [0.25]


async def test_jitter_stays_within_bounds_and_never_goes_negative() -> None:
    sleeps = Sleeps()
    provider = make(MockConfig(latency_ms=100, latency_jitter_ms=50), sleeps=sleeps)
    for _ in range(50):
        await provider.send(chat())
    assert len(sleeps) == 50
    assert all(0.05 <= s <= 0.15 for s in sleeps)
    assert len(set(sleeps)) > 1
    sleeps.clear()
    provider = make(MockConfig(latency_ms=0, latency_jitter_ms=50), sleeps=sleeps)
    for _ in range(50):
        await provider.send(chat())
    assert all(s > 0 for s in sleeps)


async def test_zero_latency_never_calls_sleep() -> None:
    sleeps = Sleeps()
    provider = make(MockConfig(latency_ms=0), sleeps=sleeps)
    await provider.send(chat())
    await collect(await provider.stream(chat({**CHAT_BODY, "stream": True})))
    audio = await provider.binary(Call(Endpoint.SPEECH, {"input": "hi"}, "tts"))
    async for _ in audio:
        pass
    assert sleeps == []


async def test_stream_waits_ttft_then_spreads_the_rest_over_content() -> None:
    sleeps = Sleeps()
    provider = make(MockConfig(latency_ms=1000, ttft_ms=200, quality=1.0), sleeps=sleeps)
    stream = await provider.stream(chat({**CHAT_BODY, "stream": True}))
    assert sleeps == [0.2]  # the first byte arrives before the stream is handed over
    events = await collect(stream)
    pieces = [e for _, e in events if e["choices"] and e["choices"][0]["delta"].get("content")]
    assert len(sleeps) == 1 + len(pieces)
    assert math.isclose(sum(sleeps), 1.0)


async def test_stream_ttft_defaults_to_the_whole_latency() -> None:
    sleeps = Sleeps()
    provider = make(MockConfig(latency_ms=300), sleeps=sleeps)
    await collect(await provider.stream(chat({**CHAT_BODY, "stream": True})))
    assert sleeps == [0.3]


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


async def test_prompt_tokens_are_estimated_from_the_text() -> None:
    provider = make()
    body = {
        "messages": [
            {"role": "system", "content": "x" * 40},
            {"role": "user", "content": [{"type": "text", "text": "y" * 41}]},
        ]
    }
    reply = await provider.send(chat(body))
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 81 // 4 + 1


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_caps_the_answer(key: str) -> None:
    provider = make(MockConfig(completion_tokens=16, quality=1.0))
    reply = await provider.send(chat({**CHAT_BODY, key: 5}))
    parsed = ChatCompletion.model_validate(reply.body)
    assert parsed.choices[0].finish_reason == "length"
    assert parsed.usage is not None and parsed.usage.completion_tokens == 5
    assert len(parsed.choices[0].message.content.split()) == 5
    roomy = await provider.send(chat({**CHAT_BODY, key: 500}))
    assert roomy.body["choices"][0]["finish_reason"] == "stop"


async def test_low_quality_truncates_some_answers() -> None:
    provider = make(MockConfig(quality=0.0, seed=1))
    reasons = [
        (await provider.send(chat())).body["choices"][0]["finish_reason"] for _ in range(200)
    ]
    share = reasons.count("length") / len(reasons)
    assert 0.2 < share < 0.4  # (1 - quality) * 0.3
    perfect = make(MockConfig(quality=1.0))
    assert set(await outcomes(perfect, 50)) == {"stop"}


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
        ("auto", None),
        ("none", None),
        (None, None),
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


# ------------------------------------------------------------------ completions


async def test_completions_shape_and_stream() -> None:
    provider = make(MockConfig(quality=1.0))
    body = {"model": "x", "prompt": "Once upon a time"}
    reply = await provider.send(Call(Endpoint.COMPLETIONS, body, "text-up"))
    parsed = Completion.model_validate(reply.body)
    assert parsed.object == "text_completion"
    assert parsed.id.startswith("cmpl-mock-")
    assert parsed.model == "text-up"
    assert parsed.choices[0].finish_reason == "stop"
    assert parsed.choices[0].logprobs is None
    assert parsed.usage is not None and parsed.usage.prompt_tokens == 16 // 4 + 1

    capped = await provider.send(Call(Endpoint.COMPLETIONS, {**body, "max_tokens": 2}, "t"))
    assert capped.body["choices"][0]["finish_reason"] == "length"

    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    stream = await provider.stream(Call(Endpoint.COMPLETIONS, streamed, "text-up", True))
    events = [data for _, data in await collect(stream)]
    assert all(e["object"] == "text_completion" for e in events)
    text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
    assert text == parsed.choices[0].text
    finishing = Completion.model_validate(events[-2])
    assert finishing.choices[0].finish_reason == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 16
    assert stream.finish_reason == "stop"


# ------------------------------------------------------------------ embeddings


async def test_embeddings_float_vectors_are_normalised_and_deterministic() -> None:
    provider = make()
    body = {"model": "e", "input": ["alpha", "beta", "alpha"], "dimensions": 8}
    reply = await provider.send(Call(Endpoint.EMBEDDINGS, body, "embed-up"))
    parsed = CreateEmbeddingResponse.model_validate(reply.body)
    assert parsed.model == "embed-up"
    assert [d.index for d in parsed.data] == [0, 1, 2]
    vectors = [d.embedding for d in parsed.data]
    assert all(len(v) == 8 for v in vectors)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-5) for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    again = await make().send(Call(Endpoint.EMBEDDINGS, body, "embed-up"))
    assert again.body["data"][1]["embedding"] == vectors[1]
    assert parsed.usage.prompt_tokens == parsed.usage.total_tokens == 14 // 4 + 1


async def test_embeddings_base64_decodes_to_the_same_vector() -> None:
    provider = make()
    plain = await provider.send(Call(Endpoint.EMBEDDINGS, {"input": "hello"}, "e"))
    body = {"input": "hello", "encoding_format": "base64"}
    encoded = await provider.send(Call(Endpoint.EMBEDDINGS, body, "e"))
    CreateEmbeddingResponse.model_validate(plain.body)
    raw = base64.b64decode(encoded.body["data"][0]["embedding"])
    decoded = array("f")
    decoded.frombytes(raw)
    assert len(decoded) == 16  # the default dimension
    assert decoded.tolist() == plain.body["data"][0]["embedding"]

    wide = await provider.send(Call(Endpoint.EMBEDDINGS, {**body, "dimensions": 64}, "e"))
    assert len(base64.b64decode(wide.body["data"][0]["embedding"])) == 64 * 4


@pytest.mark.parametrize(
    ("value", "count"),
    [("one", 1), (["a", "b"], 2), ([1, 2, 3], 1), ([[1, 2], [3]], 2)],
)
async def test_embeddings_accept_every_input_form(value: Any, count: int) -> None:
    reply = await make().send(Call(Endpoint.EMBEDDINGS, {"input": value}, "e"))
    assert len(CreateEmbeddingResponse.model_validate(reply.body).data) == count


@pytest.mark.parametrize("body", [{"input": 5}, {"input": []}, {"input": "x", "dimensions": 0}])
async def test_embeddings_reject_bad_requests(body: dict[str, Any]) -> None:
    with pytest.raises(ProviderError) as caught:
        await make().send(Call(Endpoint.EMBEDDINGS, body, "e"))
    assert caught.value.kind == "bad_request"
    assert caught.value.status == 400


# ------------------------------------------------------------------ images, speech, videos


async def test_images_b64_and_url() -> None:
    provider = make()
    reply = await provider.send(Call(Endpoint.IMAGES, {"prompt": "a cat", "n": 3}, "img-up"))
    parsed = ImagesResponse.model_validate(reply.body)
    assert parsed.data is not None and len(parsed.data) == 3
    png = base64.b64decode(parsed.data[0].b64_json or "")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert png[12:16] == b"IHDR" and png.endswith(b"IEND\xaeB`\x82")
    assert reply.usage is not None and reply.usage.images == 3

    body = {"prompt": "a cat", "response_format": "url"}
    urls = ImagesResponse.model_validate(
        (await provider.send(Call(Endpoint.IMAGES, body, "i"))).body
    )
    assert urls.data is not None and len(urls.data) == 1
    assert (urls.data[0].url or "").startswith("https://mock.invalid/images/")
    assert (urls.data[0].url or "").endswith(".png")


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [
        (None, "audio/mpeg"),
        ("mp3", "audio/mpeg"),
        ("wav", "audio/wav"),
        ("opus", "audio/ogg"),
        ("aac", "audio/aac"),
        ("flac", "audio/flac"),
        ("pcm", "audio/pcm"),
    ],
)
async def test_speech_is_a_small_wav(fmt: str | None, media_type: str) -> None:
    body: dict[str, Any] = {"input": "Hello there", "voice": "alloy"}
    if fmt:
        body["response_format"] = fmt
    reply = await make().binary(Call(Endpoint.SPEECH, body, "tts-up"))
    assert reply.media_type == media_type
    pieces = [piece async for piece in reply]
    await reply.aclose()
    assert len(pieces) >= 2
    audio = b"".join(pieces)
    assert audio.startswith(b"RIFF") and audio[8:12] == b"WAVE"
    with wave.open(io.BytesIO(audio)) as parsed:
        assert parsed.getnframes() / parsed.getframerate() == pytest.approx(0.1)
    assert reply.usage is not None and reply.usage.seconds == pytest.approx(0.1)


async def test_video_job_moves_from_in_progress_to_completed() -> None:
    clock = FakeClock(1_700_000_000.0)
    provider = make(MockConfig(latency_ms=0), clock=clock)
    body = {"model": "sora", "prompt": "a sunrise", "seconds": "8", "size": "1280x720"}
    created = await provider.send(Call(Endpoint.VIDEOS, body, "video-up"))
    job = Video.model_validate(created.body)
    assert job.id.startswith("video_")
    assert job.status == "queued" and job.progress == 0
    assert (job.seconds, job.size, job.prompt, job.model) == (
        "8",
        "1280x720",
        "a sunrise",
        "video-up",
    )
    assert job.created_at == 1_700_000_000
    assert created.usage is not None and created.usage.seconds == 8.0

    status = Call(Endpoint.VIDEO_STATUS, {}, "video-up", resource_id=job.id)
    clock.now += 0.25
    running = Video.model_validate((await provider.send(status)).body)
    assert running.status == "in_progress" and running.progress == 25
    assert running.completed_at is None
    clock.now += 1.0
    done = Video.model_validate((await provider.send(status)).body)
    assert done.status == "completed" and done.progress == 100
    assert done.completed_at == 1_700_000_001


async def test_video_duration_follows_latency_and_defaults() -> None:
    clock = FakeClock()
    provider = make(MockConfig(latency_ms=4000), clock=clock)
    created = await provider.send(Call(Endpoint.VIDEOS, {"prompt": "p"}, "v"))
    assert (created.body["seconds"], created.body["size"]) == ("4", "720x1280")
    status = Call(Endpoint.VIDEO_STATUS, {}, "v", resource_id=created.body["id"])
    clock.now += 2.0
    assert (await provider.send(status)).body["progress"] == 50
    clock.now += 2.0
    assert (await provider.send(status)).body["status"] == "completed"


async def test_unknown_video_is_a_404() -> None:
    provider = make()
    with pytest.raises(ProviderError) as caught:
        await provider.send(Call(Endpoint.VIDEO_STATUS, {}, "v", resource_id="video_nope"))
    assert caught.value.status == 404
    assert "video_nope" in caught.value.message


# ------------------------------------------------------------------ responses


RESPONSES_BODY = {"model": "x", "input": "Tell me a story", "instructions": "Be brief"}


async def test_responses_shape_validates_with_the_sdk() -> None:
    provider = make(MockConfig(quality=1.0, prompt_tokens=12, completion_tokens=10))
    reply = await provider.send(Call(Endpoint.RESPONSES, RESPONSES_BODY, "resp-up"))
    parsed = Response.model_validate(reply.body)
    assert parsed.id.startswith("resp_") and parsed.object == "response"
    assert parsed.status == "completed"
    assert parsed.model == "resp-up"
    assert parsed.instructions == "Be brief"
    assert parsed.output_text.startswith("Mock answer from resp-up: ")
    assert parsed.usage is not None
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (12, 10)
    assert parsed.usage.total_tokens == 22
    assert reply.usage is not None and reply.usage.completion_tokens == 10


async def test_responses_cap_and_json_format() -> None:
    provider = make(MockConfig(quality=1.0))
    capped = {**RESPONSES_BODY, "max_output_tokens": 3}
    parsed = Response.model_validate(
        (await provider.send(Call(Endpoint.RESPONSES, capped, "r"))).body
    )
    assert parsed.status == "incomplete"
    assert parsed.incomplete_details is not None
    assert parsed.incomplete_details.reason == "max_output_tokens"
    shaped = {**RESPONSES_BODY, "text": {"format": {"type": "json_object"}}}
    parsed = Response.model_validate(
        (await provider.send(Call(Endpoint.RESPONSES, shaped, "r"))).body
    )
    assert "answer" in json.loads(parsed.output_text)


async def test_responses_stream_events() -> None:
    provider = make(MockConfig(quality=1.0, prompt_tokens=5))
    stream = await provider.stream(Call(Endpoint.RESPONSES, RESPONSES_BODY, "resp-up", True))
    events = await collect(stream)
    names = [name for name, _ in events]
    assert names[0] == "response.created"
    assert names[-1] == "response.completed"
    assert "response.output_text.delta" in names
    parsed = [EVENT.validate_python(data) for _, data in events]
    assert [e.type for e in parsed] == names
    assert [e.sequence_number for e in parsed] == list(range(len(events)))
    deltas = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    final = Response.model_validate(events[-1][1]["response"])
    assert deltas == final.output_text
    assert final.usage is not None and final.usage.input_tokens == 5
    assert events[0][1]["response"]["status"] == "in_progress"
    assert stream.usage is not None
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (5, 16)


async def test_truncated_responses_stream_ends_incomplete() -> None:
    provider = make(MockConfig(quality=1.0))
    body = {**RESPONSES_BODY, "max_output_tokens": 2}
    stream = await provider.stream(Call(Endpoint.RESPONSES, body, "r", True))
    events = await collect(stream)
    assert events[-1][0] == "response.incomplete"
    EVENT.validate_python(events[-1][1])
    assert stream.finish_reason == "length"
