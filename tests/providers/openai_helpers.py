"""What the OpenAI provider tests share: a provider over respx, request and SSE builders."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import respx

from providers.base import Call, Endpoint
from providers.httpx_transport import HttpxTransport
from providers.openai import OpenAIProvider

BASE = "https://upstream.test/v1"
KEY = "sk-test-SECRETKEY1234567890"
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
CHAT_REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}


async def make_provider() -> AsyncIterator[OpenAIProvider]:
    p = OpenAIProvider("up", BASE + "/", HttpxTransport(), api_key=KEY, headers={"x-org": "o1"})
    yield p
    await p.aclose()


def mock_router() -> respx.MockRouter:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def call(body: dict[str, Any], endpoint: Endpoint = Endpoint.CHAT, **kw: Any) -> Call:
    return Call(endpoint, body, "up-model", **kw)


def sse(*events: Any, done: bool = True) -> bytes:
    out = b""
    for event in events:
        if isinstance(event, tuple):
            name, data = event
            out += f"event: {name}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"
        elif isinstance(event, bytes):
            out += b"data: " + event + b"\n\n"
        else:
            out += b"data: " + orjson.dumps(event) + b"\n\n"
    return out + (b"data: [DONE]\n\n" if done else b"")


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict:
    delta = {"content": content} if content is not None else {}
    return {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


async def drain(stream: Any) -> list[tuple[str | None, dict[str, Any]]]:
    try:
        return [item async for item in stream]
    finally:
        await stream.aclose()


def sent(route: respx.Route, index: int = -1) -> dict[str, Any]:
    return orjson.loads(route.calls[index].request.content)


def upstream_error(message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}
