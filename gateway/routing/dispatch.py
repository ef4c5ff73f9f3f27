"""Runs one client request against its ranked models, falling back on upstream failures.

The request path of the gateway in one place: a handler builds a `Job`;
`Dispatcher.run(job)` tries the ranked models in turn and returns the `Exchange` of
the first one that answers (a whole reply, a stream or audio); the handler delivers
it and closes the exchange. Closing is what records it: the `Outcome` (model,
attempt number, timings, usage, cost, error class, whether the client left) goes to
the `Recorder` exactly once. A failed attempt is an exchange that closed at once, so
the tracker and blacklist learn of a failing model before the answer that replaced
it has finished streaming. Nothing here touches HTTP or a database.

Two rare cases wait. A failure that benches its model: the next model is tried (or, for
a stream that fails midway, the client told) only once the bench is stored (the sink's
write, bounded by `bench_wait`), so a crash after the answer cannot forget it. A
cancelled attempt (the client left, or the server stopped waiting at its shutdown
deadline): its upstream call is abandoned with its connection, and it is recorded as
`ClientGone` or `GatewayStopped`, which blame nobody.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar, overload

from gateway.core.config import ModelConfig
from gateway.core.errors import (
    Failure,
    InvalidRequest,
    MemoryBusy,
    NoModelAvailable,
    Overloaded,
    RejectedByUpstream,
    UpstreamFailed,
)
from gateway.core.ids import new_id
from gateway.core.types import ENDPOINT_TYPES, Attempt, ConversationType, Optimization
from gateway.routing.answers import StreamAnswer
from gateway.routing.catalog import Catalog, Target
from providers.base import (
    NO_HEADERS,
    TOKEN_PRICED,
    BinaryReply,
    Call,
    ChunkStream,
    Endpoint,
    Piece,
    Provider,
    RawChunk,
    Reply,
    Usage,
    answer_chars,
    estimate_usage,
)
from providers.errors import (
    CapacityExhausted,
    ClientGone,
    ContextLengthExceeded,
    GatewayStopped,
    NoMemory,
    ProviderError,
    stopped,
)
from providers.transport import EventMemory, TakeMemory

__all__ = [
    "Assigner",
    "AudioJob",
    "Dispatcher",
    "Exchange",
    "Job",
    "Outcome",
    "Ranker",
    "ReplyJob",
    "Shadows",
    "Sink",
    "StreamJob",
    "Streaming",
    "Timings",
    "Traces",
]

R = TypeVar("R")  # what the upstream answered: Reply, ChunkStream or BinaryReply
P = TypeVar("P")  # a piece of a streamed answer: a batch of chunks, or bytes

_ID_PREFIX = {
    Endpoint.CHAT: "chatcmpl-",
    Endpoint.COMPLETIONS: "cmpl-",
    Endpoint.RESPONSES: "resp_",
    Endpoint.EMBEDDINGS: "emb-",
    Endpoint.IMAGES: "img-",
    Endpoint.SPEECH: "speech-",
    Endpoint.VIDEOS: "video_",
    Endpoint.VIDEO_STATUS: "videoq-",
    Endpoint.MESSAGES: "msg_",  # Anthropic's own prefix: clients may check it
    Endpoint.COUNT_TOKENS: "count-",
}


class Opened(NamedTuple, Generic[R, P]):
    """A provider's answer as a job opened it."""

    result: R
    first: P | None  # a streamed answer's first piece, read while fallback was possible
    rest: AsyncIterator[P] | None  # the pieces after it


