"""The operator pages: the dashboard at /model-performance and the feedback form at
/feedback, with their static assets under /ui/.

The pages are public shells; every number they show comes from the admin API, which
asks for the admin token. Assets are a fixed set of files from admin_ui/static with
explicit content types, so nothing outside that folder can be reached.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from admin_ui.openapi import operation
from admin_ui.performance import json_response

__all__ = ["STATIC_DIR", "page_routes"]

STATIC_DIR = Path(__file__).parent / "static"

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_ASSET = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(?:js|css|svg)$")

# The pages load only their own scripts and styles and talk only to this origin.
# (X-Content-Type-Options: nosniff is on every response, added by the server: cli.py.)
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _not_found(what: str) -> Response:
    return json_response(
        {
            "error": {
                "message": f"No such file: {what}",
                "type": "invalid_request_error",
                "param": None,
                "code": "not_found",
            }
        },
        404,
    )


def _page(filename: str, summary: str) -> Callable[[Request], Awaitable[Response]]:
    @operation(media_type="text/html", public=True)
    async def page(request: Request) -> Response:
        return FileResponse(
            STATIC_DIR / filename,
            media_type="text/html; charset=utf-8",
            headers=_PAGE_HEADERS,
        )

    page.__doc__ = summary
    return page


@operation(media_type="text/javascript", public=True)
async def asset(request: Request) -> Response:
    """A script, style sheet or icon of the pages."""
    name = request.path_params["name"]
    path = STATIC_DIR / name
    if not _ASSET.match(name) or not path.is_file():
        return _not_found(f"/ui/{name}")
    return FileResponse(
        path,
        media_type=_TYPES[path.suffix],
        headers={"Cache-Control": "no-cache"},
    )


def page_routes() -> list[Route]:
    return [
        Route(
            "/model-performance",
            _page("dashboard.html", "The dashboard: live performance, rankings, blacklist."),
            methods=["GET", "HEAD"],
        ),
        Route(
            "/feedback",
            _page("feedback.html", "The form that rates an answer by its response id."),
            methods=["GET", "HEAD"],
        ),
        Route("/ui/{name}", asset, methods=["GET", "HEAD"]),
    ]
