"""Same-prompt comparisons in the admin API: `GET /comparisons` (each comparison's
sampling and spend today, its pairs, and the pairwise results: win rates and
Bradley-Terry ratings), and the feedback page's blind judging (`GET /admin/pairs/next`,
`POST /admin/feedback/pairwise`, as the admin)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin_ui.openapi import OFFSET, Param, operation
from admin_ui.performance import guarded, json_response
from admin_ui.services import AdminServices
from gateway.core.errors import InvalidFilter
from gateway.http.body import read_json
from gateway.routing.pairwise import MAX_PAIRWISE_BYTES, results

__all__ = ["PAIRWISE_BODY", "comparison_routes"]

ROUTE = Param("route", {"type": "string"}, "only verdicts on this route's answers")
PAIRWISE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["a", "b", "winner"],
    "additionalProperties": False,
    "properties": {
        "a": {"type": "string"},
        "b": {"type": "string"},
        "winner": {"type": "string", "enum": ["a", "b", "tie"]},
    },
}
_MAX_OFFSET = 1000


def comparison_routes(services: AdminServices) -> list[Route]:
    @operation(ROUTE)
    async def comparisons(request: Request) -> Response:
        """Comparisons: sampling and spend today (UTC, the fleet's), pairs kept and
        judged, and the pairwise results (win rates, Bradley-Terry ratings)."""
        route = request.query_params.get("route") or None
        if route is not None and route not in services.catalog.routes:
            raise InvalidFilter(f"Unknown route '{route}'.", param="route")
        counts = {row["comparison"]: row for row in await services.store.pair_counts()}
        listed = []
        for status in services.comparisons.status():
            if route is not None and status["route"] != route:
                continue
            row = counts.get(status["name"], {})
            listed.append({**status, "pairs": row.get("pairs", 0), "judged": row.get("judged", 0)})
        tallies = await services.store.verdict_tallies(route)
        return json_response(
            {"object": "comparisons", "comparisons": listed, "results": results(tallies)}
        )

    @operation(OFFSET)
    async def next_pair(request: Request) -> Response:
        """The newest pair still to be judged, blind: two answers to one prompt in a
        random order, without their models; null when none is waiting (the page polls)."""
        raw = request.query_params.get("offset", "0")
        if not raw.isdigit() or int(raw) > _MAX_OFFSET:
            raise InvalidFilter(
                f"'offset' must be a whole number from 0 to {_MAX_OFFSET}.", param="offset"
            )
        return json_response(await services.pairwise.next_pair(None, int(raw)))

    @operation(body=PAIRWISE_BODY)
    async def judge(request: Request) -> Response:
        """Say which of two answers is better (as POST /v1/feedback/pairwise does)."""
        payload = await read_json(request, MAX_PAIRWISE_BYTES)
        return json_response(await services.pairwise.submit(payload))

    outages = services.store.OUTAGES
    return [
        Route("/comparisons", guarded(comparisons, outages), methods=["GET"]),
        Route("/admin/pairs/next", guarded(next_pair, outages), methods=["GET"]),
        Route("/admin/feedback/pairwise", guarded(judge, outages), methods=["POST"]),
    ]
