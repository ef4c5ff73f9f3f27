"""Shared by the AnthropicProvider tests (test_anthropic*.py): the upstream's address, key
and model, a canned reply, and the small builders every one of those files uses."""

from __future__ import annotations

from typing import Any

import orjson
import respx

from providers.anthropic import AnthropicProvider
from providers.base import Call, Endpoint
from providers.httpx_transport import HttpxTransport

BASE = "https://api.anthropic.com"
URL = f"{BASE}/v1/messages"
KEY = "sk-ant-api03-SECRETSECRETSECRET"
MODEL = "claude-sonnet-4-5-20250929"

TEXT_REPLY = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "Hello! How can I help you today?"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 10,
    },
}


def make_provider() -> AnthropicProvider:
    """The provider behind each test file's `provider` fixture (the caller closes it)."""
    return AnthropicProvider(
        "claude", BASE + "/", HttpxTransport(), api_key=KEY, headers={"x-extra": "1"}
    )


def chat(body: dict[str, Any], stream: bool = False) -> Call:
    return Call(Endpoint.CHAT, body, upstream_model=MODEL, stream=stream)


def sent(route: respx.Route) -> dict[str, Any]:
    return orjson.loads(route.calls.last.request.content)


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}
