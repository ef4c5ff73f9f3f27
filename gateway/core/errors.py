"""What the gateway refuses or cannot do, as typed errors with no HTTP in them.

Routing and storage raise these; `gateway.http.errors` is the one place that turns
them into OpenAI-shaped responses (status, error type, headers). A provider's own
failures are `providers.ProviderError`s; when they end a request they arrive here
wrapped (`UpstreamFailed`, `RejectedByUpstream`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from providers.errors import ContextLengthExceeded, ProviderError, RateLimited, UpstreamTimeout

__all__ = [
    "AllModelsBlacklisted",
    "ConcurrencyLimitExceeded",
    "Conflict",
    "Failure",
    "GatewayError",
    "InvalidFeedback",
    "InvalidFilter",
    "InvalidRequest",
    "LengthRequired",
    "MemoryBusy",
    "ModelUnavailable",
    "NoModelAvailable",
    "NotAllowed",
    "NotFound",
    "Overloaded",
    "QuotaExceeded",
    "RateLimitExceeded",
    "RejectedByUpstream",
    "RequestTooLarge",
    "ShuttingDown",
    "StoreUnavailable",
    "TokenRateLimitExceeded",
    "UpstreamFailed",
]


class GatewayError(Exception):
    """An answer the gateway gives instead of a model's. `code` and `param` follow
    OpenAI's error body; each subclass says what kind of failure it is."""

    code: str | None = None
    retry_after: float | None = None  # seconds after which trying again makes sense
    # Headers its answer carries besides (a refused key's x-ratelimit-* ones).
    headers: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        if retry_after is not None:
            self.retry_after = retry_after


class InvalidRequest(GatewayError):
    """The request itself is wrong: a field, a header, a model that cannot serve it."""


class RequestTooLarge(InvalidRequest):
    code = "request_too_large"


class LengthRequired(InvalidRequest):
    """A body whose size must be known before it is read (multipart)."""


class InvalidFeedback(InvalidRequest):
    code = "invalid_feedback"


class InvalidFilter(InvalidRequest):
    code = "invalid_filter"


class NotAllowed(GatewayError):
    """The caller's key may not use what it asked for (a route or model outside its
    scope)."""

    code = "model_not_allowed"


class RateLimitExceeded(GatewayError):
    """The caller's key sent more requests in the last minute than it may."""

    code = "rate_limit_exceeded"


class TokenRateLimitExceeded(RateLimitExceeded):
    """The caller's key used more tokens in the last minute than it may."""


class ConcurrencyLimitExceeded(RateLimitExceeded):
    """The caller's key has as many answers in flight as it may."""


class QuotaExceeded(GatewayError):
    """The caller's key has spent its budget for the day or the month."""

    code = "insufficient_quota"


class Conflict(GatewayError):
    """What the caller asks contradicts what exists (a name taken, a key defined in the
    configuration file)."""

    code = "conflict"


class NotFound(GatewayError):
    """No such model, answer or job, or the caller may not see it."""

    code = "not_found"


class ModelUnavailable(GatewayError):
    """The model exists but cannot serve now (its provider is disabled)."""


class NoModelAvailable(GatewayError):
    code = "no_model_available"


class AllModelsBlacklisted(NoModelAvailable):
    code = "all_models_blacklisted"


class Overloaded(NoModelAvailable):
    """Every model that could serve had no connection free in this gateway: its own
    saturation, not the upstreams'. The client may retry shortly."""

    code = "gateway_overloaded"
    retry_after = 1.0


class MemoryBusy(GatewayError):
    """The request bodies this worker holds left no room for this one now
    (`server.max_body_memory`): the gateway's own saturation. The client may retry
    shortly, when answers under way have ended."""

    code = "gateway_overloaded"
    retry_after = 1.0


class StoreUnavailable(GatewayError):
    """The store cannot take or give what this request needs now (it is down or
    unreachable); routing goes on, and the caller may try again later."""

    code = "store_unavailable"
    retry_after = 5.0


class ShuttingDown(GatewayError):
    """The gateway is shutting down and stopped waiting for this answer at its drain
    deadline (`server.shutdown_timeout`): another replica or a restarted worker will
    serve it."""

    code = "shutting_down"
    retry_after = 1.0


@dataclass(frozen=True, slots=True)
class Failure:
    """One model's failed attempt, as a request's final error reports it."""

    model: str
    provider: str
    error: ProviderError


class UpstreamFailed(GatewayError):
    """Every model tried failed in a way that is the upstreams' fault."""

    code = "upstream_error"

    def __init__(self, failures: Sequence[Failure]) -> None:
        summary = "; ".join(f"{f.model} ({f.provider}): {f.error.message}" for f in failures)
        super().__init__(f"All {len(failures)} attempt(s) failed. {summary}")
        self.failures = tuple(failures)
        kinds = {type(f.error) for f in failures if f.error.blames_model}
        if kinds and all(issubclass(k, UpstreamTimeout) for k in kinds):
            self.code = "upstream_timeout"
        elif kinds and all(issubclass(k, RateLimited) for k in kinds):
            self.code = "upstream_rate_limited"
            # The soonest an upstream said to retry, rounded up: never an early retry.
            waits = [f.error.retry_after for f in failures if f.error.retry_after is not None]
            self.retry_after = max(1, math.ceil(min(waits))) if waits else None

    @property
    def timed_out(self) -> bool:
        return self.code == "upstream_timeout"

    @property
    def rate_limited(self) -> bool:
        return self.code == "upstream_rate_limited"


class RejectedByUpstream(GatewayError):
    """An upstream refused the request as the caller's fault; no other model would differ."""

    def __init__(self, error: ProviderError) -> None:
        if isinstance(error, ContextLengthExceeded):
            super().__init__(error.message, code="context_length_exceeded", param="messages")
        else:
            super().__init__(error.message, code=error.kind, param=error.param)
        self.error = error

    @property
    def upstream_status(self) -> int | None:
        return self.error.status
