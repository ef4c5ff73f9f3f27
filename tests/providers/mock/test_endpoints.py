"""The mock upstream's other endpoints: OpenAI-exact shapes for completions, embeddings,
images, speech, videos and responses."""

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
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.video import Video
from pydantic import TypeAdapter

from providers.base import Call, Endpoint
from providers.errors import ProviderError
from providers.mock.config import MockConfig
from tests.providers.mock.mock_helpers import FakeClock, collect, make

EVENT = TypeAdapter(ResponseStreamEvent)


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
    assert parsed.usage is not None and parsed.usage.prompt_tokens == 16 // 4  # 4 chars a token

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
    assert parsed.usage.prompt_tokens == parsed.usage.total_tokens == -(-14 // 4)


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


async def speech(fmt: str | None) -> tuple[str, bytes, float]:
    body: dict[str, Any] = {"input": "Hello there", "voice": "alloy"}
    if fmt:
        body["response_format"] = fmt
    reply = await make().binary(Call(Endpoint.SPEECH, body, "tts-up"))
    pieces = [piece async for piece in reply]
    await reply.aclose()
    assert len(pieces) >= 2
    assert reply.usage is not None and reply.usage.seconds is not None
    return reply.media_type, b"".join(pieces), reply.usage.seconds


def mp3_seconds(audio: bytes) -> float:
    """Walks MPEG-1 Layer III frames (no CRC, mono): each header's size must tile the file."""
    bitrates = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320]
    rates = [44_100, 48_000, 32_000]
    at, frames, rate = 0, 0, 0
    while at < len(audio):
        head = int.from_bytes(audio[at : at + 4], "big")
        assert head >> 21 == 0x7FF, "frame sync"
        assert (head >> 19) & 3 == 3 and (head >> 17) & 3 == 1, "MPEG-1 Layer III"
        rate = rates[(head >> 10) & 3]
        size = 144 * bitrates[(head >> 12) & 15] * 1000 // rate + ((head >> 9) & 1)
        at += size
        frames += 1
    assert at == len(audio)
    return frames * 1152 / rate


async def test_speech_defaults_to_real_mp3_frames() -> None:
    for fmt in (None, "mp3"):
        media_type, audio, seconds = await speech(fmt)
        assert media_type == "audio/mpeg"
        assert mp3_seconds(audio) == pytest.approx(seconds)
        assert seconds == pytest.approx(0.1, abs=0.01)


async def test_speech_wav_and_pcm_are_the_format_named() -> None:
    media_type, audio, seconds = await speech("wav")
    assert media_type == "audio/wav"
    with wave.open(io.BytesIO(audio)) as parsed:
        assert parsed.getnframes() / parsed.getframerate() == pytest.approx(seconds)
        assert (parsed.getframerate(), parsed.getsampwidth(), parsed.getnchannels()) == (
            24_000,
            2,
            1,
        )
    media_type, audio, seconds = await speech("pcm")
    assert media_type == "audio/pcm"
    assert len(audio) == 24_000 * 2 * seconds  # raw 24 kHz 16-bit mono, no header
    assert not audio.startswith(b"RIFF")


@pytest.mark.parametrize("fmt", ["opus", "aac", "flac", "nonsense"])
async def test_formats_the_mock_cannot_encode_are_labelled_as_the_wav_they_are(fmt: str) -> None:
    media_type, audio, seconds = await speech(fmt)
    assert media_type == "audio/wav"
    assert audio.startswith(b"RIFF") and audio[8:12] == b"WAVE"
    assert seconds == pytest.approx(0.1)


async def test_completion_logprobs_when_asked() -> None:
    provider = make(MockConfig(quality=1.0))
    body = {"model": "m", "prompt": "Say hi", "logprobs": 2, "n": 2}
    parsed = Completion.model_validate(
        (await provider.send(Call(Endpoint.COMPLETIONS, body, "m"))).body
    )
    assert [c.index for c in parsed.choices] == [0, 1]
    logprobs = parsed.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.text_offset
    assert "".join(logprobs.tokens) == parsed.choices[0].text
    assert all(len(top) == 2 for top in logprobs.top_logprobs or [])


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


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"],
    },
}


async def test_responses_call_a_tool_then_answer_after_its_output() -> None:
    provider = make(MockConfig(quality=1.0))
    body = {"model": "x", "input": "Weather in Oslo?", "tools": [WEATHER]}
    parsed = Response.model_validate(
        (await provider.send(Call(Endpoint.RESPONSES, body, "r"))).body
    )
    [call] = parsed.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "example", "days": 1}
    assert call.call_id.startswith("call_") and parsed.status == "completed"
    follow = {
        **body,
        "input": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    }  # fmt: skip
    answer = Response.model_validate(
        (await provider.send(Call(Endpoint.RESPONSES, follow, "r"))).body
    )
    assert answer.output_text and answer.output[0].type == "message"
    none = {**body, "tool_choice": "none"}
    plain = (await provider.send(Call(Endpoint.RESPONSES, none, "r"))).body
    assert plain["output"][0]["type"] == "message"


async def test_responses_stream_a_tool_call() -> None:
    provider = make(MockConfig(quality=1.0))
    body = {"model": "x", "input": "hi", "tools": [WEATHER], "tool_choice": "required"}
    stream = await provider.stream(Call(Endpoint.RESPONSES, body, "r"))
    events = [TypeAdapter(ResponseStreamEvent).validate_python(d) for _, d in await collect(stream)]
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert "".join(deltas) == done.arguments and json.loads(done.arguments)["city"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
