"""What can go wrong upstream, as classes: the gateway decides by class, not by string.

`blames_model` splits the tree in two. An `UpstreamError` says something about the
upstream: it counts against the model and the gateway moves on to the next one. A
`RequestRejected` is the caller's fault: the client gets it and no model is blamed.
`CapacityExhausted`, apart from both, is the gateway's own saturation (no pooled
connection came free): nothing reached the upstream, so nothing is recorded against it.
`kind` is the name the gateway stores in its records and shows on the dashboard, so it
never changes for a class that has one; the classes between the root and the leaves
have none of their own and are never raised.

Every message is safe to log and to show a client: upstream text passes through `redact`
before it is put in one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import orjson

from providers.json_memory import parsed_size

__all__ = [
    "MAX_NESTING",
    "MAX_PARSED",
    "STOPPING",
    "BadRequest",
    "CapacityExhausted",
    "ClientGone",
    "ContextLengthExceeded",
    "GatewayStopped",
    "InvalidResponse",
    "NoMemory",
    "ProviderError",
    "RateLimited",
    "RequestRejected",
    "ResponseTooLarge",
    "TransportError",
    "UnsupportedRequest",
    "UpstreamAuthError",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamNotFound",
    "UpstreamServerError",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "classify_status",
    "encodable",
    "redact",
    "request_json",
    "stopped",
    "upstream_json",
]


class ProviderError(Exception):
    """A classified upstream failure. Subclasses keep this constructor (see `prefixed`)."""

    kind: ClassVar[str]
    blames_model: ClassVar[bool]
    routine: ClassVar[bool] = False  # the gateway's own doing, worth no warning in its log

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        if not hasattr(self, "kind"):
            raise TypeError(f"{type(self).__name__} is a category: raise one of its subclasses")
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.param = param

    def prefixed(self, prefix: str) -> Self:
        """The same failure, of the same class, with `prefix: ` before its message."""
        return type(self)(
            f"{prefix}: {self.message}",
            status=self.status,
            retry_after=self.retry_after,
            param=self.param,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r})"


class UpstreamError(ProviderError):
    """The upstream failed: the model is blamed and the next one is tried."""

    blames_model = True


class TransportError(UpstreamError):
    """The network failed: raised by transports."""


class UpstreamTimeout(TransportError):
    """No answer in time (also an upstream's HTTP 408)."""

    kind = "timeout"


class UpstreamConnectionError(TransportError):
    """The upstream could not be reached, or the connection broke."""

    kind = "connection"


class InvalidResponse(UpstreamError):
    """An answer that is not what the protocol promises (not JSON, cut short, ...)."""

    kind = "invalid_body"

    @classmethod
    def undecodable(cls) -> InvalidResponse:
        """A body its Content-Encoding does not decode: the answer is bad, not the network
        (every transport says so with this class, so the next model is tried)."""
        return InvalidResponse("upstream body does not decode as its Content-Encoding says")


class ResponseTooLarge(InvalidResponse):
    """A (decoded) body past the transport's limit: refused before it takes the memory."""

    @classmethod
    def beyond(cls, limit: int) -> ResponseTooLarge:
        return cls(f"upstream response larger than {limit} bytes")


class UpstreamStatusError(UpstreamError):
    """A non-2xx answer that is the upstream's fault; `status` is the upstream's."""


class UpstreamServerError(UpstreamStatusError):
    """A 5xx answer, or an error event inside a stream."""

    kind = "server_error"


class RateLimited(UpstreamStatusError):
    """HTTP 429; `retry_after` is the upstream's Retry-After in seconds, if it sent one."""

    kind = "rate_limited"


class UpstreamAuthError(UpstreamStatusError):
    """HTTP 401 or 403: the gateway's key for this upstream is wrong."""

    kind = "auth"


class UpstreamNotFound(UpstreamStatusError):
    """HTTP 404: the upstream does not know the model or the path."""

    kind = "not_found"


class RequestRejected(ProviderError):
    """The request itself is at fault: the client gets the error, no model is blamed."""

    blames_model = False


class BadRequest(RequestRejected):
    kind = "bad_request"


class ContextLengthExceeded(BadRequest):
    """The prompt does not fit this model; a model with a larger context may still serve it."""

    kind = "context_length"


class UnsupportedRequest(RequestRejected):
    """The provider cannot serve this endpoint or this part of a request."""

    kind = "unsupported"


class CapacityExhausted(ProviderError):
    """No connection to the upstream came free within the pool's wait: the gateway's own
    saturation, which says nothing about the upstream. No model is blamed; another
    provider may still have room, and when none has, the client is told to retry."""

    kind = "pool_exhausted"
    blames_model = False


class NoMemory(ProviderError):
    """The answer came, but the bodies this worker holds leave no room for it (the
    gateway's `server.max_body_memory`): its own saturation, which says nothing about the
    upstream. No other model is tried, as its answer would need the same room; the
    client is told to retry."""

    kind = "memory_busy"
    blames_model = False


class ClientGone(ProviderError):
    """The client left before the upstream answered, and the attempt was cancelled with
    its connection: says nothing about the upstream (never raised, only recorded)."""

    kind = "client_gone"
    blames_model = False
    routine = True


class GatewayStopped(ProviderError):
    """The gateway ended the attempt itself: it was shutting down, and the answer was
    still under way at its drain deadline. Says nothing about the upstream (only
    recorded, and told to the client)."""

    kind = "gateway_stopped"
    blames_model = False
    routine = True


# The message a task is cancelled with when the server stops waiting for its request
# (its shutdown deadline): the awaits it lands in tell it from a client's leaving.
STOPPING = "gatewise: the server is shutting down"


def stopped(exc: BaseException) -> bool:
    """Whether `exc` is the cancellation of a request the server stopped waiting for."""
    return isinstance(exc, asyncio.CancelledError) and exc.args[:1] == (STOPPING,)


# -- classification ------------------------------------------------------------------------

_CONTEXT_HINTS = (
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "prompt is too long",
    "too many tokens",
    "exceed context limit",
)
_SECRETISH = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+[A-Za-z0-9_\-.]{6,})")
_BY_STATUS: dict[int, type[UpstreamStatusError | UpstreamTimeout]] = {
    401: UpstreamAuthError,
    403: UpstreamAuthError,
    404: UpstreamNotFound,
    408: UpstreamTimeout,
}


