"""Improvement suggestions derived from the data: each names the model, the evidence
(numbers and window) and the change it proposes."""

from __future__ import annotations

from statistics import median
from typing import Any

__all__ = ["suggestions"]

MIN_EVALUATED = 20
MIN_FEEDBACK = 10
MIN_SAMPLES = 20
TRUNCATION_RATE = 0.10
PRIOR_GAP = 0.25  # on a 0-1 scale: prior 8/10 vs feedback 2.5/5 is a gap of 0.425
PEER_FACTOR = 2.0
FAILURE_RATE = 0.2


def suggestions(
    rows: list[dict[str, Any]],
    blacklist_levels: dict[str, int],
    simulated: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """What to change, from the rows' evidence; `simulated` names the mock providers,
    whose failures are configured, not an upstream's status or key."""
    out: list[dict[str, Any]] = []
    for row in rows:
        out += _truncation(row) + _priors(row) + _reliability(row, blacklist_levels, simulated)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_type.setdefault(row["conversation_type"], []).append(row)
    for peers in by_type.values():
        out += _outliers(peers)
    return out


def _suggest(
    row: dict[str, Any], kind: str, message: str, evidence: dict[str, Any], change: str
) -> dict[str, Any]:
    return {
        "model": row["model"],
        "conversation_type": row["conversation_type"],
        "kind": kind,
        "message": message,
        "evidence": evidence,
        "proposed_change": change,
    }


def _truncation(row: dict[str, Any]) -> list[dict[str, Any]]:
    rate = row["flag_rates"].get("truncated", 0.0)
    n = row["evaluated"]
    if n < MIN_EVALUATED or rate < TRUNCATION_RATE:
        return []
    count = round(rate * n)
    return [
        _suggest(
            row,
            "truncation",
            f"{row['model']} truncates {rate:.0%} of its answers ({count} of {n}, "
            f"finish_reason=length).",
            {"truncated": count, "evaluated": n, "rate": rate, "window": "all evaluated answers"},
            "Raise max_tokens for requests routed to this model, or move long-form requests to "
            "a model with a larger output limit.",
        )
    ]


def _priors(row: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for dim, feedback_dims in (
        ("accuracy", ("accuracy", "overall")),
        ("creativity", ("creativity",)),
    ):
        rated = [row["feedback"][d] for d in feedback_dims if d in row["feedback"]]
        count = sum(r["count"] for r in rated)
        if count < MIN_FEEDBACK:
            continue
        mean = sum(r["mean"] * r["count"] for r in rated) / count
        observed = (mean - 1) / 4
        prior = row["priors"][dim] / 10
        if abs(observed - prior) < PRIOR_GAP:
            continue
        proposed = round(observed * 10, 1)
        out.append(
            _suggest(
                row,
                "prior_mismatch",
                f"{row['model']}'s {dim} prior is {row['priors'][dim]:g}/10 but its feedback "
                f"averages {mean:.2f}/5 over {count} ratings.",
                {
                    "prior": row["priors"][dim],
                    "feedback_mean": round(mean, 3),
                    "ratings": count,
                    "window": "all feedback",
                },
                f"Set priors.{dim} to about {proposed:g} for {row['model']} in gateway.yaml.",
            )
        )
    return out


def _reliability(
    row: dict[str, Any], levels: dict[str, int], simulated: frozenset[str]
) -> list[dict[str, Any]]:
    judged = row["successes"] + row["failures"]
    level = levels.get(row["model"], 0)
    rate = row["failures"] / judged if judged else 0.0
    if level < 2 and (judged < MIN_SAMPLES or rate < FAILURE_RATE):
        return []
    return [
        _suggest(
            row,
            "unreliable",
            f"{row['model']} fails {rate:.0%} of attempts ({row['failures']} of {judged})"
            + (f" and was blacklisted {level} times in its current failure streak" if level else "")
            + (f"; last error: {row['last_error']}" if row["last_error"] else "")
            + ".",
            {
                "failures": row["failures"],
                "attempts": judged,
                "failure_rate": round(rate, 4),
                "blacklist_level": level,
                "last_error_class": row["last_error_class"],
                "window": "all recorded attempts",
            },
            (
                f"{row['model']} is simulated by the mock provider '{row['provider']}', which "
                "fails on purpose: lower its mock failure_rate in the configuration, or remove "
                "it from its routes."
            )
            if row["provider"] in simulated
            else f"Check {row['provider']}'s status and API key, or remove {row['model']} from "
            "its routes until it is stable.",
        )
    ]


def _outliers(peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    timed = [r for r in peers if r["latency_ms"]["count"] >= MIN_SAMPLES and r["latency_ms"]["p95"]]
    if len(timed) >= 2:
        for row in timed:
            others = median(r["latency_ms"]["p95"] for r in timed if r is not row)
            p95 = row["latency_ms"]["p95"]
            if others and p95 > PEER_FACTOR * others:
                out.append(
                    _suggest(
                        row,
                        "slow",
                        f"{row['model']} is {p95 / others:.1f}x slower than its peers at p95 "
                        f"({p95:.0f} ms vs a peer median of {others:.0f} ms).",
                        {
                            "p95_ms": p95,
                            "peer_median_p95_ms": others,
                            "samples": row["latency_ms"]["count"],
                            "window": "last hour",
                        },
                        f"Lower priors.speed for {row['model']} or drop it from speed-optimized "
                        "routes.",
                    )
                )
    priced = [r for r in peers if r["successes"] >= MIN_SAMPLES and r["cost"]["per_request"]]
    if len(priced) >= 2:
        for row in priced:
            others = median(r["cost"]["per_request"] for r in priced if r is not row)
            cost = row["cost"]["per_request"]
            if others and cost > PEER_FACTOR * others:
                out.append(
                    _suggest(
                        row,
                        "costly",
                        f"{row['model']} costs {cost / others:.1f}x its peers per request "
                        f"(${cost:.6f} vs a peer median of ${others:.6f}).",
                        {
                            "cost_per_request": cost,
                            "peer_median_cost_per_request": others,
                            "requests": row["successes"],
                            "window": "all recorded traffic",
                        },
                        f"Route cost-sensitive traffic away from {row['model']} (optimization: "
                        "cost) or renegotiate its pricing.",
                    )
                )
    return out
