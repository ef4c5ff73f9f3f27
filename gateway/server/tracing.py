"""Tracing from the standard OTEL_* environment, when the `tracing` extra is installed.

Spans are made (`gateway.routing.tracing`) only when an exporter is asked for:
`OTEL_TRACES_EXPORTER=otlp` (or `console`), or an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). The SDK reads the
rest itself: service name and resource attributes, the endpoint, headers, protocol.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from gateway.routing.tracing import Tracing

__all__ = ["tracing_from_env"]

log = logging.getLogger("gatewise")


def wanted(env: Mapping[str, str]) -> bool:
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none" or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return bool(exporter or endpoint)


def tracing_from_env(env: Mapping[str, str] = os.environ) -> tuple[Tracing, Any] | None:
    """The tracing and its provider (to shut down at stop), or None when not asked for."""
    if not wanted(env):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("OTEL_* asks for traces but the 'tracing' extra is not installed")
        return None
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "gatewise")})
    provider = TracerProvider(resource=resource)
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "console":
        exporter: Any = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider.get_tracer("gatewise")), provider
