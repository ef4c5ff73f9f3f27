"""A deterministic, in-process stand-in for an upstream API, for the demo, tests and benchmarks.

Real upstreams cost money, need keys and never fail on cue. The mock answers every
endpoint in OpenAI's exact shapes without touching the network, and misbehaves on
purpose: each model waits, fails, and truncates its answers as its `MockConfig` says.
Every model draws from its own `random.Random(seed)`, so one configuration always
yields the same sequence of failures, latencies and truncations. The per-call work is
a handful of random draws and small dicts; the payloads (built in
`providers.mock.payloads`) are precomputed or cached.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from providers.anthropic_inbound import messages_via_chat, stream_via_chat
from providers.base import (
    BinaryReply,
    Call,
    Chunk,
    ChunkStream,
    Endpoint,
    Provider,
    Reply,
    Usage,
    estimate_prompt,
)
from providers.errors import (
    BadRequest,
    InvalidResponse,
    RateLimited,
    UpstreamError,
    UpstreamServerError,
    UpstreamTimeout,
)
from providers.mock import media, payloads
from providers.mock.config import MockConfig

__all__ = ["MockProvider"]

Sleep = Callable[[float], Awaitable[Any]]
Clock = Callable[[], float]

_TEXT = frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES})
_MAX_VIDEOS = 1000


@dataclass(slots=True)
class _Model:
    """One upstream model's behaviour and the random sequence only it draws from."""

    config: MockConfig
    rng: random.Random
    kinds: tuple[str, ...]

    @classmethod
    def create(cls, config: MockConfig) -> _Model:
        return cls(config, random.Random(config.seed), tuple(config.failure_kinds) or ("5xx",))

    def failure(self) -> str | None:
        rate = self.config.failure_rate
        if rate > 0 and self.rng.random() < rate:
            return self.rng.choice(self.kinds)
        return None

    def delay(self) -> float:
        latency = self.config.latency_ms
        jitter = self.config.latency_jitter_ms
        if jitter > 0:
            latency += self.rng.uniform(-jitter, jitter)
        return max(0.0, latency) / 1000

    def truncated(self) -> bool:
        quality = self.config.quality
        return quality < 1 and self.rng.random() < (1 - quality) * 0.3


@dataclass(slots=True)
class _Video:
    job: dict[str, Any]
    started: float
    duration: float


