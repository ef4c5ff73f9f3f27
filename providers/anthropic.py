"""Anthropic's Messages API behind the OpenAI chat-completions shape.

The gateway speaks only OpenAI shapes to providers, and Anthropic's protocol differs
in ways a passthrough cannot hide: system prompts live outside the message list,
roles must alternate, tool calls and results are content blocks, `max_tokens` is
required, and the stream is a sequence of typed events. This module translates the
request and the non-streamed answer; `providers.anthropic_stream` translates streams.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from providers.anthropic_inbound import message_usage
from providers.anthropic_stream import AnthropicChunks, MessageStream, finish_reason, prompt_tokens
from providers.base import Call, ChunkStream, Endpoint, Reply, Usage
from providers.errors import (
    BadRequest,
    InvalidResponse,
    classify_status,
    encodable,
    request_json,
    upstream_json,
)
from providers.http_provider import HttpProvider, endpoint_url
from providers.transport import Transport

__all__ = ["AnthropicProvider", "to_anthropic", "to_openai"]

DEFAULT_MAX_TOKENS = 4096
_TOOL_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


class AnthropicProvider(HttpProvider):
    """Chat completions translated; Anthropic's own Messages calls (a client that speaks
    Anthropic) passed through with only `model` rewritten, so cache_control, thinking,
    server tools and whatever Anthropic adds next reach the upstream intact."""

    endpoints = frozenset({Endpoint.CHAT, Endpoint.MESSAGES, Endpoint.COUNT_TOKENS})

    def __init__(
        self,
        name: str,
        base_url: str,
        transport: Transport,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        version: str = "2023-06-01",
    ) -> None:
        super().__init__(name, transport, api_key)
        self._url = endpoint_url(base_url, "/v1/messages")
        self._count_url = endpoint_url(base_url, "/v1/messages/count_tokens")
        self._headers = {
            "content-type": "application/json",
            "anthropic-version": version,
            **(headers or {}),
        }
        if api_key:
            self._headers["x-api-key"] = api_key

    async def send(self, call: Call) -> Reply:
        if call.endpoint is Endpoint.MESSAGES or call.endpoint is Endpoint.COUNT_TOKENS:
            return await self._native(call)
        if call.endpoint is not Endpoint.CHAT:
            raise self.unsupported(call.endpoint)
        body = request_json(to_anthropic(call.body, call.upstream_model, stream=False))
        headers = self._with(self._headers, call)
        resp = await self._request("POST", self._url, headers, body, call.memory)
        if resp.status >= 400:
            raise classify_status(resp.status, resp.body, resp.headers, self.name, self._secrets)
        data = upstream_json(resp.body, f"{self.name}'s response body")
        body_out = to_openai(data, call.upstream_model)
        if body_out is None:
            raise InvalidResponse(f"{self.name} returned an unexpected body")
        usage = body_out["usage"]
        return Reply(body_out, Usage(usage["prompt_tokens"], usage["completion_tokens"]))

    async def stream(self, call: Call) -> ChunkStream:
        if call.endpoint is Endpoint.MESSAGES:
            body = request_json({**call.body, "model": call.upstream_model, "stream": True})
            upstream = await self._open(self._url, self._native_headers(call), body)
            return MessageStream(upstream, self.name, self._secrets, call.event_memory)
        if call.endpoint is not Endpoint.CHAT:
            raise self.unsupported(call.endpoint)
        body = request_json(to_anthropic(call.body, call.upstream_model, stream=True))
        upstream = await self._open(self._url, self._with(self._headers, call), body)
        options = call.body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return AnthropicChunks(
            upstream, self.name, call.upstream_model, include_usage, self._secrets,
            call.event_memory,
        )  # fmt: skip

    async def _native(self, call: Call) -> Reply:
        body = {**call.body, "model": call.upstream_model}
        body.pop("stream", None)
        url = self._url if call.endpoint is Endpoint.MESSAGES else self._count_url
        headers = self._native_headers(call)
        resp = await self._request("POST", url, headers, request_json(body), call.memory)
        if resp.status >= 400:
            raise classify_status(resp.status, resp.body, resp.headers, self.name, self._secrets)
        data = upstream_json(resp.body, f"{self.name}'s response body")
        return Reply(data, message_usage(data.get("usage")))

    def _native_headers(self, call: Call) -> dict[str, str]:
        """The client's `anthropic-beta` travels with its body: beta fields need it."""
        beta = call.headers.get("anthropic-beta")
        headers = {**self._headers, "anthropic-beta": beta} if beta else self._headers
        return {**headers, **call.trace} if call.trace else headers


