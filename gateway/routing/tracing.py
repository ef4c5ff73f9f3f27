"""OpenTelemetry spans: one per request, a child per upstream attempt (optional).

The dispatcher starts an attempt's span as it sends it (`attempt`: its `traceparent`
goes upstream); the recorder ends it with what the outcome says (`observe`). The
request's span begins with its first attempt and ends with the outcome that ends the
request; a client's `traceparent` makes it the parent. Tracing off, none of this runs:
the dispatcher and recorder hold None.

Attributes follow OpenTelemetry's GenAI semantic conventions (`gen_ai.*`) plus
Gatewise's own (`gatewise.*`). Never a prompt or an answer's text.
The `opentelemetry-api` package is imported only when a `Tracing` is built
(`gateway.server.tracing`, the `tracing` extra).
"""

from __future__ import annotations

from typing import Any

from gateway.core.config import ModelConfig
from gateway.routing.dispatch import Job, Outcome
from providers.base import Endpoint

__all__ = ["OPERATIONS", "Tracing"]

# gen_ai.operation.name, by endpoint (the convention's names where it has one)
OPERATIONS = {
    Endpoint.CHAT: "chat",
    Endpoint.COMPLETIONS: "text_completion",
    Endpoint.RESPONSES: "chat",
    Endpoint.EMBEDDINGS: "embeddings",
}


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class _Request:
    __slots__ = ("attempt", "last_error", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.attempt: Any = None  # the span of the attempt under way, started at its send
        self.last_error: str | None = None  # the failure that made the next attempt a fallback


class Tracing:
    def __init__(self, tracer: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracer = tracer
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()

    def _request(self, job: Job[Any, Any], start: float | None = None) -> _Request:
        """The request's span, begun with its first attempt (at `start`, wall-clock
        seconds; None: now)."""
        state: _Request | None = job.trace
        if state is None:
            parent = None
            if job.traceparent:
                parent = self._propagator.extract({"traceparent": job.traceparent})
            operation = OPERATIONS.get(job.endpoint, job.endpoint.value)
            span = self.tracer.start_span(
                f"{operation} {job.target.name}",
                context=parent,
                kind=self._trace.SpanKind.SERVER,
                start_time=None if start is None else _ns(start),
                attributes={
                    "gen_ai.operation.name": operation,
                    "gen_ai.request.model": job.target.name,
                    "gatewise.route": job.target.route or "",
                    "gatewise.optimization": job.optimization or "",
                    "gatewise.endpoint": job.endpoint.value,
                },
            )
            state = job.trace = _Request(span)
        return state

    def attempt(self, job: Job[Any, Any], model: ModelConfig, number: int) -> dict[str, str]:
        """Start an attempt's span as it is sent; its `traceparent` goes to the upstream."""
        state = self._request(job)
        self._unsent(state)
        span = self.tracer.start_span(
            f"attempt {model.name}",
            context=self._trace.set_span_in_context(state.span),
            kind=self._trace.SpanKind.CLIENT,
        )
        state.attempt = span
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        return carrier

    def observe(self, outcome: Outcome) -> None:
        job = outcome.job
        state = self._request(job, outcome.at - outcome.timings.upstream_ms / 1000)
        model = outcome.model
        error = outcome.error
        ended = outcome.at
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATIONS.get(job.endpoint, job.endpoint.value),
            "gen_ai.request.model": model.upstream,
            "gen_ai.provider.name": model.provider,
            "gatewise.model": model.name,
            "gatewise.attempt": outcome.number,
        }
        if state.last_error is not None:
            attributes["gatewise.fallback_reason"] = state.last_error
        usage = outcome.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if outcome.timings.ttft_ms is not None and outcome.answered:
            attributes["gatewise.ttft_ms"] = round(outcome.timings.ttft_ms, 3)
        span = state.attempt
        state.attempt = None
        if span is not None:  # started by the dispatcher, as it sent the attempt
            span.set_attributes(attributes)
        else:
            span = self.tracer.start_span(
                f"attempt {model.name}",
                context=self._trace.set_span_in_context(state.span),
                kind=self._trace.SpanKind.CLIENT,
                start_time=_ns(ended - outcome.timings.upstream_ms / 1000),
                attributes=attributes,
            )
        kind = "client_gone" if outcome.client_gone else error.kind if error else None
        if kind is not None:
            span.set_attribute("error.type", kind)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end(end_time=_ns(ended))
        if error is not None:
            state.last_error = error.kind
        if outcome.answered or kind == "client_gone":
            request = state.span
            request.set_attribute("gen_ai.response.model", model.name)
            request.set_attribute("gatewise.attempts", outcome.number)
            if usage is not None:
                request.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
                request.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
            if kind is not None:
                request.set_attribute("error.type", kind)
                request.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
            request.end(end_time=_ns(ended))
            job.trace = None

    def _unsent(self, state: _Request) -> None:
        """An attempt begun and never recorded: it found no connection free (the only
        attempt the dispatcher does not record), so it never reached the upstream."""
        if state.attempt is not None:
            state.attempt.set_attribute("error.type", "pool_exhausted")
            state.attempt.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
            state.attempt.end()
            state.attempt = None

    def unanswered(self, job: Job[Any, Any], kind: str) -> None:
        state = self._request(job)
        self._unsent(state)
        state.span.set_attribute("error.type", kind)
        state.span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        state.span.end()
        job.trace = None
