"""Turns the tracker's live stats into the JSON the admin API and dashboard show."""

from __future__ import annotations

from typing import Any

from admin_ui.services import AdminServices
from gateway.routing.tracker import FEEDBACK_DIMENSIONS, Stats

__all__ = ["model_metrics", "rows"]


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _percentiles(hist: Any) -> dict[str, float | None]:
    snap = hist.snapshot()
    return {
        "mean": _r(snap.mean),
        "p50": _r(snap.quantile(0.5)),
        "p95": _r(snap.quantile(0.95)),
        "p99": _r(snap.quantile(0.99)),
        "count": snap.count,
    }


def model_metrics(services: AdminServices, model: str, ctype: str) -> dict[str, Any]:
    config = services.catalog.models[model]
    stats = services.tracker.stats(model, ctype) or Stats()
    entry = services.blacklist.entry(model)
    until = services.blacklist.until(model)
    judged = stats.auto_score_count
    return {
        "model": model,
        "provider": config.provider,
        "conversation_type": ctype,
        "requests": stats.requests,
        "successes": stats.successes,
        "failures": stats.failures,
        "client_errors": stats.client_errors,
        "fallbacks": stats.fallbacks,
        "success_rate": _r(stats.success_rate, 4),
        "recent_success_rate": _r(stats.recent_success_rate, 4),
        "latency_ms": _percentiles(stats.latency),
        "ttft_ms": _percentiles(stats.ttft),
        "mean_prompt_tokens": _r(stats.mean_prompt_tokens, 1),
        "mean_completion_tokens": _r(stats.mean_completion_tokens, 1),
        "cost": {
            "total": _r(stats.cost, 6),
            "per_request": _r(stats.cost / stats.successes, 8) if stats.successes else None,
        },
        "feedback": {
            dim: {"mean": _r(stats.feedback_mean(dim)), "count": int(stats.feedback[dim][1])}
            for dim in FEEDBACK_DIMENSIONS
            if dim in stats.feedback and stats.feedback[dim][1]
        },
        "auto_score": _r(stats.auto_score, 4),
        "evaluated": judged,
        "flag_rates": {f: _r(n / judged, 4) for f, n in stats.flags.items()} if judged else {},
        "consecutive_failures": entry.consecutive_failures if entry else 0,
        "blacklisted": until is not None,
        "blacklisted_until": until,
        "last_error": stats.last_error,
        "last_error_class": stats.last_error_class,
        "last_error_at": stats.last_error_at,
        "last_success_at": stats.last_success_at,
        "priors": config.priors.model_dump(),
        "pricing": config.pricing.model_dump(),
    }


def rows(
    services: AdminServices, ctype: str | None = None, model: str | None = None
) -> list[dict[str, Any]]:
    """One row per enabled model and conversation type it serves, data or not."""
    out = []
    for config in services.catalog.config.models:
        if config.name not in services.catalog.enabled or (model and config.name != model):
            continue
        for t in config.conversation_types:
            if ctype is None or t == ctype:
                out.append(model_metrics(services, config.name, t))
    return out
