"""Spans of a request and its attempts, exported to the SDK's in-memory exporter."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from gateway.routing.tracing import Tracing
from gateway.server.tracing import wanted
from providers.errors import UpstreamServerError
from tests.gateway.routing.test_recorder import CATALOG, Chain

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exported() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider.get_tracer("test")), exporter


def test_a_fallback_is_a_request_span_with_an_attempt_span_each(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    chain = Chain()
    chain.recorder.tracing = tracing
    failed = chain.outcome("m", UpstreamServerError("down", status=500), answered=False)
    job = failed.job
    job.traceparent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
    chain.recorder.record(failed)
    answered = chain.outcome("n", number=2)
    answered.job = job
    chain.recorder.record(answered)

    first, second, request = exporter.get_finished_spans()
    assert request.name == "chat auto"
    assert request.kind is SpanKind.SERVER
    assert f"{request.context.trace_id:032x}" == TRACE_ID  # the client's trace
    assert request.parent is not None and f"{request.parent.span_id:016x}" == CLIENT_SPAN
    assert request.attributes is not None
    assert request.attributes["gen_ai.operation.name"] == "chat"
    assert request.attributes["gen_ai.request.model"] == "auto"
    assert request.attributes["gen_ai.response.model"] == "n"
    assert request.attributes["gen_ai.usage.input_tokens"] == 1000
    assert request.attributes["gen_ai.usage.output_tokens"] == 10
    assert request.attributes["gatewise.route"] == "auto"
    assert request.attributes["gatewise.attempts"] == 2
    for attempt in (first, second):
        assert attempt.kind is SpanKind.CLIENT
        assert attempt.parent is not None
        assert attempt.parent.span_id == request.context.span_id
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["gatewise.attempt"] == 1
    assert first.attributes["error.type"] == "server_error"
    assert first.status.status_code is StatusCode.ERROR
    assert second.attributes["gatewise.attempt"] == 2
    assert second.attributes["gatewise.fallback_reason"] == "server_error"
    assert second.attributes["gen_ai.provider.name"] == "p"
    assert request.start_time == first.start_time  # it begins with its first attempt
    # No text of the prompt or the answer anywhere.
    values = [str(v) for s in (first, second, request) for v in (s.attributes or {}).values()]
    assert not [v for v in values if v == "hi"]


def test_a_request_no_model_answered_ends_as_an_error(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    chain = Chain()
    chain.recorder.tracing = tracing
    failed = chain.outcome("m", UpstreamServerError("down", status=500), answered=False)
    chain.recorder.record(failed)
    chain.recorder.unanswered(failed.job, "server_error")
    attempt, request = exporter.get_finished_spans()
    assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id
    assert request.parent is None  # no traceparent: a trace of its own
    assert request.status.status_code is StatusCode.ERROR
    assert request.attributes is not None and request.attributes["error.type"] == "server_error"


def test_traces_are_made_only_when_the_environment_asks() -> None:
    assert not wanted({})
    assert wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert wanted({"OTEL_TRACES_EXPORTER": "otlp"})
    assert not wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"})
    assert not wanted({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})


def test_an_attempt_that_found_no_connection_ends_as_never_sent(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    chain = Chain()
    job = chain.outcome().job
    headers = tracing.attempt(job, CATALOG.models["m"], 1)  # then CapacityExhausted
    assert headers["traceparent"].startswith("00-")
    tracing.unanswered(job, "pool_exhausted")
    attempt, request = exporter.get_finished_spans()
    assert attempt.attributes is not None
    assert attempt.attributes["error.type"] == "pool_exhausted"
    assert f"{attempt.context.span_id:016x}" == headers["traceparent"].split("-")[2]
    assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id