class MockProvider(Provider):
    """Serves every endpoint from memory, with per-model simulated latency and failures."""

    endpoints = frozenset(Endpoint)

    def __init__(
        self,
        name: str,
        models: Mapping[str, MockConfig],
        default: MockConfig,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(name)
        self._configs = dict(models)
        self._default = default
        self._sleep = sleep
        self._clock = clock
        self._models: dict[str, _Model] = {}
        self._ids = itertools.count(1)
        self._videos: dict[str, _Video] = {}

    async def send(self, call: Call) -> Reply:
        if call.endpoint is Endpoint.VIDEO_STATUS:
            # A lookup of a job this provider already accepted: no simulated misbehaviour.
            return Reply(self._video_status(call.resource_id))
        if call.endpoint is Endpoint.SPEECH:
            raise self.unsupported(call.endpoint)
        if call.endpoint is Endpoint.MESSAGES or call.endpoint is Endpoint.COUNT_TOKENS:
            return await messages_via_chat(self, call)  # as an OpenAI-compatible upstream
        model = self._model(call.upstream_model)
        await self._arrive(model)
        if call.endpoint in _TEXT:
            return self._text(call, model)
        created = int(self._clock())
        body = call.body
        if call.endpoint is Endpoint.EMBEDDINGS:
            prompt = self._prompt_tokens(model, body)
            data = media.embeddings_body(body, call.upstream_model, prompt)
            return Reply(data, Usage(prompt_tokens=prompt))
        if call.endpoint is Endpoint.IMAGES:
            data = media.images_body(body, created, f"img_mock_{next(self._ids)}")
            return Reply(data, Usage(images=len(data["data"])))
        return self._create_video(call, created)

    async def stream(self, call: Call) -> ChunkStream:
        if call.endpoint is Endpoint.MESSAGES:
            return await stream_via_chat(self, call)
        if call.endpoint not in _TEXT:
            raise self.unsupported(call.endpoint)
        model = self._model(call.upstream_model)
        rest = await self._arrive(model, stream=True)
        answer, number, created = self._answer(call, model)
        include_usage = _include_usage(call.body)
        upstream = call.upstream_model
        if call.endpoint is Endpoint.CHAT:
            script = payloads.chat_script(
                f"chatcmpl-mock-{number}", created, upstream, answer, include_usage
            )
        elif call.endpoint is Endpoint.COMPLETIONS:
            script = payloads.completion_script(
                f"cmpl-mock-{number}", created, upstream, answer, include_usage
            )
        else:
            script = payloads.response_script(self._response(call, answer, number, created))
        pause = rest / script.count if script.count else 0.0
        usage = Usage(answer.prompt, answer.completion)
        return _Replay(script, pause, self._sleep, usage, answer.finish)

    async def binary(self, call: Call) -> BinaryReply:
        if call.endpoint is not Endpoint.SPEECH:
            raise self.unsupported(call.endpoint)
        model = self._model(call.upstream_model)
        await self._arrive(model)
        audio, media_type, seconds = media.speech(call.body.get("response_format"))
        usage = Usage(self._prompt_tokens(model, call.body), seconds=seconds)
        return _Audio(audio, media_type, usage)

    # ------------------------------------------------------------ fate

    def _model(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            model = _Model.create(self._configs.get(name, self._default))
            self._models[name] = model
        return model

    async def _arrive(self, model: _Model, stream: bool = False) -> float:
        """Roll the call's fate, wait for its first byte, raise if it fails.

        Returns the latency still owed after the first byte (spread over a stream's chunks).
        """
        failure = model.failure()
        total = model.delay()
        first = total
        if stream and model.config.ttft_ms is not None:
            first = model.config.ttft_ms / 1000
        if first > 0:
            await self._sleep(first)
        if failure is not None:
            raise self._error(failure)
        return max(0.0, total - first)

    def _error(self, kind: str) -> UpstreamError:
        if kind == "429":
            return RateLimited(
                f"{self.name}: simulated rate limit (HTTP 429)", status=429, retry_after=1.0
            )
        if kind == "timeout":
            return UpstreamTimeout(f"{self.name}: simulated upstream timeout")
        if kind == "malformed":
            return InvalidResponse(f"{self.name}: simulated malformed upstream body")
        return UpstreamServerError(f"{self.name}: simulated upstream error (HTTP 500)", status=500)

    # ------------------------------------------------------------ text

    def _prompt_tokens(self, model: _Model, body: dict[str, Any]) -> int:
        configured = model.config.prompt_tokens
        return configured if configured is not None else estimate_prompt(body)

    def _answer(self, call: Call, model: _Model) -> tuple[payloads.Answer, int, int]:
        """The answer to a text call, with the number that names it and its timestamp."""
        number = next(self._ids)
        created = int(self._clock())
        body = call.body
        prompt = self._prompt_tokens(model, body)
        total = model.config.completion_tokens
        n = payloads.choice_count(body) if call.endpoint is not Endpoint.RESPONSES else 1
        if call.endpoint is not Endpoint.COMPLETIONS:
            tool = payloads.tool_call(body)
            if tool is not None:
                name, parameters = tool
                arguments = payloads.tool_arguments(parameters)
                answer = payloads.Answer(
                    arguments, "tool_calls", prompt, total * n, name, f"call_mock_{number}", n
                )
                return answer, number, created
        cap = payloads.token_cap(body, call.endpoint)
        if cap is not None and cap < total:
            kept, completion, cut = cap, cap, True
        elif model.truncated():
            kept, completion, cut = max(1, total * 2 // 3), total, True
        else:
            kept, completion, cut = total, total, False
        schema = payloads.json_format(body, call.endpoint)
        text = payloads.answer_text(call.upstream_model, total, kept, cut, schema)
        finish = "length" if cut else "stop"
        top = payloads.logprobs_asked(body, call.endpoint)
        answer = payloads.Answer(text, finish, prompt, completion * n, choices=n, top_logprobs=top)
        return answer, number, created

    def _text(self, call: Call, model: _Model) -> Reply:
        answer, number, created = self._answer(call, model)
        usage = Usage(answer.prompt, answer.completion)
        if call.endpoint is Endpoint.CHAT:
            body = payloads.chat_body(
                f"chatcmpl-mock-{number}", created, call.upstream_model, answer
            )
        elif call.endpoint is Endpoint.COMPLETIONS:
            body = payloads.completion_body(
                f"cmpl-mock-{number}", created, call.upstream_model, answer
            )
        else:
            body = self._response(call, answer, number, created)
        return Reply(body, usage)

    def _response(
        self, call: Call, answer: payloads.Answer, number: int, created: int
    ) -> dict[str, Any]:
        return payloads.response_body(
            f"resp_mock_{number}",
            f"msg_mock_{number}",
            created,
            call.upstream_model,
            answer,
            call.body,
        )

    # ------------------------------------------------------------ videos

    def _create_video(self, call: Call, created: int) -> Reply:
        video_id = f"video_{secrets.token_hex(12)}"
        job = media.video_job(video_id, created, call.upstream_model, call.body)
        duration = max(1.0, self._model(call.upstream_model).config.latency_ms / 1000)
        self._videos[video_id] = _Video(job, self._clock(), duration)
        while len(self._videos) > _MAX_VIDEOS:
            del self._videos[next(iter(self._videos))]
        try:
            usage = Usage(seconds=float(job["seconds"]))
        except ValueError:
            usage = None
        return Reply(dict(job), usage)

    def _video_status(self, video_id: str | None) -> dict[str, Any]:
        video = self._videos.get(video_id or "")
        if video is None:
            raise BadRequest(f"{self.name}: video '{video_id}' not found", status=404)
        elapsed = self._clock() - video.started
        if elapsed < video.duration:
            progress = min(99, max(0, int(100 * elapsed / video.duration)))
            return {**video.job, "status": "in_progress", "progress": progress}
        done = int(video.started + video.duration)
        return {**video.job, "status": "completed", "progress": 100, "completed_at": done}


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class _Replay(ChunkStream):
    """Plays a prepared script, pausing before each content event; iterate it once."""

    def __init__(
        self, script: payloads.Script, pause: float, sleep: Sleep, usage: Usage, finish: str
    ) -> None:
        self._script = script
        self._pause = pause
        self._sleep = sleep
        self._usage = usage
        self._finish = finish
        self._closed = False

    async def batches(self) -> AsyncIterator[list[Chunk]]:
        """Events with no pause between them arrive together, as from a network read."""
        script = self._script
        content = range(script.first, script.first + script.count)
        batch: list[Chunk] = []
        for index, event in enumerate(script.events):
            if self._closed:
                return
            if self._pause > 0 and index in content:
                if batch:
                    yield batch
                    batch = []
                    if self._closed_meanwhile():
                        return
                await self._sleep(self._pause)
            if index == script.settle:
                self.usage = self._usage
                self.finish_reason = self._finish
            batch.append(event)
        if batch and not self._closed:
            self.complete = True
            yield batch

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        async for batch in self.batches():
            for chunk in batch:
                if self._closed:
                    return
                yield chunk

    async def aclose(self) -> None:
        self._closed = True

    def _closed_meanwhile(self) -> bool:
        """`_closed` read anew after a yield, where aclose() may have run: a call, since a
        type checker takes an attribute it just tested to be unchanged since the test."""
        return self._closed


class _Audio(BinaryReply):
    """Precomputed silent audio, delivered in two pieces like a real chunked body."""

    def __init__(self, audio: bytes, media_type: str, usage: Usage) -> None:
        self.audio = audio
        self.media_type = media_type
        self.usage = usage

    async def __aiter__(self) -> AsyncIterator[bytes]:
        half = len(self.audio) // 2
        yield self.audio[:half]
        yield self.audio[half:]

    async def aclose(self) -> None:
        pass