@dataclass(slots=True)
class Job(ABC, Generic[R, P]):
    """One client request, as routing needs it. The subclass says how its answer comes:
    whole (`ReplyJob`), as server-sent events (`StreamJob`) or as audio (`AudioJob`)."""

    request_id: str
    endpoint: Endpoint
    target: Target
    body: dict[str, Any]
    optimization: Optimization | None = None
    conversation_id: str | None = None
    resource_id: str | None = None
    owner: str | None = None  # the client key's name (None: the gateway is open)
    # Client headers a provider may pass on (Anthropic's `anthropic-beta`); shared, empty
    # by default, so that Call does not build a dict of its own per attempt.
    headers: Mapping[str, str] = NO_HEADERS
    traceparent: str | None = None  # the client's W3C trace context (read when tracing)
    # A same-prompt comparison's call to a challenger, off the client's path
    # (routing/comparisons.py): its answer is nobody's reply, and no key is billed for it.
    shadow: bool = False
    # With `cost`: the cheapest model within this fraction of the best expected quality
    # (the x-gatewise-quality-tolerance header, else the route's quality_tolerance).
    tolerance: float | None = None
    # What a whole answer's bodies are charged to as they are read (the worker's bound on
    # the bodies it holds); a stream's pieces pass on as they come, but an event of one
    # not yet whole is charged to `event_memory` once it is large.
    memory: TakeMemory | None = None
    event_memory: EventMemory | None = None
    ctype: ConversationType = field(init=False)
    response_id: str = field(init=False)
    stream: bool = field(init=False)
    # By the dispatcher's clock, for the gateway's own overhead: when `run` began, and
    # the milliseconds its failed attempts waited on upstreams.
    began: float = field(init=False, default=0.0)
    waited_ms: float = field(init=False, default=0.0)
    trace: Any = field(init=False, default=None)  # the request's span, when tracing
    # Set by an experiment on the route (routing/experiments.py): the arm's name, and
    # its model, tried first.
    experiment: str | None = field(init=False, default=None)
    arm: str | None = field(init=False, default=None)
    pinned: ModelConfig | None = field(init=False, default=None)

    streamed: ClassVar[bool] = False  # the answer is delivered piece by piece

    def __post_init__(self) -> None:
        self.ctype = ENDPOINT_TYPES[self.endpoint]
        self.optimization = self.optimization or self.target.optimization
        if self.tolerance is None:
            self.tolerance = self.target.tolerance
        self.response_id = new_id(_ID_PREFIX[self.endpoint])
        self.stream = self.body.get("stream") is True

    @abstractmethod
    async def open(self, provider: Provider, call: Call, model: str) -> Opened[R, P]:
        """Ask the provider for the answer (and read a streamed answer's first piece, so
        that an upstream that breaks before it can still be replaced); `model` is the
        name the client will see."""


class ReplyJob(Job[Reply, None]):
    async def open(self, provider: Provider, call: Call, model: str) -> Opened[Reply, None]:
        return Opened(await provider.send(call), None, None)


class StreamJob(Job[ChunkStream, Sequence[Piece]]):
    streamed = True

    async def open(
        self, provider: Provider, call: Call, model: str
    ) -> Opened[ChunkStream, Sequence[Piece]]:
        stream = await provider.stream(call)
        batches = stream.pieces(self.response_id, model)
        return Opened(stream, await _first(stream, batches), batches)


class AudioJob(Job[BinaryReply, bytes]):
    streamed = True

    async def open(self, provider: Provider, call: Call, model: str) -> Opened[BinaryReply, bytes]:
        reply = await provider.binary(call)
        pieces = aiter(reply)
        return Opened(reply, await _first(reply, pieces), pieces)


async def _first(answer: ChunkStream | BinaryReply, pieces: AsyncIterator[P]) -> P | None:
    try:
        return await anext(pieces, None)
    except BaseException:
        await answer.aclose()
        raise


@dataclass(frozen=True, slots=True)
class Timings:
    """Milliseconds, by the dispatcher's clock."""

    upstream_ms: float  # from sending the attempt to the end of its answer, or its failure
    ttft_ms: float | None  # to the answer's first piece (for a whole reply: all of it)
    # The request's whole time in routing minus every attempt's upstream wait, for the
    # attempt that ends the request (None: not known, e.g. a failed attempt).
    overhead_ms: float | None = None


@dataclass(slots=True)
class Outcome:
    """One attempt at one model, closed: what the recorder takes in, exactly once."""

    job: Job[Any, Any]
    model: ModelConfig
    number: int  # 1 for the first model tried
    error: ProviderError | None
    timings: Timings
    usage: Usage | None
    cost: float
    at: float  # wall-clock seconds when it closed
    answered: bool = False  # its answer went to the client (whole or in part)
    client_gone: bool = False  # the client left before the answer's end
    usage_estimated: bool = False  # `usage` is the gateway's guess (providers.estimate_usage)
    body: dict[str, Any] | None = None  # a whole reply, for the evaluator
    said: StreamAnswer | None = None  # what a streamed reply said, for the evaluator

    @property
    def judged(self) -> bool:
        """Whether the evaluator sees it: a complete answer that reached the client."""
        return self.answered and self.error is None and not self.client_gone

    def attempt(self) -> Attempt:
        """The row kept for this attempt."""
        error = self.error
        job = self.job
        usage = self.usage
        return Attempt(
            request_id=job.request_id,
            response_id=job.response_id if self.answered and error is None else None,
            attempt=self.number,
            model=self.model.name,
            provider=self.model.provider,
            conversation_type=job.ctype,
            route=job.target.route,
            optimization=job.optimization,
            ok=error is None,
            error_class=error.kind if error is not None else None,
            http_status=error.status if error is not None else 200,
            latency_ms=self.timings.upstream_ms,
            ttft_ms=self.timings.ttft_ms,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cost=self.cost,
            timestamp=self.at,
            stream=job.stream,
            error_message=error.message if error is not None else None,
            retry_after=error.retry_after if error is not None else None,
            counts_as_failure=error is not None and error.blames_model,
            conversation_id=job.conversation_id,
        )


