"""Runs one client request against its ranked models, falling back on upstream failures.

Every attempt is timed, priced, handed to `on_attempt` (the tracker) and logged as
one JSON line. Nothing here touches HTTP or a database.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_after_delay

from gateway.core.config import ModelConfig
from gateway.core.ids import new_id
from gateway.core.logs import EventLog
from gateway.core.types import Attempt, ConversationType, Endpoint
from gateway.http.errors import GatewayError
from gateway.routing.catalog import Catalog, Target
from gateway.routing.cost import cost_of
from providers.base import BinaryReply, Call, ChunkStream, Reply, Usage
from providers.errors import ProviderError

__all__ = ["Dispatcher", "Job", "Served"]

log = EventLog("gatewise.attempts")
T = TypeVar("T")

_ID_PREFIX = {
    Endpoint.CHAT: "chatcmpl-",
    Endpoint.COMPLETIONS: "cmpl-",
    Endpoint.RESPONSES: "resp_",
    Endpoint.EMBEDDINGS: "emb-",
    Endpoint.IMAGES: "img-",
    Endpoint.SPEECH: "speech-",
    Endpoint.VIDEOS: "video_",
    Endpoint.VIDEO_STATUS: "videoq-",
}


@dataclass(slots=True)
class Job:
    """One client request, as the dispatcher needs it."""

    request_id: str
    endpoint: Endpoint
    ctype: ConversationType
    target: Target
    body: dict[str, Any]
    optimization: str | None = None
    conversation_id: str | None = None
    resource_id: str | None = None
    response_id: str = ""


@dataclass(slots=True)
class Served(Generic[T]):
    """The answer of the attempt that succeeded."""

    model: ModelConfig
    provider: str
    attempts: int
    result: T
    first: Any = None
    started: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class _Exhausted(Exception):
    def __init__(self, last: ProviderError | None) -> None:
        self.last = last


class Dispatcher:
    def __init__(
        self,
        catalog: Catalog,
        rank: Callable[[Job], list[ModelConfig]],
        on_attempt: Callable[[Attempt], None],
        *,
        max_attempts: int = 3,
        deadline: float = 300.0,
        clock: Callable[[], float] = time.perf_counter,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self._rank = rank
        self._on_attempt = on_attempt
        self._max_attempts = max_attempts
        self._deadline = deadline
        self._clock = clock
        self._wall = wall

    def job(
        self,
        request_id: str,
        endpoint: Endpoint,
        target: Target,
        body: dict[str, Any],
        ctype: ConversationType,
        **extra: Any,
    ) -> Job:
        job = Job(request_id, endpoint, ctype, target, body, **extra)
        job.optimization = job.optimization or target.optimization
        job.response_id = new_id(_ID_PREFIX[endpoint])
        return job

    async def send(self, job: Job, *, record: bool = True) -> Served[Reply]:
        """The answer of the first model that gave one. With `record=False` the caller
        calls `finish()` itself, e.g. after the client has its answer: the bookkeeping
        then adds nothing to the client's latency (the latency recorded stays the
        upstream's, measured here)."""

        async def attempt(model: ModelConfig, call: Call) -> Served[Reply]:
            reply = await self.catalog.provider_for(model).send(call)
            return Served(model, model.provider, 0, reply)

        served = await self._run(job, attempt)
        served.extra["elapsed"] = served.extra["ttft"]  # the whole answer is in
        if record:
            served.extra["attempt"] = self.finish(job, served, served.result.usage)
        return served

    async def stream(self, job: Job) -> Served[ChunkStream]:
        """Open a stream and read its first chunk: fallback is possible until then."""

        async def attempt(model: ModelConfig, call: Call) -> Served[ChunkStream]:
            stream = await self.catalog.provider_for(model).stream(call)
            return await _with_first_piece(model, stream, stream.batches(), None)

        return await self._run(job, attempt)

    async def binary(self, job: Job) -> Served[BinaryReply]:
        async def attempt(model: ModelConfig, call: Call) -> Served[BinaryReply]:
            reply = await self.catalog.provider_for(model).binary(call)
            return await _with_first_piece(model, reply, aiter(reply), b"")

        return await self._run(job, attempt)

    def finish(
        self,
        job: Job,
        served: Served[Any],
        usage: Usage | None,
        error: ProviderError | None = None,
        ttft: float | None = None,
    ) -> Attempt:
        """Record the attempt that answered, once its answer is complete (or broke)."""
        elapsed = served.extra.get("elapsed")
        return self._record(
            job,
            served.model,
            served.attempts,
            served.started,
            usage=usage,
            error=error,
            ttft=ttft,
            elapsed=elapsed,
        )

    async def _run(
        self, job: Job, attempt: Callable[[ModelConfig, Call], Awaitable[Served[T]]]
    ) -> Served[T]:
        order = self._rank(job)
        unable = self.catalog.unable(job.endpoint)
        able = [m for m in order if m.name not in unable] if unable else order
        if len(able) < len(order):  # e.g. /v1/responses on a route with Anthropic models
            if not able:
                provider = self.catalog.provider_for(order[0])
                raise GatewayError(
                    400,
                    provider.unsupported(job.endpoint).message,
                    code="unsupported_endpoint",
                    param="model",
                )
            order = able
        tried: list[tuple[ModelConfig, ProviderError]] = []
        state = {"index": 0, "min_context": 0}
        began = self._clock()

        def next_model() -> ModelConfig:
            while state["index"] < len(order):
                model = order[state["index"]]
                state["index"] += 1
                window = model.context_window
                if not state["min_context"] or window is None or window > state["min_context"]:
                    return model
            raise _Exhausted(tried[-1][1] if tried else None)

        async def one(number: int) -> Served[T]:
            model = next_model()
            call = Call(
                job.endpoint,
                job.body,
                model.upstream,
                bool(job.body.get("stream")),
                job.resource_id,
            )
            started = self._clock()
            try:
                served = await attempt(model, call)
            except ProviderError as exc:
                tried.append((model, exc))
                self._record(job, model, number, started, error=exc)
                if exc.kind == "context_length":
                    state["min_context"] = model.context_window or 1
                raise
            served.attempts = number
            served.started = started
            served.extra.setdefault("ttft", self._clock() - started)
            return served

        try:
            # The common case, one healthy model, skips the retry machinery entirely.
            try:
                return await one(1)
            except ProviderError as exc:
                if not _worth_another_model(exc) or self._max_attempts < 2:
                    raise
            left = self._deadline - (self._clock() - began)
            retrying = AsyncRetrying(
                sleep=_no_wait,
                stop=stop_after_attempt(self._max_attempts - 1) | stop_after_delay(max(0, left)),
                retry=retry_if_exception(_worth_another_model),
                reraise=True,
            )
            async for try_ in retrying:
                with try_:
                    return await one(try_.retry_state.attempt_number + 1)
        except _Exhausted as exc:
            raise _failure(tried, exc.last) from None
        except ProviderError as exc:
            raise _failure(tried, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _record(
        self,
        job: Job,
        model: ModelConfig,
        number: int,
        started: float,
        *,
        usage: Usage | None = None,
        error: ProviderError | None = None,
        ttft: float | None = None,
        elapsed: float | None = None,
    ) -> Attempt:
        elapsed = (self._clock() - started if elapsed is None else elapsed) * 1000
        attempt = Attempt(
            request_id=job.request_id,
            response_id=job.response_id if error is None else None,
            attempt=number,
            model=model.name,
            provider=model.provider,
            conversation_type=job.ctype,
            route=job.target.route,
            optimization=job.optimization,
            ok=error is None,
            error_class=error.kind if error else None,
            http_status=error.status if error else 200,
            latency_ms=elapsed,
            ttft_ms=ttft * 1000 if ttft is not None else None,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cost=cost_of(model.pricing, usage),
            timestamp=self._wall(),
            stream=bool(job.body.get("stream")),
            error_message=error.message if error else None,
            retry_after=error.retry_after if error else None,
            counts_as_failure=error is not None and error.blames_model,
            conversation_id=job.conversation_id,
        )
        self._on_attempt(attempt)
        level = logging.WARNING if error else logging.INFO
        if log.enabled(level):
            fields = {
                "request_id": attempt.request_id,
                "attempt": number,
                "model": attempt.model,
                "provider": attempt.provider,
                "status": attempt.http_status,
                "ok": attempt.ok,
                "error_class": attempt.error_class,
                "elapsed_ms": round(elapsed, 2),
                "error": attempt.error_message,
            }
            log.emit(level, "attempt", fields)
        return attempt


async def _with_first_piece(
    model: ModelConfig, reply: Any, pieces: AsyncIterator[Any], empty: Any
) -> Served[Any]:
    """Read the first piece of a streamed answer (closing it if that fails), so an
    upstream that breaks before its first byte can still be replaced by another model."""
    try:
        first = await anext(pieces, empty)
    except BaseException:
        await reply.aclose()
        raise
    served = Served(model, model.provider, 0, reply, first)
    served.extra["chunks"] = pieces
    return served


async def _no_wait(seconds: float) -> None:
    """Move on to the next model at once: not even a yield to the loop."""


def _worth_another_model(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and (exc.blames_model or exc.kind == "context_length")


def _failure(
    tried: list[tuple[ModelConfig, ProviderError]], last: ProviderError | None
) -> GatewayError:
    if last is None:
        return GatewayError(
            503,
            "No model is available to serve this request.",
            type="server_error",
            code="no_model_available",
        )
    if not last.blames_model:
        if last.kind == "context_length":
            return GatewayError(400, last.message, code="context_length_exceeded", param="messages")
        return GatewayError(
            last.status if last.status and 400 <= last.status < 500 else 400,
            last.message,
            code=last.kind,
            param=last.param,
        )
    failures = [e for _, e in tried if e.blames_model]
    summary = "; ".join(f"{m.name} ({m.provider}): {e.message}" for m, e in tried)
    message = f"All {len(tried)} attempt(s) failed. {summary}"
    kinds = {e.kind for e in failures}
    if kinds == {"timeout"}:
        return GatewayError(504, message, type="server_error", code="upstream_timeout")
    if kinds == {"rate_limited"}:
        waits = [e.retry_after for e in failures if e.retry_after is not None]
        headers = {"retry-after": str(max(1, math.ceil(min(waits))))} if waits else {}
        return GatewayError(
            503, message, type="server_error", code="upstream_rate_limited", headers=headers
        )
    return GatewayError(502, message, type="server_error", code="upstream_error")
