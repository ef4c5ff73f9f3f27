"""The provider interface: one OpenAI-shaped call in, one OpenAI-shaped result out.

Every upstream protocol implements `Provider`. The gateway speaks only OpenAI
shapes to providers; translation to anything else happens inside the provider.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.core.types import Endpoint

__all__ = [
    "CLIENT_KINDS",
    "RETRYABLE_KINDS",
    "BinaryReply",
    "Call",
    "Chunk",
    "ChunkStream",
    "Provider",
    "ProviderError",
    "Reply",
    "Usage",
    "classify_status",
    "redact",
    "upstream_json",
]

# Failures that say something about the upstream: they count against the model
# and the gateway moves on to the next one.
RETRYABLE_KINDS = frozenset(
    {"server_error", "rate_limited", "timeout", "connection", "invalid_body", "auth", "not_found"}
)
# Failures caused by the request itself: the client gets them, the model is not blamed.
CLIENT_KINDS = frozenset({"bad_request", "context_length", "unsupported"})


class ProviderError(Exception):
    """A classified upstream failure. `kind` decides fallback and blame."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.param = param

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    seconds: float = 0.0

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        if not isinstance(usage, dict):
            return None
        prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
        completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
        return cls(
            prompt if isinstance(prompt, int) else 0,
            completion if isinstance(completion, int) else 0,
        )


@dataclass(slots=True)
class Call:
    """One attempt's request, in OpenAI shape. `body` is the client's; never mutate it."""

    endpoint: Endpoint
    body: dict[str, Any]
    upstream_model: str
    stream: bool = False
    resource_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Reply:
    body: dict[str, Any]
    usage: Usage | None = None
    status: int = 200


# One server-sent event: (event name or None, parsed JSON data).
Chunk = tuple[str | None, dict[str, Any]]


class ChunkStream(ABC):
    """A streamed answer as OpenAI-shaped chunks. Usage is filled in as it arrives."""

    usage: Usage | None = None
    finish_reason: str | None = None
    complete = False  # set before the last batch is handed out

    @abstractmethod
    def batches(self) -> AsyncIterator[list[Chunk]]:
        """The chunks grouped as they arrived (each group non-empty), so the gateway
        writes a group to its client in one go rather than one write per chunk."""

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        async for batch in self.batches():
            for chunk in batch:
                yield chunk

    @abstractmethod
    async def aclose(self) -> None: ...


class BinaryReply(ABC):
    """A binary answer (audio) passed through as it arrives."""

    media_type: str = "application/octet-stream"
    usage: Usage | None = None

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def aclose(self) -> None: ...


class Provider:
    """An upstream protocol. Subclasses set `endpoints` and implement what they support."""

    endpoints: frozenset[Endpoint] = frozenset()

    def __init__(self, name: str) -> None:
        self.name = name

    def supports(self, endpoint: Endpoint) -> bool:
        return endpoint in self.endpoints

    async def send(self, call: Call) -> Reply:
        raise self.unsupported(call.endpoint)

    async def stream(self, call: Call) -> ChunkStream:
        raise self.unsupported(call.endpoint)

    async def binary(self, call: Call) -> BinaryReply:
        raise self.unsupported(call.endpoint)

    async def aclose(self) -> None:
        pass

    def unsupported(self, endpoint: Endpoint) -> ProviderError:
        return ProviderError(
            "unsupported", f"provider '{self.name}' cannot serve {endpoint.value}", status=400
        )


_CONTEXT_HINTS = (
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "prompt is too long",
    "too many tokens",
    "exceed context limit",
)
_SECRETISH = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+[A-Za-z0-9_\-.]{6,})")


def redact(text: str, secrets: tuple[str, ...] = (), limit: int = 300) -> str:
    """Trim an upstream message and remove anything that could be a credential."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _SECRETISH.sub("[redacted]", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def upstream_json(data: bytes, what: str) -> dict[str, Any]:
    """Parse a JSON object an upstream sent; anything else is an invalid upstream body."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderError("invalid_body", f"{what} is not JSON") from None
    if not isinstance(parsed, dict):
        raise ProviderError("invalid_body", f"{what} is not a JSON object")
    return parsed


def upstream_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
    return ""


def classify_status(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    provider: str,
    secrets: tuple[str, ...] = (),
) -> ProviderError:
    """Turn a non-2xx upstream answer into a ProviderError of the right kind."""
    detail = redact(upstream_message(body), secrets)
    message = f"{provider} returned HTTP {status}" + (f": {detail}" if detail else "")
    if status == 429:
        return ProviderError(
            "rate_limited", message, status=status, retry_after=_retry_after(headers)
        )
    if status in (401, 403):
        return ProviderError("auth", message, status=status)
    if status == 404:
        return ProviderError("not_found", message, status=status)
    if status == 408:
        return ProviderError("timeout", message, status=status)
    if 400 <= status < 500:
        lowered = detail.lower()
        if any(hint in lowered for hint in _CONTEXT_HINTS) or b"context_length_exceeded" in body:
            return ProviderError("context_length", message, status=status)
        return ProviderError("bad_request", message, status=status)
    return ProviderError("server_error", message, status=status)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
