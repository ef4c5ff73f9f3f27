"""Builds the admin Starlette app that the gateway mounts."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin_ui.auth import AdminAuthMiddleware
from admin_ui.comparisons import comparison_routes
from admin_ui.evaluations import evaluation_routes
from admin_ui.experiments import experiment_routes
from admin_ui.keys import key_routes
from admin_ui.openapi import openapi, operation
from admin_ui.pages import page_routes
from admin_ui.performance import json_response, performance_routes
from admin_ui.prometheus import metrics_routes
from admin_ui.services import AdminServices
from gateway.http.errors import http_error

__all__ = ["create_admin_app"]


def create_admin_app(
    services: AdminServices, admin_token: str | None, metrics_token: str | None = None
) -> Starlette:
    async def index(request: Request) -> Response:
        """Where the admin API describes itself."""
        return json_response({"service": "gatewise-admin", "openapi": "/admin/openapi.json"})

    @operation(public=True)
    async def spec(request: Request) -> Response:
        """This document: the admin API, generated from the routes it serves."""
        return json_response(document)

    routes = [
        Route("/admin", index, methods=["GET"]),
        Route("/admin/openapi.json", spec, methods=["GET"]),
        *performance_routes(services),
        *evaluation_routes(services),
        *comparison_routes(services),
        *key_routes(services),
        *experiment_routes(services),
        *metrics_routes(services),
        *page_routes(),
    ]
    document = openapi(routes)
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(AdminAuthMiddleware, token=admin_token, metrics_token=metrics_token)
        ],
        exception_handlers={HTTPException: http_error},
    )
