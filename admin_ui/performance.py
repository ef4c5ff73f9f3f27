"""Performance endpoints of the admin API."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin_ui.services import AdminServices
from gateway.errors import GatewayError, error_response

__all__ = ["performance_routes"]


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def performance_routes(services: AdminServices) -> list[Route]:
    def known(name: str) -> bool:
        return name in services.catalog.models

    def not_found(name: str) -> Response:
        return error_response(GatewayError(404, f"Unknown model '{name}'.", code="model_not_found"))

    async def blacklisted(request: Request) -> Response:
        entries = [
            {
                **entry.to_dict(),
                "seconds_left": max(0.0, (entry.until or 0) - services.blacklist.clock()),
            }
            for entry in services.blacklist.active()
        ]
        return _json({"object": "list", "data": entries})

    async def clear(request: Request) -> Response:
        name = request.path_params["model"]
        if not known(name):
            return not_found(name)
        was = services.blacklist.clear(name)
        services.tracker.version += 1
        return _json({"model": name, "cleared": was})

    return [
        Route("/performance/blacklisted", blacklisted, methods=["GET"]),
        Route("/performance/blacklisted/{model:path}", clear, methods=["DELETE"]),
    ]