class Exchange(Generic[R]):
    """The answer of the model that answered, until it has been delivered; `close()`
    records how it ended."""

    __slots__ = ("_closed", "_dispatcher", "ended", "job", "model", "number", "result", "started")

    def __init__(
        self,
        dispatcher: Dispatcher,
        job: Job[R, Any],
        model: ModelConfig,
        number: int,
        result: R,
        started: float,
        ended: float | None,
    ) -> None:
        self._dispatcher = dispatcher
        self.job = job
        self.model = model
        self.number = number  # how many models were tried, this one included
        self.result = result
        self.started = started
        self.ended = ended  # when the upstream's whole answer was in (None: at close)
        self._closed = False

    @property
    def provider(self) -> str:
        return self.model.provider

    def close(self, error: ProviderError | None = None, *, client_gone: bool = False) -> Outcome:
        """Record how the exchange ended: once, whichever way it ended."""
        self._closing()
        return self._dispatcher.closed(self, error, client_gone)

    async def fail(self, error: ProviderError) -> Outcome:
        """Close it as failed after its first piece: returns once a bench the failure
        began is stored (bounded), so that the client hears of the failure after that."""
        self._closing()
        return await self._dispatcher.failed_midway(self, error)

    def _closing(self) -> None:
        if self._closed:
            raise RuntimeError("this exchange is already closed")
        self._closed = True

    def _describe(self, outcome: Outcome) -> None:
        """Give the outcome what the evaluator will judge."""
        if isinstance(self.result, Reply):
            outcome.body = self.result.body


class Streaming(Exchange[R], Generic[R, P]):
    """A streamed answer: its first piece, read while fallback was still possible, then
    the rest, read by the handler (one write to the client per piece)."""

    __slots__ = ("first", "first_at", "rest", "said")

    def __init__(
        self,
        dispatcher: Dispatcher,
        job: Job[R, P],
        model: ModelConfig,
        number: int,
        opened: Opened[R, P],
        started: float,
        first_at: float,
    ) -> None:
        super().__init__(dispatcher, job, model, number, opened.result, started, None)
        self.first = opened.first
        assert opened.rest is not None
        self.rest: AsyncIterator[P] = opened.rest
        self.first_at = first_at
        self.said = StreamAnswer() if isinstance(opened.result, ChunkStream) else None

    def observe(self, batch: Sequence[Piece]) -> None:
        """Keep what a streamed answer says, for the evaluator."""
        said = self.said
        if said is not None:
            for piece in batch:
                if isinstance(piece, RawChunk):
                    said.add_escaped(piece.text)
                else:
                    said.add(*piece)

    def _describe(self, outcome: Outcome) -> None:
        outcome.said = self.said


class Ranker(Protocol):
    """Orders the models that may serve a job, best first (`Selector`)."""

    def rank(self, job: Job[Any, Any]) -> Sequence[ModelConfig]: ...


class Sink(Protocol):
    """Takes every closed exchange's outcome (`Recorder`); returns what is worth waiting
    for before the client hears back (a bench being stored), if anything."""

    def record(self, outcome: Outcome) -> Awaitable[None] | None: ...

    def unanswered(self, job: Job[Any, Any], kind: str) -> None:
        """The request ends with no answer: `kind` is the error class that ended it."""


class Assigner(Protocol):
    """Puts a request in an experiment's arm, if its route runs one (`Experiments`)."""

    def assign(self, job: Job[Any, Any]) -> None: ...


