"""Experiments as the admin sees and steers them: every experiment with its arms' results
(n, mean, interval, difference to the control, status, cost), made, stopped and promoted
through the same routing object that serves them (`gateway.routing.experiments`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin_ui.openapi import operation
from admin_ui.performance import guarded, json_response
from admin_ui.services import AdminServices
from gateway.core.config import EXPERIMENT_METRICS
from gateway.http.body import read_json

__all__ = ["experiment_routes"]

_MAX_BODY = 64 * 1024


async def _body(request: Request, optional: bool = False) -> Any:
    if optional and not (await request.body()):
        return None
    return await read_json(request, _MAX_BODY)


def experiment_routes(services: AdminServices) -> list[Route]:
    @operation()
    async def listing(request: Request) -> Response:
        """Every experiment, running first: its arms' n, mean, interval, difference to the
        control, status and cost."""
        return json_response({"object": "list", "data": services.experiments.listing()})

    @operation(body=EXPERIMENT_BODY)
    async def create(request: Request) -> Response:
        """Start an experiment on a route; stored before it is acknowledged, running on
        every worker and replica within a second."""
        return json_response(await services.experiments.create(await _body(request)), status=201)

    @operation()
    async def one(request: Request) -> Response:
        """One experiment, with its curves over time."""
        return json_response(services.experiments.report(request.path_params["name"]))

    @operation()
    async def stop(request: Request) -> Response:
        """Stop an experiment: its route goes back to its usual routing."""
        return json_response(await services.experiments.stop(request.path_params["name"]))

    @operation(body={"type": "object", "properties": {"arm": {"type": "string"}}})
    async def promote(request: Request) -> Response:
        """Finish an experiment with an arm (its winner, unless the body names one) as the
        route's default: every request to the route is then served by its model, with
        its overrides."""
        body = await _body(request, optional=True)
        return json_response(await services.experiments.promote(request.path_params["name"], body))

    outages = services.store.OUTAGES
    return [
        Route("/experiments", guarded(listing), methods=["GET"]),
        Route("/experiments", guarded(create, outages), methods=["POST"]),
        Route("/experiments/{name}", guarded(one), methods=["GET"]),
        Route("/experiments/{name}/stop", guarded(stop, outages), methods=["POST"]),
        Route("/experiments/{name}/promote", guarded(promote, outages), methods=["POST"]),
    ]


_ARM: dict[str, Any] = {
    "type": "object",
    "required": ["name", "model"],
    "properties": {
        "name": {"type": "string"},
        "model": {"type": "string"},
        "share": {"type": "number", "minimum": 0, "maximum": 1},
        "system_prompt": {"type": "string"},
        "params": {"type": "object"},
    },
    "additionalProperties": False,
}
EXPERIMENT_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["name", "route", "arms"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
        "route": {"type": "string"},
        "arms": {"type": "array", "minItems": 2, "maxItems": 10, "items": _ARM},
        "control": {"type": "string"},
        "metric": {"enum": [*EXPERIMENT_METRICS, "combination"]},
        "combination": {
            "type": "object",
            "propertyNames": {"enum": list(EXPERIMENT_METRICS)},
            "additionalProperties": {"type": "number"},
        },
        "split": {"enum": ["fixed", "adaptive"]},
        "min_share": {"type": "number"},
        "sticky_by": {"enum": ["conversation", "user", "none"]},
        "guards": {"type": "object"},
        "alpha": {"type": "number"},
        "min_samples": {"type": "integer"},
        "min_effect": {"type": "number"},
        "expected_samples": {"type": "integer"},
    },
    "additionalProperties": False,
}
