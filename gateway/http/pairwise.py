"""Pairwise judgements on the client API: `POST /v1/feedback/pairwise` records which of
two answers a key received was better; `GET /v1/feedback/pairwise/next` hands the key
the newest of its same-prompt pairs still to be judged, blind (routing/pairwise.py)."""

from __future__ import annotations

from typing import Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.core.errors import GatewayError, InvalidRequest
from gateway.core.ids import request_id_from
from gateway.http.auth import tenant_of
from gateway.http.body import read_json
from gateway.http.errors import error_response
from gateway.routing.pairwise import MAX_PAIRWISE_BYTES, PairwiseService, no_pending_pair

__all__ = ["PairwiseBackend", "pairwise_routes"]

_JSON = "application/json"
_MAX_OFFSET = 1000


class PairwiseBackend(Protocol):
    pairwise: PairwiseService


def pairwise_routes(gateway: PairwiseBackend) -> list[Route]:
    pairwise = gateway.pairwise

    async def judge(request: Request) -> Response:
        request_id = request_id_from(request.headers.get("x-request-id"))
        try:
            body = await read_json(request, MAX_PAIRWISE_BYTES)
            result = await pairwise.submit(body, tenant_of(request.scope))
        except GatewayError as exc:
            return error_response(exc, {"x-request-id": request_id})
        return Response(orjson.dumps(result), 200, {"x-request-id": request_id}, _JSON)

    async def pending(request: Request) -> Response:
        request_id = request_id_from(request.headers.get("x-request-id"))
        try:
            offset = _offset(request.query_params.get("offset"))
            result = await pairwise.next_pair(tenant_of(request.scope), offset)
            if result is None:
                raise no_pending_pair()
        except GatewayError as exc:
            return error_response(exc, {"x-request-id": request_id})
        return Response(orjson.dumps(result), 200, {"x-request-id": request_id}, _JSON)

    return [
        Route("/v1/feedback/pairwise", judge, methods=["POST"]),
        Route("/v1/feedback/pairwise/next", pending, methods=["GET"]),
    ]


def _offset(value: str | None) -> int:
    if value is None:
        return 0
    if not value.isdigit() or int(value) > _MAX_OFFSET:
        raise InvalidRequest(
            f"'offset' must be a whole number from 0 to {_MAX_OFFSET}.", param="offset"
        )
    return int(value)
