"""OpenAI-compatible upstreams (OpenAI, Groq, Together, Mistral, OpenRouter, vLLM, Ollama,
llama.cpp): the body passes through with only `model` rewritten."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from providers.anthropic_inbound import messages_via_chat, stream_via_chat
from providers.base import (
    BinaryReply,
    Call,
    Chunk,
    ChunkStream,
    Endpoint,
    Piece,
    RawChunk,
    Reply,
    Usage,
    json_text,
)
from providers.errors import (
    InvalidResponse,
    ResponseTooLarge,
    TransportError,
    UpstreamServerError,
    classify_status,
    redact,
    request_json,
    upstream_json,
)
from providers.http_provider import HttpProvider, endpoint_url
from providers.splice import frame, plain_text
from providers.sse import Event, chunk_batches
from providers.transport import EventMemory, Transport, UpstreamStream

__all__ = ["OpenAIProvider"]

_PATHS = {
    Endpoint.CHAT: "/chat/completions",
    Endpoint.COMPLETIONS: "/completions",
    Endpoint.EMBEDDINGS: "/embeddings",
    Endpoint.IMAGES: "/images/generations",
    Endpoint.SPEECH: "/audio/speech",
    Endpoint.VIDEOS: "/videos",
    Endpoint.VIDEO_STATUS: "/videos",
    Endpoint.RESPONSES: "/responses",
}
_USAGE_STREAMS = (Endpoint.CHAT, Endpoint.COMPLETIONS)
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})

_CONTENT = b'"content":"'
_MODEL = b',"model":"'
_NULL_USAGE = b',"usage":null'
_DELTA_KEYS = frozenset({"role", "content", "refusal"})
# A stream whose chunks are rarely plain (tool calls, another framing) stops looking
# for a template after this many: its chunks are parsed, as they would be anyway.
_MAX_MISSES = 8


class OpenAIProvider(HttpProvider):
    endpoints = frozenset((*_PATHS, Endpoint.MESSAGES, Endpoint.COUNT_TOKENS))  # via chat

    def __init__(
        self,
        name: str,
        base_url: str,
        transport: Transport,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name, transport, api_key)
        self._base = base_url
        self._urls = {endpoint: endpoint_url(base_url, path) for endpoint, path in _PATHS.items()}
        self._headers = {"content-type": "application/json", **(headers or {})}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._get_headers = {k: v for k, v in self._headers.items() if k != "content-type"}

    async def send(self, call: Call) -> Reply:
        if call.endpoint is Endpoint.VIDEO_STATUS:
            url = endpoint_url(self._base, f"/videos/{call.resource_id}")
            resp = await self._request("GET", url, self._get_headers, None, call.memory)
        else:
            post = self._urls.get(call.endpoint)
            if post is None:  # no path of its own: Anthropic's Messages API, via chat
                return await messages_via_chat(self, call)
            body = request_json({**call.body, "model": call.upstream_model})
            headers = self._with(self._headers, call)
            resp = await self._request("POST", post, headers, body, call.memory)
        if resp.status >= 400:
            raise classify_status(resp.status, resp.body, resp.headers, self.name, self._secrets)
        data = upstream_json(resp.body, f"{self.name}'s response body")
        return Reply(data, _usage(call.endpoint, data))

    async def stream(self, call: Call) -> ChunkStream:
        if call.endpoint is Endpoint.MESSAGES:
            return await stream_via_chat(self, call)
        body = {**call.body, "model": call.upstream_model, "stream": True}
        hide_usage = False
        if call.endpoint in _USAGE_STREAMS:
            options = body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage")):
                body["stream_options"] = {
                    **(options if isinstance(options, dict) else {}),
                    "include_usage": True,
                }
                hide_usage = True
        headers = self._with(self._headers, call)
        upstream = await self._open(self._url(call), headers, request_json(body))
        return _OpenAIChunks(upstream, self.name, hide_usage, self._secrets, call.event_memory)

    async def binary(self, call: Call) -> BinaryReply:
        body = request_json({**call.body, "model": call.upstream_model})
        upstream = await self._open(self._url(call), self._with(self._headers, call), body)
        return _Passthrough(upstream, self.name)

    def _url(self, call: Call) -> str:
        url = self._urls.get(call.endpoint)
        if url is None:
            raise self.unsupported(call.endpoint)
        return url


def _usage(endpoint: Endpoint, data: dict[str, Any]) -> Usage | None:
    if endpoint is Endpoint.IMAGES:
        images = data.get("data")
        return Usage(images=len(images) if isinstance(images, list) else 0)
    if endpoint is Endpoint.VIDEOS:
        try:
            return Usage(seconds=float(data.get("seconds") or 0))
        except (TypeError, ValueError):
            return None
    return Usage.from_openai(data.get("usage"))


class _OpenAIChunks(ChunkStream):
    def __init__(
        self,
        upstream: UpstreamStream,
        provider: str,
        hide_usage: bool,
        secrets: tuple[str, ...],
        memory: EventMemory | None = None,
    ) -> None:
        self._secrets = secrets
        self._memory = memory
        self._upstream = upstream
        self._provider = provider
        self._hide_usage = hide_usage
        self._served = (b"", b"")  # the response id and model the client sees, escaped
        # The last plain content chunk as (its bytes before and after the content, and
        # the same as the client gets them): `_read_pieces` forwards the chunks that
        # match it without parsing them.
        self._plain: tuple[bytes, bytes, bytes, bytes] | None = None
        self._misses = 0  # chunks parsed that could not be a template

    def batches(self) -> AsyncIterator[list[Chunk]]:
        return chunk_batches(
            self, self._upstream, self._read, self._provider, self._ended, self._memory
        )

    def pieces(self, response_id: str, model: str) -> AsyncIterator[Sequence[Piece]]:
        self._served = (json_text(response_id), json_text(model))
        return chunk_batches(
            self, self._upstream, self._read_pieces, self._provider, self._ended, self._memory
        )

    def _ended(self) -> None:
        if self.finish_reason is None:
            raise InvalidResponse(f"{self._provider}: the stream ended before it was complete")
        # Some upstreams close after the chunk with finish_reason and send no `[DONE]`:
        # the answer is whole all the same.
        self.complete = True

    def _read_pieces(self, events: list[Event], batch: list[Piece]) -> bool:
        """Like `_read`, but a chunk that matches the stream's last plain content chunk
        in every byte but its content is forwarded as bytes (`RawChunk`)."""
        plain = self._plain
        for event in events:
            name, data = event
            if plain is not None and name is None:
                head, tail, before, after = plain
                text = plain_text(data, head, tail)
                if text is not None:
                    batch.append(RawChunk(before + text + after, text))
                    continue
            parsed: list[Chunk] = []
            done = self._read([event], parsed)
            batch.extend(parsed)
            if done:
                return True
            if parsed and name is None and self._misses < _MAX_MISSES:
                plain = self._plain = _template(data, parsed[0][1], self._served, self._hide_usage)
                self._misses += plain is None
        return False

    def _read(self, events: list[Event], batch: list[Chunk] | list[Piece]) -> bool:
        """Parse `events` into `batch`; True at a proper end ([DONE] or a final
        Responses event)."""
        for event, data in events:
            if data == b"[DONE]":
                return True
            chunk = upstream_json(data, f"a stream event from {self._provider}")
            if "error" in chunk and "choices" not in chunk and event is None:
                err = chunk["error"]
                detail = err.get("message", "") if isinstance(err, dict) else str(err)
                detail = redact(str(detail), self._secrets)
                raise UpstreamServerError(f"{self._provider} stream error: {detail}")
            if not self._track(event, chunk):
                batch.append((event, chunk))
            if event in _FINAL_EVENTS:
                return True
        return False

    def _track(self, event: str | None, chunk: dict[str, Any]) -> bool:
        """Record usage and finish reason; True when the chunk is for the gateway only."""
        if event is not None:
            if event in _FINAL_EVENTS and isinstance(chunk.get("response"), dict):
                self.usage = Usage.from_openai(chunk["response"].get("usage"))
            return False
        choices = chunk.get("choices")
        if choices and isinstance(choices, list) and isinstance(choices[0], dict):
            reason = choices[0].get("finish_reason")
            if reason:
                self.finish_reason = reason
        usage = chunk.get("usage")
        if usage:
            self.usage = Usage.from_openai(usage)
            if self._hide_usage and not choices:
                return True
        if self._hide_usage and "usage" in chunk:
            del chunk["usage"]
        return False

    async def aclose(self) -> None:
        await self._upstream.aclose()


def _template(
    data: bytes, chunk: dict[str, Any], served: tuple[bytes, bytes], hide_usage: bool
) -> tuple[bytes, bytes, bytes, bytes] | None:
    """`data`, parsed as `chunk`, as a template for the plain content chunks after it
    (providers/splice.py): None unless it is one, framed so that its id, model and
    content can be found by their bytes alone: the id first and the model once."""
    if not data.startswith(b'{"id":"'):
        return None
    if chunk.get("object") != "chat.completion.chunk" or "error" in chunk:
        return None
    if chunk.get("usage") is not None:
        return None
    choices = chunk.get("choices")
    if not (isinstance(choices, list) and len(choices) == 1 and isinstance(choices[0], dict)):
        return None
    choice = choices[0]
    delta = choice.get("delta")
    if choice.get("index") != 0 or choice.get("finish_reason") is not None:
        return None
    if not isinstance(delta, dict) or not delta.keys() <= _DELTA_KEYS:
        return None
    if not isinstance(delta.get("content"), str) or delta.get("refusal") is not None:
        return None
    rid, model = chunk.get("id"), chunk.get("model")
    if not (isinstance(rid, str) and isinstance(model, str)):
        return None
    # A null usage the stream hides was taken out of `chunk` already. (Its bytes cannot
    # be in the content: a quote there is escaped.)
    hidden = int("usage" not in chunk and data.count(_NULL_USAGE) == 1)
    framed = frame(data, _CONTENT, chunk, hidden)
    if framed is None:
        return None
    head, tail = framed
    if head.count(_MODEL) != 1:
        return None
    id_end = 7 + len(rid.encode())
    model_at = head.index(_MODEL) + len(_MODEL)
    model_end = model_at + len(model.encode())
    if head[7:id_end] != rid.encode() or head[model_at:model_end] != model.encode():
        return None
    if head[id_end : id_end + 1] != b'"' or head[model_end : model_end + 1] != b'"':
        return None
    rid_out, model_out = served
    before = b'data: {"id":"' + rid_out + head[id_end:model_at] + model_out + head[model_end:]
    after = tail + b"\n\n"
    if hide_usage and hidden:
        if _NULL_USAGE in head:
            return None
        after = after.replace(_NULL_USAGE, b"")
    return head, tail, before, after


class _Passthrough(BinaryReply):
    def __init__(self, upstream: UpstreamStream, provider: str) -> None:
        self._upstream = upstream
        self._provider = provider
        self.media_type = upstream.headers.get("content-type", "application/octet-stream")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._upstream.aiter_bytes():
                yield piece
        except (TransportError, ResponseTooLarge) as exc:
            raise exc.prefixed(f"{self._provider}: stream broke") from None

    async def aclose(self) -> None:
        await self._upstream.aclose()
