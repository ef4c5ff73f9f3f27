"""The admin API's OpenAPI document is generated from the routes: none can be missing."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from starlette.routing import Route

from admin_ui.app import create_admin_app
from admin_ui.openapi import openapi
from admin_ui.services import AdminServices
from gateway.storage import SQLiteStore


def served() -> tuple[list[Route], dict[str, Any]]:
    services = SimpleNamespace(store=SQLiteStore(":memory:"))  # routes only: never opened
    app = create_admin_app(cast(AdminServices, services), admin_token=None)
    routes = [r for r in app.routes if isinstance(r, Route)]
    return routes, openapi(routes)


def test_every_served_path_and_method_is_described() -> None:
    routes, spec = served()
    assert routes
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    for route in routes:
        path = route.path.replace(":path", "")
        for method in route.methods - {"HEAD"}:
            assert (path, method.lower()) in described, f"{method} {route.path} is undocumented"
    assert ("/admin/responses/{response_id}", "get") in described  # the one that drifted


def test_every_operation_has_a_summary_and_its_path_parameters() -> None:
    _, spec = served()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op["summary"], f"{method} {path}"
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert {part[1:-1] for part in path.split("/") if part.startswith("{")} == declared


def test_a_route_without_a_docstring_cannot_be_published() -> None:
    async def undocumented(request: Any) -> Any:
        return None

    with pytest.raises(ValueError, match="/secret"):
        openapi([Route("/secret", undocumented)])


def test_filters_and_bodies_are_described() -> None:
    _, spec = served()
    rankings = spec["paths"]["/performance/rankings"]["get"]
    assert {p["name"] for p in rankings["parameters"]} == {"conversationType", "optimization"}
    rate = spec["paths"]["/admin/feedback"]["post"]
    body = rate["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["response_id"] and "overall" in body["properties"]
    assert spec["paths"]["/admin/openapi.json"]["get"]["security"] == []
