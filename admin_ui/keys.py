"""The client keys as the admin sees them: who they are, what they may use, and what
they used (today, this month and the last minute, across the fleet). No secret or hash
is ever shown."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin_ui.openapi import operation
from admin_ui.performance import guarded, json_response
from admin_ui.services import AdminServices
from gateway.core.errors import NotFound
from gateway.core.keys import Tenant

__all__ = ["key_routes"]


def describe(tenant: Tenant) -> dict[str, Any]:
    return {
        "object": "api_key",
        "name": tenant.name,
        "allowed": sorted(tenant.allowed) if tenant.allowed is not None else None,
        "optimization": tenant.optimization,
        "budget": tenant.budget.model_dump() if tenant.budget is not None else None,
        "rate_limit": tenant.rate_limit.model_dump() if tenant.rate_limit is not None else None,
    }


def key_routes(services: AdminServices) -> list[Route]:
    def find(name: str) -> Tenant:
        for tenant in services.keys.tenants():
            if tenant.name == name:
                return tenant
        raise NotFound(f"Unknown API key '{name}'.", param="name", code="key_not_found")

    @operation()
    async def keys(request: Request) -> Response:
        """The client keys, with their scope and limits."""
        data = [describe(t) for t in sorted(services.keys.tenants(), key=lambda t: t.name)]
        return json_response({"object": "list", "data": data})

    @operation()
    async def one(request: Request) -> Response:
        """One client key."""
        return json_response(describe(find(request.path_params["name"])))

    @operation()
    async def usage(request: Request) -> Response:
        """What one key used across the fleet: spend, requests, tokens and errors today,
        spend this month, requests and tokens in the last minute, against its limits."""
        tenant = find(request.path_params["name"])
        return json_response({**describe(tenant), "usage": services.quota.report(tenant.name)})

    return [
        Route("/admin/keys", guarded(keys), methods=["GET"]),
        Route("/admin/keys/{name}", guarded(one), methods=["GET"]),
        Route("/admin/keys/{name}/usage", guarded(usage), methods=["GET"]),
    ]