class Shadows(Protocol):
    """Takes every answer that reached its client whole (`Comparisons`): a sampled one is
    also put to a challenger, in a task of its own. Must return at once."""

    def offer(self, outcome: Outcome) -> None: ...


class Traces(Protocol):
    """Starts an attempt's span (`Tracing`); returns the headers that carry it upstream."""

    def attempt(self, job: Job[Any, Any], model: ModelConfig, number: int) -> dict[str, str]: ...


class Dispatcher:
    def __init__(
        self,
        catalog: Catalog,
        selector: Ranker,
        recorder: Sink,
        *,
        max_attempts: int = 3,
        deadline: float = 300.0,
        bench_wait: float = 2.0,
        clock: Callable[[], float] = time.perf_counter,
        wall: Callable[[], float] = time.time,
        traces: Traces | None = None,
        experiments: Assigner | None = None,
        shadows: Shadows | None = None,
    ) -> None:
        self.catalog = catalog
        self._experiments = experiments
        self._shadows = shadows
        self._traces = traces
        self._selector = selector
        self._recorder = recorder
        self._max_attempts = max_attempts
        self._deadline = deadline
        self._bench_wait = bench_wait  # seconds a request waits for its bench to be stored
        self._clock = clock
        self._wall = wall
        self.saturated = 0  # attempts that found no connection free in this gateway

    @overload
    async def run(self, job: StreamJob) -> Streaming[ChunkStream, Sequence[Piece]]: ...
    @overload
    async def run(self, job: AudioJob) -> Streaming[BinaryReply, bytes]: ...
    @overload
    async def run(self, job: ReplyJob) -> Exchange[Reply]: ...

    async def run(self, job: Job[Any, Any]) -> Exchange[Any]:
        """The exchange of the first ranked model that answers. When none does, raises
        the `GatewayError` that says why (every failed attempt already recorded)."""
        if self._experiments is not None:
            self._experiments.assign(job)
        order = self._candidates(job)
        failures: list[Failure] = []
        min_context = 0  # after a context-length refusal: larger windows only
        began = job.began = self._clock()
        number = 0
        for model in order:
            if number >= self._max_attempts or (number and self._clock() - began > self._deadline):
                break
            window = model.context_window
            if min_context and window is not None and window <= min_context:
                continue
            number += 1
            call = Call(
                job.endpoint, job.body, model.upstream, job.stream, job.resource_id, job.headers,
                memory=job.memory, event_memory=job.event_memory,
            )  # fmt: skip
            if self._traces is not None:
                call.trace = self._traces.attempt(job, model, number)
            started = self._clock()
            try:
                opened = await job.open(self.catalog.provider_for(model), call, model.name)
            except CapacityExhausted as exc:
                # Never reached the upstream: nothing to record against the model.
                self.saturated += 1
                failures.append(Failure(model.name, model.provider, exc))
                continue
            except asyncio.CancelledError as exc:
                # The transport closed the connection (never back to the pool half-read);
                # the upstream had no chance to answer, so it is not blamed.
                cut: ProviderError = (
                    GatewayStopped("the gateway shut down before the upstream answered", status=503)
                    if stopped(exc)
                    else ClientGone(
                        "the request was cancelled before the upstream answered", status=499
                    )
                )
                self._failed(job, model, number, started, cut)
                raise
            except NoMemory as exc:
                # Answered, and dropped: another model's answer would need the same room.
                # The upstream charged for it, so the key pays what can be told: its
                # prompt, guessed (how long the answer was is not known).
                priced = job.endpoint in TOKEN_PRICED
                self._failed(job, model, number, started, exc, priced)
                self._recorder.unanswered(job, exc.kind)
                raise MemoryBusy(exc.message) from None
            except ProviderError as exc:
                stored = self._failed(job, model, number, started, exc)
                if stored is not None:  # this failure benched the model
                    await self._settle(stored)
                if isinstance(exc, ContextLengthExceeded):
                    min_context = window or 1
                elif not exc.blames_model:
                    self._recorder.unanswered(job, exc.kind)
                    raise RejectedByUpstream(exc) from None
                failures.append(Failure(model.name, model.provider, exc))
                continue
            now = self._clock()
            if job.streamed:
                return Streaming(self, job, model, number, opened, started, now)
            return Exchange(self, job, model, number, opened.result, started, now)
        error = _exhausted(failures)
        self._recorder.unanswered(job, failures[-1].error.kind if failures else "no_model")
        raise error

    def closed(self, exchange: Exchange[Any], error: ProviderError | None, gone: bool) -> Outcome:
        """Price and time a closed exchange and hand its outcome to the recorder."""
        return self._close(exchange, error, gone)[0]

    async def failed_midway(self, exchange: Exchange[Any], error: ProviderError) -> Outcome:
        outcome, stored = self._close(exchange, error, False)
        if stored is not None:
            await self._settle(stored)
        return outcome

    async def _settle(self, stored: Awaitable[None]) -> None:
        """Wait for a bench to be stored, at most `bench_wait` (it goes on after that)."""
        await asyncio.wait([asyncio.ensure_future(stored)], timeout=self._bench_wait)

    def _close(
        self, exchange: Exchange[Any], error: ProviderError | None, gone: bool
    ) -> tuple[Outcome, Awaitable[None] | None]:
        now = self._clock()
        ended = exchange.ended if exchange.ended is not None else now
        first = exchange.first_at if isinstance(exchange, Streaming) else ended
        usage = exchange.result.usage if isinstance(exchange.result, _HAS_USAGE) else None
        job = exchange.job
        estimated = False
        said = exchange.said if isinstance(exchange, Streaming) else None
        if said is not None and (usage is None or not usage.completion_tokens):
            # The upstream's count never came (cut before its end, or never sent): a
            # guess, not nothing, or leaving just before the end would be free.
            spoken = said.spoken()
            if usage is None or spoken:
                usage, estimated = estimate_usage(job.body, spoken, usage), True
        elif usage is None and error is None and job.endpoint in TOKEN_PRICED:
            result = exchange.result
            if isinstance(result, Reply) and result.status == 200:  # no count in the reply
                usage, estimated = estimate_usage(job.body, answer_chars(result.body)), True
        upstream_ms = (ended - exchange.started) * 1000
        overhead_ms = (now - job.began) * 1000 - job.waited_ms - upstream_ms
        outcome = Outcome(
            job,
            exchange.model,
            exchange.number,
            error,
            Timings(upstream_ms, (first - exchange.started) * 1000, overhead_ms),
            usage,
            exchange.model.pricing.cost_of(usage),
            self._wall(),
            answered=True,
            client_gone=gone,
            usage_estimated=estimated,
        )
        exchange._describe(outcome)
        stored = self._recorder.record(outcome)
        if self._shadows is not None and outcome.judged:
            self._shadows.offer(outcome)  # the client has its answer: nothing waits on this
        return outcome, stored

    def _candidates(self, job: Job[Any, Any]) -> Sequence[ModelConfig]:
        order = self._selector.rank(job)
        pinned = job.pinned
        if pinned is not None and (not order or order[0].name != pinned.name):
            order = [pinned, *(m for m in order if m.name != pinned.name)]
        unable = self.catalog.unable(job.endpoint)
        if not unable:
            return order
        able = [m for m in order if m.name not in unable]
        if not able:  # e.g. /v1/responses on a route of Anthropic models
            provider = self.catalog.provider_for(order[0])
            raise InvalidRequest(
                provider.unsupported(job.endpoint).message,
                code="unsupported_endpoint",
                param="model",
            )
        return able

    def _failed(
        self,
        job: Job[Any, Any],
        model: ModelConfig,
        number: int,
        started: float,
        error: ProviderError,
        charged: bool = False,
    ) -> Awaitable[None] | None:
        """Record a failed attempt; `charged`: its prompt was paid for (a guess of it)."""
        elapsed = (self._clock() - started) * 1000
        job.waited_ms += elapsed
        usage = estimate_usage(job.body, 0) if charged else None
        outcome = Outcome(
            job, model, number, error, Timings(elapsed, None), usage,
            model.pricing.cost_of(usage), self._wall(), usage_estimated=charged,
        )  # fmt: skip
        return self._recorder.record(outcome)


_HAS_USAGE = (Reply, ChunkStream, BinaryReply)


def _exhausted(failures: list[Failure]) -> Exception:
    if not failures:
        return NoModelAvailable("No model is available to serve this request.")
    if all(isinstance(f.error, CapacityExhausted) for f in failures):
        return Overloaded(
            "The gateway has no connection free to any upstream that can serve this "
            "request; retry shortly."
        )
    last = failures[-1].error
    if isinstance(last, ContextLengthExceeded):
        return RejectedByUpstream(last)
    return UpstreamFailed(failures)
