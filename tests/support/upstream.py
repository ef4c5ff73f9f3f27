"""A real OpenAI-compatible HTTP server on a loopback port, scripted by the test."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

WAV = (
    b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00@\x1f\x00\x00"
    b"\x80>\x00\x00\x02\x00\x10\x00data\x00\x00\x00\x00"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Behaviour:
    """What the upstream does for one upstream model name."""

    status: int = 200
    body: bytes | None = None  # raw body to send instead of the normal answer
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (for timeouts)
    times: int | None = None  # apply this many times, then behave normally
    fail_after_chunks: int | None = None  # streams: break the connection after N chunks
    pause_after_first: float = 0.0  # streams: seconds of silence after the first chunk
    content: str = "Hello from the fake upstream."
    # streams: how the end looks, as different real upstreams send it
    done_apart: float = 0.0  # seconds of silence before `[DONE]`, so it is a read of its own
    usage_on_finish: bool = False  # usage on the chunk with finish_reason, none after it
    end_without_done: bool = False  # close after the last chunk, no `[DONE]`
    # streams: after the first chunk, an SSE comment (`: keep-alive`) every this many
    # seconds, forever: never silent for long, never done
    keep_alive_every: float | None = None
    # answer with a call of this tool (name, arguments) instead of text, streamed or not
    tool_call: tuple[str, dict[str, Any]] | None = None
    # a barrier: a request sets `held` on arrival and is answered only once `hold` is set
    hold: threading.Event | None = None
    held: threading.Event = field(default_factory=threading.Event)


class FakeUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.seen: list[Seen] = []
        self.behaviours: dict[str, Behaviour] = {}
        self.disconnected = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # -- scripting -------------------------------------------------------------
    def behave(self, model: str, **kwargs: Any) -> Behaviour:
        self.behaviours[model] = Behaviour(**kwargs)
        return self.behaviours[model]

    def calls(self, path: str | None = None) -> list[Seen]:
        return [s for s in self.seen if path is None or s.path == path]

    def models_called(self) -> list[str]:
        return [s.body.get("model") for s in self.seen if isinstance(s.body, dict)]

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> FakeUpstream:
        config = uvicorn.Config(
            self._app(), host="127.0.0.1", port=self.port, log_level="error", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            assert self._thread is not None
            self._thread.join(timeout=10)

    # -- the app ---------------------------------------------------------------
    def _behaviour(self, model: str | None) -> Behaviour | None:
        b = self.behaviours.get(model or "")
        if b is None:
            return None
        if b.times is not None:
            if b.times <= 0:
                return None
            b.times -= 1
        return b

    def _app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            raw = await request.body()
            try:
                body = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                body = raw
            path = request.url.path.removeprefix("/v1")
            self.seen.append(Seen(request.method, path, dict(request.headers), body))
            model = body.get("model") if isinstance(body, dict) else None
            b = self._behaviour(model)
            if b and b.hold is not None:
                b.held.set()
                await asyncio.to_thread(b.hold.wait, 60)
            if b and b.delay and await self._left_during(request, b.delay):
                return Response(status_code=499)  # nobody reads it
            if b and (b.status != 200 or b.body is not None):
                payload = (
                    b.body
                    if b.body is not None
                    else orjson.dumps(
                        {
                            "error": {
                                "message": f"scripted failure {b.status}",
                                "type": "server_error",
                            }
                        }
                    )
                )
                return Response(payload, b.status, b.headers, "application/json")
            return self._answer(request.method, path, body or {}, b or Behaviour())

        return Starlette(routes=[Route("/v1/{rest:path}", handle, methods=["GET", "POST"])])

    async def _left_during(self, request: Request, seconds: float) -> bool:
        """Waits `seconds`, unless the caller disconnects first (then says so, and sets
        `disconnected`): the body is read, so the next message is the disconnect."""
        pause = asyncio.ensure_future(asyncio.sleep(seconds))
        gone = asyncio.ensure_future(request.receive())
        done, _ = await asyncio.wait({pause, gone}, return_when=asyncio.FIRST_COMPLETED)
        pause.cancel()
        gone.cancel()
        if gone in done and gone.result()["type"] == "http.disconnect":
            self.disconnected.set()
            return True
        return False

    def _answer(self, method: str, path: str, body: dict, b: Behaviour) -> Response:
        self._counter += 1
        model = body.get("model", "unknown")
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        if path == "/messages/count_tokens":
            return Response(orjson.dumps({"input_tokens": 42}), 200, media_type="application/json")
        if b.tool_call is not None and path in ("/chat/completions", "/messages"):
            return self._tool_answer(path, body, b.tool_call)
        if path == "/chat/completions" and body.get("stream"):
            return StreamingResponse(self._stream(body, b), media_type="text/event-stream")
        if path == "/messages" and body.get("stream"):
            return StreamingResponse(self._messages_stream(body, b), media_type="text/event-stream")
        if path == "/messages":
            out = {
                "id": f"msg_up{self._counter}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": b.content}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 11, "output_tokens": 7},
            }
            if b"cache_control" in orjson.dumps(body):  # as if the prefix were cached
                out["usage"] |= {
                    "cache_read_input_tokens": 1000,
                    "cache_creation_input_tokens": 200,
                }
            return Response(orjson.dumps(out), 200, b.headers, "application/json")
        if path == "/chat/completions":
            out = {
                "id": f"chatcmpl-up{self._counter}",
                "object": "chat.completion",
                "created": 1700000000,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "logprobs": None,
                        "message": {"role": "assistant", "content": b.content},
                    }
                ],
                "usage": usage,
            }
        elif path == "/completions":
            out = {
                "id": f"cmpl-up{self._counter}",
                "object": "text_completion",
                "created": 1700000000,
                "model": model,
                "choices": [
                    {"index": 0, "text": b.content, "finish_reason": "stop", "logprobs": None}
                ],
                "usage": usage,
            }
        elif path == "/embeddings":
            inputs = body.get("input")
            n = len(inputs) if isinstance(inputs, list) else 1
            out = {
                "object": "list",
                "model": model,
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                    for i in range(n)
                ],
            }
        elif path == "/images/generations":
            out = {"created": 1700000000, "data": [{"url": "https://img.invalid/1.png"}]}
        elif path == "/audio/speech":
            return Response(WAV, 200, media_type="audio/mpeg")
        elif path.startswith("/videos") and method == "GET":
            out = {
                "id": path.rsplit("/", 1)[1],
                "object": "video",
                "model": "sora-2",
                "status": "completed",
                "progress": 100,
                "created_at": 1700000000,
                "seconds": "4",
                "size": "720x1280",
            }
        elif path == "/videos":
            out = {
                "id": f"video_up{self._counter}",
                "object": "video",
                "model": model,
                "status": "queued",
                "progress": 0,
                "created_at": 1700000000,
                "seconds": "4",
                "size": "720x1280",
            }
        elif path == "/responses":
            out = {
                "id": f"resp_up{self._counter}",
                "object": "response",
                "created_at": 1700000000,
                "model": model,
                "status": "completed",
                "output": [],
                "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
            }
        else:
            return Response(b'{"error":{"message":"no such path"}}', 404)
        return Response(orjson.dumps(out), 200, b.headers, "application/json")

    def _tool_answer(self, path: str, body: dict, tool: tuple[str, dict[str, Any]]) -> Response:
        """A call of `tool`, in the protocol of `path`, streamed if asked."""
        name, arguments = tool
        args = orjson.dumps(arguments).decode()
        model = body.get("model")
        if path == "/messages":
            use = {"type": "tool_use", "id": "toolu_up", "name": name, "input": arguments}
            message = {
                "id": "msg_up",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [use],
                "stop_reason": "tool_use",
                "stop_sequence": None,
                "usage": {"input_tokens": 11, "output_tokens": 7},
            }
            if not body.get("stream"):
                return Response(orjson.dumps(message), 200, media_type="application/json")
            events = [
                {"type": "message_start", "message": {**message, "content": []}},
                {"type": "content_block_start", "index": 0, "content_block": {**use, "input": {}}},
                *(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    }
                    for piece in (args[:5], args[5:])
                ),
                {"type": "content_block_stop", "index": 0},
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                    "usage": {"output_tokens": 7},
                },
                {"type": "message_stop"},
            ]
            raw = b"".join(
                b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"
                for e in events
            )
            return Response(raw, 200, media_type="text/event-stream")
        call = {"id": "call_up", "type": "function", "function": {"name": name, "arguments": args}}
        base = {"id": "chatcmpl-up", "created": 1700000000, "model": model}
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            out = {
                **base,
                "object": "chat.completion",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": message}],
                "usage": usage,
            }
            return Response(orjson.dumps(out), 200, media_type="application/json")
        head = {**call, "index": 0, "function": {"name": name, "arguments": ""}}
        deltas = [
            {"role": "assistant", "content": None, "tool_calls": [head]},
            *(
                {"tool_calls": [{"index": 0, "function": {"arguments": p}}]}
                for p in (args[:5], args[5:])
            ),
        ]
        chunks = [
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": d, "finish_reason": None}],
            }
            for d in deltas
        ]
        chunks.append(
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
            }
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append(
                {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            )
        raw = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        return Response(raw, 200, media_type="text/event-stream")

    async def _stream(self, body: dict, b: Behaviour):
        model = body.get("model")
        words = b.content.split(" ")
        base = {
            "id": "chatcmpl-upstream",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
        }
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        try:
            for i, word in enumerate(words):
                if b.fail_after_chunks is not None and i >= b.fail_after_chunks:
                    raise ConnectionAbortedError("scripted stream break")
                delta = (
                    {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
                )
                chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                if include_usage:
                    chunk["usage"] = None
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                if i == 0 and b.pause_after_first:
                    await asyncio.sleep(b.pause_after_first)
                while i == 0 and b.keep_alive_every is not None:
                    await asyncio.sleep(b.keep_alive_every)
                    yield b": keep-alive\n\n"
                if b.delay:
                    await asyncio.sleep(b.delay)
            final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            usage = {
                "prompt_tokens": 9,
                "completion_tokens": len(words),
                "total_tokens": 9 + len(words),
            }
            if b.usage_on_finish:
                final["usage"] = usage
            yield b"data: " + orjson.dumps(final) + b"\n\n"
            if include_usage and not b.usage_on_finish:
                yield b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
            if b.end_without_done:
                return
            if b.done_apart:
                await asyncio.sleep(b.done_apart)
            yield b"data: [DONE]\n\n"
        except asyncio.CancelledError:
            self.disconnected.set()
            raise

    async def _messages_stream(self, body: dict, b: Behaviour):
        """Anthropic's Messages event sequence, a word per text delta."""

        def event(name: str, data: dict[str, Any]) -> bytes:
            return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

        words = b.content.split(" ")
        message = {
            "id": "msg_upstream",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 9, "output_tokens": 1},
        }
        try:
            yield event("message_start", {"type": "message_start", "message": message})
            block = {"type": "text", "text": ""}
            yield event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            )
            yield event("ping", {"type": "ping"})
            for i, word in enumerate(words):
                text = word if i == 0 else " " + word
                delta = {"type": "text_delta", "text": text}
                yield event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                )
                if b.delay:
                    await asyncio.sleep(b.delay)
            yield event("content_block_stop", {"type": "content_block_stop", "index": 0})
            yield event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": len(words)},
                },
            )
            if b.end_without_done:
                return
            if b.done_apart:
                await asyncio.sleep(b.done_apart)
            yield event("message_stop", {"type": "message_stop"})
        except asyncio.CancelledError:
            self.disconnected.set()
            raise