# --- request: OpenAI chat body -> Anthropic Messages body -------------------------------


def _bad(message: str, param: str | None = None) -> BadRequest:
    return BadRequest(message, status=400, param=param)


def to_anthropic(body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    """Build a Messages request from an OpenAI chat body; `body` is left untouched."""
    system, messages = _messages(body.get("messages"))
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    out: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system:
        out["system"] = system
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = stop
    temperature = body.get("temperature")
    if isinstance(temperature, int | float):
        # OpenAI accepts 0..2, Anthropic 0..1: clamp rather than fail a valid request.
        out["temperature"] = min(max(temperature, 0), 1)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise _bad("'tools' must be a list", "tools")
        out["tools"] = [_tool(tool) for tool in tools]
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    if stream:
        out["stream"] = True
    return out


def _messages(raw: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(raw, list):
        raise _bad("'messages' must be a list", "messages")
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for message in raw:
        if not isinstance(message, dict):
            raise _bad("each message must be an object", "messages")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = _text(content)
            if text:
                system.append(text)
            continue
        if role == "user":
            blocks = _blocks(content)
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            if not isinstance(calls, list):
                raise _bad("'tool_calls' must be a list", "messages")
            blocks = _blocks(content) + [_tool_use(c) for c in calls]
        elif role == "tool":
            role, blocks = "user", [_tool_result(message)]
        else:
            raise _bad(f"unsupported message role {role!r}", "messages")
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)  # Anthropic requires alternating roles
        else:
            out.append({"role": role, "content": blocks})
    return "\n\n".join(system), out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        ]
        return "\n\n".join(p for p in parts if isinstance(p, str) and p)
    return ""


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad("message content must be a string or a list of parts", "messages")
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":
            if part.get("refusal"):
                blocks.append({"type": "text", "text": part["refusal"]})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url")))
        else:
            raise _bad(f"content part type {kind!r} is not supported by Anthropic", "messages")
    return blocks


def _image(image: Any) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise _bad("image_url needs a url", "messages")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise _bad("image data URLs must be base64 with a media type", "messages")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _bad("image_url must be an http(s) or data: URL", "messages")


def _tool_use(call: Any) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not function.get("name"):
        raise _bad("each tool call needs a function name", "messages")
    arguments = function.get("arguments") or "{}"
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        raise _bad(f"tool call {call.get('id')!r} has arguments that are not JSON") from None
    if isinstance(arguments, str) and not encodable(arguments, parsed):
        raise _bad(f"tool call {call.get('id')!r} has arguments nested too deep")
    if not isinstance(parsed, dict):
        raise _bad(f"tool call {call.get('id')!r} arguments must be a JSON object")
    return {"type": "tool_use", "id": call.get("id"), "name": function["name"], "input": parsed}


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content:
        block["content"] = _blocks(content)
    return block


def _tool(tool: Any) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type") != "function":
        raise _bad("only function tools are supported by Anthropic", "tools")
    out: dict[str, Any] = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any]
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise _bad(f"unknown tool_choice {choice!r}", "tool_choice")
        out = dict(_TOOL_CHOICES[choice])
    elif isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not name:
            raise _bad("tool_choice needs a function name", "tool_choice")
        out = {"type": "tool", "name": name}
    elif parallel is False:
        out = {"type": "auto"}
    else:
        return None
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


# --- response: Anthropic Message -> OpenAI chat.completion -------------------------------


def to_openai(data: Any, model: str) -> dict[str, Any] | None:
    """Translate a Messages answer; None when it is not a Message."""
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        return None
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data["content"]:
        if not isinstance(block, dict):
            return None
        if block.get("type") == "text":
            text = block.get("text")
            if isinstance(text, str):  # an upstream's odd value says nothing
                texts.append(text)
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        message["tool_calls"] = calls
    usage: dict[str, Any] = data["usage"] if isinstance(data.get("usage"), dict) else {}
    prompt = prompt_tokens(usage)
    output = usage.get("output_tokens")
    completion = output if isinstance(output, int) else 0
    return {
        "id": data.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(data.get("stop_reason")),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
