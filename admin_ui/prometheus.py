"""GET /metrics for Prometheus: what this replica's workers served, in its text format."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin_ui.openapi import operation
from admin_ui.services import AdminServices

__all__ = ["CONTENT_TYPE", "metrics_routes"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_routes(services: AdminServices) -> list[Route]:
    @operation(media_type="text/plain")
    async def metrics(request: Request) -> Response:
        """Requests, attempts, latency, tokens, cost, benches, scores and storage, summed
        over this replica's workers (see the README's "Metrics and alerts")."""
        return Response(services.metrics.exposition(), media_type=CONTENT_TYPE)

    return [Route("/metrics", metrics, methods=["GET"])]
