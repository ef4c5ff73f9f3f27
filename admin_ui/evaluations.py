"""Evaluation endpoints of the admin API, the feedback form's endpoints, and the
improvement suggestions."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin_ui.metrics import rows
from admin_ui.openapi import (
    BUCKET,
    CONVERSATION_TYPE,
    FEEDBACK_BODY,
    KEY,
    LIMIT,
    OFFSET,
    SINCE,
    UNTIL,
    operation,
)
from admin_ui.params import Filters, filters
from admin_ui.performance import guarded, json_response, unknown_model
from admin_ui.services import AdminServices
from admin_ui.suggestions import suggestions
from gateway.http.body import read_json
from gateway.routing.feedback import MAX_FEEDBACK_BYTES, unknown_response
from gateway.routing.tracker import FEEDBACK_DIMENSIONS
from gateway.storage import Query

__all__ = ["evaluation_routes"]


def _rates(aggregate: dict[str, Any]) -> dict[str, float]:
    count = aggregate["count"] or 0
    return {f: round(n / count, 4) for f, n in aggregate["flags"].items()} if count else {}


def _query(f: Filters, model: str | None = None, *, answers: bool = False) -> Query:
    """What the filters select: listings take the page, aggregates count every row.
    Only lists of answers can be narrowed to one client key's (`answers`)."""
    return Query(
        model=model,
        owner=f.key if answers else None,
        conversation_type=f.conversation_type,
        since=f.since,
        until=f.until,
        limit=f.limit,
        offset=f.offset,
    )


def evaluation_routes(services: AdminServices) -> list[Route]:
    @operation(CONVERSATION_TYPE, SINCE, UNTIL, LIMIT, OFFSET, KEY)
    async def evaluations(request: Request) -> Response:
        """Evaluated answers with their latest rating, newest first (one key's with `key`)."""
        f = filters(request)
        data = await services.store.responses(_query(f, answers=True))
        return json_response({"object": "list", "data": data, "limit": f.limit, "offset": f.offset})

    @operation(CONVERSATION_TYPE, SINCE, UNTIL, LIMIT, OFFSET)
    async def for_model(request: Request) -> Response:
        """One model's evaluations, ratings and answers."""
        name = request.path_params["model"]
        if name not in services.catalog.models:
            raise unknown_model(name)
        f = filters(request)
        scope = _query(f, name)
        evaluation = await services.store.evaluation_aggregates(scope)
        feedback = await services.store.feedback_aggregates(scope)
        answers = await services.store.responses(scope)
        history = await services.store.feedback(scope)
        return json_response(
            {
                "model": name,
                "evaluation": [{**a, "flag_rates": _rates(a)} for a in evaluation],
                "feedback": feedback,
                "responses": answers,
                "feedback_history": history,
            }
        )

    @operation(CONVERSATION_TYPE, SINCE, UNTIL, BUCKET)
    async def summary(request: Request) -> Response:
        """Evaluation summary, trend and improvement suggestions."""
        f = filters(request)
        scope = _query(f)
        evaluation = await services.store.evaluation_aggregates(scope)
        feedback = await services.store.feedback_aggregates(scope)
        now = time.time()
        trend = await services.store.evaluation_trend(
            replace(scope, since=f.since if f.since is not None else now - 86400),
            bucket_seconds=f.bucket or 3600,
        )
        count = sum(a["count"] for a in evaluation)
        scored = sum(a["scored"] for a in evaluation)
        flags: dict[str, int] = {}
        for a in evaluation:
            for flag, n in a["flags"].items():
                flags[flag] = flags.get(flag, 0) + n
        rated = sum(a["count"] for a in feedback)
        means: dict[str, float | None] = {}
        for dim in FEEDBACK_DIMENSIONS:
            samples = [(a[dim], a["samples"].get(dim, 0)) for a in feedback if a.get(dim)]
            n = sum(s for _, s in samples)
            means[dim] = round(sum(m * s for m, s in samples) / n, 3) if n else None
        mean_auto = (
            sum((a["auto_score"] or 0) * a["scored"] for a in evaluation) / scored
            if scored
            else None
        )
        levels = {e.model: e.level for e in services.blacklist.active()}
        simulated = frozenset(p.name for p in services.catalog.config.providers if p.type == "mock")
        for model in services.catalog.models:
            entry = services.blacklist.entry(model)
            if entry is not None and entry.level:
                levels[model] = entry.level
        return json_response(
            {
                "overall": {
                    "responses": count,
                    "evaluated": scored,
                    "mean_auto_score": round(mean_auto, 4) if mean_auto is not None else None,
                    "flag_counts": flags,
                    "flag_rates": {k: round(v / count, 4) for k, v in flags.items()}
                    if count
                    else {},
                    "rated_responses": rated,
                    "feedback_means": means,
                },
                "models": [{**a, "flag_rates": _rates(a)} for a in evaluation],
                "feedback": feedback,
                "trend": trend,
                "suggestions": suggestions(rows(services, f.conversation_type), levels, simulated),
                "generated_at": now,
            }
        )

    @operation(LIMIT)
    async def recent(request: Request) -> Response:
        """Recent answers that can be rated."""
        f = filters(request)
        records = services.index.recent(f.limit)
        services.evaluator.settle(records)
        data = [r.to_row() for r in records]
        if not data:
            data = await services.store.responses(Query(limit=f.limit))
        return json_response({"object": "list", "data": data})

    async def one(request: Request) -> Response:
        """One answer by its response id."""
        response_id = request.path_params["response_id"]
        record = await services.feedback.lookup(response_id)
        if record is None:
            raise unknown_response(response_id)
        services.evaluator.settle((record,))
        return json_response(record.to_row())

    @operation(body=FEEDBACK_BODY)
    async def feedback(request: Request) -> Response:
        """Rate an answer by its response id (as POST /v1/feedback does)."""
        payload = await read_json(request, MAX_FEEDBACK_BYTES)
        return json_response(await services.feedback.submit(payload))

    return [
        Route("/evaluations", guarded(evaluations, services.store.OUTAGES), methods=["GET"]),
        Route("/evaluations/summary", guarded(summary, services.store.OUTAGES), methods=["GET"]),
        Route(
            "/evaluations/model/{model:path}",
            guarded(for_model, services.store.OUTAGES),
            methods=["GET"],
        ),
        Route("/admin/responses", guarded(recent, services.store.OUTAGES), methods=["GET"]),
        Route(
            "/admin/responses/{response_id}", guarded(one, services.store.OUTAGES), methods=["GET"]
        ),
        Route("/admin/feedback", guarded(feedback, services.store.OUTAGES), methods=["POST"]),
    ]