def redact(text: str, secrets: tuple[str, ...] = (), limit: int = 300) -> str:
    """Trim an upstream message and remove anything that could be a credential."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _SECRETISH.sub("[redacted]", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# orjson parses JSON nested up to 1,024 levels deep but encodes at most this many: a
# body nested deeper can be read and never passed on. A client's 600-byte body of nested
# lists made a 500 and a traceback, wherever it was encoded again or walked.
MAX_NESTING = 254


# The memory one upstream body may take once parsed. A reply may be max_response_bytes
# (128 MiB) of base64 image; the same bytes of tiny objects would take 3 GB, enough for
# one bad answer to have the worker killed for memory with every stream it holds. A body
# under _ESTIMATED bytes cannot take more than ~40 times them: it is not estimated.
MAX_PARSED = 1 << 30
_ESTIMATED = 1 << 20


def upstream_json(data: bytes, what: str, max_parsed: int = MAX_PARSED) -> dict[str, Any]:
    """Parse a JSON object an upstream sent; anything else, one nested too deep to be
    passed on (MAX_NESTING), or one that would take more than `max_parsed` bytes of
    memory parsed (refused before it does) is an invalid upstream body."""
    if len(data) > _ESTIMATED and parsed_size(data) > max_parsed:
        raise ResponseTooLarge(
            f"{what} would take more than {max_parsed:,} bytes of memory once parsed"
        )
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidResponse(f"{what} is not JSON") from None
    if not isinstance(parsed, dict):
        raise InvalidResponse(f"{what} is not a JSON object")
    if not encodable(data, parsed):
        raise InvalidResponse(f"{what} nests JSON deeper than {MAX_NESTING} levels")
    return parsed


def encodable(raw: bytes | str, value: Any) -> bool:
    """Whether `value`, parsed from `raw`, can be encoded again: it nests at most
    MAX_NESTING levels. Fewer brackets than that cannot nest deeper, which counting them
    (at C speed, ~0.2 µs for a stream event) settles for almost every body; the rest are
    encoded once to see."""
    if isinstance(raw, str):
        opens = raw.count("{") + raw.count("[")
    else:
        opens = raw.count(b"{") + raw.count(b"[")
    if opens <= MAX_NESTING:
        return True
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return True


def request_json(body: Any) -> bytes:
    """A request body as its upstream is sent it. A client's body nested deeper than
    MAX_NESTING levels cannot be encoded again: the client's error, said as such."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        raise BadRequest(
            f"The request nests JSON deeper than {MAX_NESTING} levels; it cannot be passed on.",
            status=400,
        ) from None


def _upstream_message(body: bytes) -> str:
    """The human-readable part of an upstream's error body (not yet redacted)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
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
    """Turn a non-2xx upstream answer into the ProviderError of the right class."""
    detail = redact(_upstream_message(body), secrets)
    message = f"{provider} returned HTTP {status}" + (f": {detail}" if detail else "")
    if status == 429:
        return RateLimited(message, status=status, retry_after=_retry_after(headers))
    known = _BY_STATUS.get(status)
    if known is not None:
        return known(message, status=status)
    if 400 <= status < 500:
        lowered = detail.lower()
        if any(hint in lowered for hint in _CONTEXT_HINTS) or b"context_length_exceeded" in body:
            return ContextLengthExceeded(message, status=status)
        return BadRequest(message, status=status)
    return UpstreamServerError(message, status=status)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
