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
from gateway.http.body import read_json

__all__ = ["key_routes"]


def describe(tenant: Tenant) -> dict[str, Any]:
    return {
        "object": "api_key",
        "name": tenant.name,
        "source": "config",
        "revoked": False,
        "allowed": sorted(tenant.allowed) if tenant.allowed is not None else None,
        "optimization": tenant.optimization,
        "budget": tenant.budget.model_dump() if tenant.budget is not None else None,
        "rate_limit": tenant.rate_limit.model_dump() if tenant.rate_limit is not None else None,
    }


async def _body(request: Request) -> Any:
    return await read_json(request, 64 * 1024)


def key_routes(services: AdminServices) -> list[Route]:

    def find(name: str) -> dict[str, Any]:
        for tenant in services.keys.configured():
            if tenant.name == name:
                return describe(tenant)
        row = services.key_registry.rows.get(name)
        if row is None:
            raise NotFound(f"Unknown API key '{name}'.", param="name", code="key_not_found")
        return services.key_registry.describe(row)

    @operation()
    async def keys(request: Request) -> Response:
        """The client keys, from the configuration and made at runtime, with their scope
        and limits (never a secret or its hash)."""
        configured = [describe(t) for t in services.keys.configured()]
        data = sorted(configured, key=lambda k: k["name"]) + services.key_registry.listing()
        return json_response({"object": "list", "data": data})

    @operation(body=KEY_BODY)
    async def create(request: Request) -> Response:
        """Make a key. Its secret is in this answer only: the gateway keeps its hash."""
        row, secret = await services.key_registry.create(await _body(request))
        return json_response({**row, "key": secret}, status=201)

    @operation()
    async def one(request: Request) -> Response:
        """One client key."""
        return json_response(find(request.path_params["name"]))

    @operation(body=KEY_BODY)
    async def update(request: Request) -> Response:
        """Change a runtime key's scope or limits."""
        return json_response(
            await services.key_registry.update(request.path_params["name"], await _body(request))
        )

    @operation()
    async def revoke(request: Request) -> Response:
        """Revoke a runtime key: it stops working on every worker and replica within a
        second. Its name stays taken."""
        return json_response(await services.key_registry.revoke(request.path_params["name"]))

    @operation()
    async def rotate(request: Request) -> Response:
        """A new secret for a runtime key (in this answer only); the old one stops working."""
        row, secret = await services.key_registry.rotate(request.path_params["name"])
        return json_response({**row, "key": secret})

    @operation()
    async def usage(request: Request) -> Response:
        """What one key used across the fleet: spend, requests, tokens and errors today,
        spend this month, requests and tokens in the last minute, against its limits."""
        found = find(request.path_params["name"])
        return json_response({**found, "usage": services.quota.report(found["name"])})

    @operation()
    async def all_usage(request: Request) -> Response:
        """Every key with today's and this month's use across the fleet, in one answer
        (the dashboard's keys panel)."""
        configured = [describe(t) for t in services.keys.configured()]
        keys = sorted(configured, key=lambda k: k["name"]) + services.key_registry.listing()
        data = [{**k, "usage": services.quota.report(k["name"])} for k in keys]
        return json_response({"object": "list", "data": data})

    outages = services.store.OUTAGES
    return [
        Route("/admin/usage", guarded(all_usage), methods=["GET"]),
        Route("/admin/keys", guarded(keys), methods=["GET"]),
        Route("/admin/keys", guarded(create, outages), methods=["POST"]),
        Route("/admin/keys/{name}", guarded(one), methods=["GET"]),
        Route("/admin/keys/{name}", guarded(update, outages), methods=["PATCH"]),
        Route("/admin/keys/{name}", guarded(revoke, outages), methods=["DELETE"]),
        Route("/admin/keys/{name}/rotate", guarded(rotate, outages), methods=["POST"]),
        Route("/admin/keys/{name}/usage", guarded(usage), methods=["GET"]),
    ]


KEY_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
        "routes": {"type": "array", "items": {"type": "string"}},
        "models": {"type": "array", "items": {"type": "string"}},
        "optimization": {"enum": ["cost", "accuracy", "creativity", "speed", "continuity"]},
        "budget": {"type": "object"},
        "rate_limit": {"type": "object"},
    },
    "additionalProperties": False,
}
