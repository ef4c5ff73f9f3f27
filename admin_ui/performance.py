"""Performance endpoints of the admin API: live metrics, rankings, series, blacklist."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin_ui.metrics import rows
from admin_ui.openapi import (
    BUCKET,
    CONVERSATION_TYPE,
    LIMIT,
    OFFSET,
    OPTIMIZATION,
    SINCE,
    UNTIL,
    operation,
)
from admin_ui.params import filters
from admin_ui.services import AdminServices
from gateway.core.errors import GatewayError, NotFound, StoreUnavailable
from gateway.core.types import CONVERSATION_TYPES, OPTIMIZATIONS
from gateway.http.errors import error_response
from gateway.storage import Query

__all__ = ["guarded", "json_response", "performance_routes", "rankings", "unknown_model"]


def json_response(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(handler: Endpoint, outages: tuple[type[BaseException], ...] = ()) -> Endpoint:
    """The endpoint, with its domain errors answered in the API's error shape, and a store
    that is down (`outages`: what the store raises then) as a 503 with Retry-After."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except GatewayError as exc:
            return error_response(exc)
        except outages:
            return error_response(StoreUnavailable("The store cannot be read right now."))

    return run


def unknown_model(name: str) -> NotFound:
    return NotFound(f"Unknown model '{name}'.", param="model", code="model_not_found")


def rankings(services: AdminServices, ctype: str, optimization: str) -> list[dict[str, Any]]:
    """The scores that route requests, with their parts, for every model serving `ctype`."""
    catalog = services.catalog
    models = [
        m
        for m in catalog.config.models
        if m.name in catalog.enabled and ctype in m.conversation_types
    ]
    scores = services.selector.rankings(models, ctype, optimization)
    return [
        {
            "rank": i + 1,
            "model": s.model,
            "score": round(s.total, 6),
            "blacklisted": s.blacklisted,
            "parts": s.parts,
        }
        for i, s in enumerate(scores)
    ]


def performance_routes(services: AdminServices) -> list[Route]:
    @operation(CONVERSATION_TYPE, LIMIT, OFFSET)
    async def performance(request: Request) -> Response:
        """Every model's live metrics per conversation type."""
        f = filters(request)
        data = rows(services, f.conversation_type)
        total = len(data)
        return json_response(
            {
                "object": "list",
                "total": total,
                "generated_at": time.time(),
                "data": data[f.offset : f.offset + f.limit],
            }
        )

    @operation(CONVERSATION_TYPE, OPTIMIZATION)
    async def ranking(request: Request) -> Response:
        """Models ranked by the routing score, with the parts of every score."""
        f = filters(request)
        ctype = f.conversation_type or "text-to-text"
        wanted = [f.optimization] if f.optimization else list(OPTIMIZATIONS)
        return json_response(
            {
                "conversation_type": ctype,
                "rankings": {opt: rankings(services, ctype, opt) for opt in wanted},
            }
        )

    @operation(CONVERSATION_TYPE, SINCE, UNTIL, BUCKET)
    async def metrics(request: Request) -> Response:
        """One model in full, with a time series."""
        name = request.path_params["model"]
        if name not in services.catalog.models:
            raise unknown_model(name)
        f = filters(request)
        now = time.time()
        since = f.since if f.since is not None else now - 86400
        until = f.until if f.until is not None else now
        bucket = f.bucket or (60 if until - since <= 6 * 3600 else 3600)
        series = await services.store.timeseries(
            Query(model=name, conversation_type=f.conversation_type, since=since, until=until),
            bucket_seconds=bucket,
        )
        return json_response(
            {
                "model": name,
                "provider": services.catalog.models[name].provider,
                "metrics": rows(services, f.conversation_type, name),
                "timeseries": {
                    "bucket_seconds": bucket,
                    "since": since,
                    "until": until,
                    "data": series,
                },
            }
        )

    async def blacklisted(request: Request) -> Response:
        """The blacklisted models, with when each returns."""
        now = services.blacklist.clock()
        entries = [
            {**entry.to_dict(), "seconds_left": max(0.0, (entry.until or 0) - now)}
            for entry in services.blacklist.active()
        ]
        return json_response({"object": "list", "data": entries})

    async def clear(request: Request) -> Response:
        """Let a blacklisted model back early. Answered once the store has it (503 if the
        store is down: the model is back in this process, and stored when the store is)."""
        name = request.path_params["model"]
        if name not in services.catalog.models:
            raise unknown_model(name)
        was = await services.recorder.let_back(name)
        return json_response({"model": name, "cleared": was})

    @operation(CONVERSATION_TYPE)
    async def summary(request: Request) -> Response:
        """Totals, the busiest and the best models per conversation type."""
        f = filters(request)
        data = rows(services, f.conversation_type)
        requests = sum(r["requests"] for r in data)
        successes = sum(r["successes"] for r in data)
        failures = sum(r["failures"] for r in data)
        per_type = {}
        for ctype in CONVERSATION_TYPES:
            typed = [r for r in data if r["conversation_type"] == ctype]
            if not typed:
                continue
            busiest = max(typed, key=lambda r: r["requests"])
            per_type[ctype] = {
                "requests": sum(r["requests"] for r in typed),
                "cost": round(sum(r["cost"]["total"] or 0 for r in typed), 6),
                "busiest_model": busiest["model"] if busiest["requests"] else None,
                "best_models": {
                    opt: (rankings(services, ctype, opt) or [{}])[0].get("model")
                    for opt in ("cost", "accuracy", "creativity", "speed")
                },
            }
        return json_response(
            {
                "requests": requests,
                "successes": successes,
                "failures": failures,
                "success_rate": round(successes / (successes + failures), 4)
                if successes + failures
                else None,
                "cost": round(sum(r["cost"]["total"] or 0 for r in data), 6),
                "blacklisted": [e.model for e in services.blacklist.active()],
                "by_conversation_type": per_type,
                "generated_at": time.time(),
            }
        )

    async def prompts(request: Request) -> Response:
        """The per-prompt learners of the routes that have one (`per_prompt: true`): the
        ratings each model's rests on and what it expects."""
        learners = services.selector.prompts
        return json_response(
            {"object": "list", "data": learners.summary() if learners is not None else []}
        )

    return [
        Route("/performance", guarded(performance, services.store.OUTAGES), methods=["GET"]),
        Route("/performance/prompts", guarded(prompts), methods=["GET"]),
        Route("/performance/rankings", guarded(ranking, services.store.OUTAGES), methods=["GET"]),
        Route("/performance/summary", guarded(summary, services.store.OUTAGES), methods=["GET"]),
        Route(
            "/performance/blacklisted",
            guarded(blacklisted, services.store.OUTAGES),
            methods=["GET"],
        ),
        Route(
            "/performance/blacklisted/{model:path}",
            guarded(clear, services.store.OUTAGES),
            methods=["DELETE"],
        ),
        Route(
            "/performance/metrics/{model:path}",
            guarded(metrics, services.store.OUTAGES),
            methods=["GET"],
        ),
    ]
