"""Builds the admin Starlette app that the gateway mounts."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["create_admin_app"]


def create_admin_app() -> Starlette:
    async def index(request: Request) -> JSONResponse:
        return JSONResponse({"service": "gatewise-admin", "endpoints": []})

    return Starlette(routes=[Route("/admin", index, methods=["GET"])])
