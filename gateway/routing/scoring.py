"""The routing score of one model: the formula, in one place.

A score blends the YAML prior with live data, the live share growing with the number
of observations (weight n / (n + prior_weight)), adds UCB-style optimism for models
with little (aged) evidence (and, for quality, with few ratings), and is discounted by
the recent success rate.

What a score takes from the model's own stats and config (`Own`) is split from what
it shares with its peers (the reference cost or latency, their evidence together), so
that a ranking can keep the former per model and recompute it only when that model's
stats change (gateway.routing.ranking_table), while the admin rankings explain every part.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from gateway.core.config import ModelConfig
from gateway.routing.tracker import AGING, Stats, aged

__all__ = [
    "AGING",
    "BONUS",
    "PRIOR_SUCCESS",
    "RATING_OPTIMISM",
    "Own",
    "aged",
    "details",
    "evidence",
    "expected_cost",
    "latency",
    "own",
    "rating_optimism",
    "total",
    "value",
]

ACCURACY_DIMS = ("accuracy", "overall", "relevance", "helpfulness")
CREATIVITY_DIMS = ("creativity",)
AUTO_PENALTY = 0.5  # a model whose every answer is flagged keeps half its quality
# Optimism for models with little evidence (c = selection.exploration_bonus times these
# weights), so new and returning models get tried; it fades as their evidence grows.
# Quality's evidence fades per request, so its bonus tries models in a steady trickle
# that every request pays for: a lower weight than its bursts took (1.0, see evidence()).
BONUS = {"speed": 0.3, "cost": 0.3, "accuracy": 0.45, "creativity": 0.45, "continuity": 0.45}
# Evidence counts at most this many observations, so how long a model waits to be tried
# again (until its aged evidence falls to where the bonus lifts it) stays bounded: aged
# from its all-time count, a model that once served 10,000 requests waited ~1,300
# attempts, too long to notice that it got better.
EVIDENCE_CAP = 100
# Ratings are sparse: the prior counts as prior_weight * this many of them.
RATED_PRIOR_SHARE = 0.25
# Optimism while a model has few ratings (this / (1 + ratings), spent once per model): the
# bonus tries models in proportion to how little they have served, and a runner-up served
# a few times but never rated sat at its prior (0.5) under a rated best (0.85), a gap the
# bonus cannot lift, so it was never tried again (bench/README.md, "Over 200 seeds").
RATING_OPTIMISM = 0.3
PRIOR_TOKENS = (500.0, 200.0)  # assumed prompt/completion tokens before data
PRIOR_SUCCESS = 0.95


class Own(NamedTuple):
    """What a score takes from the model's own stats and config alone."""

    base: float  # quality: the value; speed: (1 - weight) * prior; cost: the expected cost
    weight: float  # the live data's share of the value (0.0 while there is none)
    latency: float | None  # speed: the observed latency (time to first token for streams)
    evidence: float  # observations, for the exploration bonus, before aging
    last_seq: int  # when the model last served, in the tracker's attempt count
    success: float  # the recent success rate, smoothed towards PRIOR_SUCCESS
    requests: int


def own(model: ModelConfig, stats: Stats | None, optimization: str, stream: bool, k: float) -> Own:
    """The per-model half of a score; `k` is selection.prior_weight."""
    weight = 0.0
    lat = None
    if optimization == "speed":
        prior = model.priors.speed / 10
        lat = latency(stats, stream)
        served = stats.successes if stats is not None else 0
        base = prior
        if lat is not None and served > 0:
            weight = served / (served + k)
            base = (1 - weight) * prior
    elif optimization == "cost":
        base = expected_cost(model, stats, k)
    else:
        prior, live, n, auto = _quality_inputs(model, stats, optimization)
        base = prior
        if live is not None and n > 0:
            weight = n / (n + k * RATED_PRIOR_SHARE)
            base = weight * live + (1 - weight) * prior
        base += rating_optimism(n)
        if auto is not None:  # automatic checks only ever discount: clean is the norm
            base *= 1 - AUTO_PENALTY * (1 - auto)
    if stats is None:
        return Own(base, weight, lat, 0.0, 0, PRIOR_SUCCESS, 0)
    return Own(
        base,
        weight,
        lat,
        evidence(stats, optimization),
        stats.last_seq,
        (stats.recent_ok + 2 * PRIOR_SUCCESS) / (stats.recent_n + 2),
        stats.requests,
    )


def value(parts: Own, optimization: str, reference: float | None) -> float:
    """The quality half of a score, given the peers' reference cost or latency."""
    if optimization == "cost":
        cost = parts.base
        # reference / (reference + cost): free scores 1, the peers' mean 0.5; smooth,
        # so one free model does not flatten everyone else to zero.
        return 1.0 if cost <= 0 else reference / (reference + cost)  # type: ignore[operator]
    if optimization == "speed" and parts.latency is not None:
        # Relative to the peers' mean, like cost: the mean scores 0.5, as does a
        # neutral prior, so measured and unmeasured models stay comparable.
        live = reference / (reference + parts.latency)  # type: ignore[operator]
        return parts.weight * live + parts.base
    return parts.base


def total(
    parts: Own,
    optimization: str,
    reference: float | None,
    evidence_total: float,
    seq: int,
    c: float,
) -> tuple[float, float, float]:
    """The score with its value and exploration bonus. UCB-style optimism:
    c * sqrt(ln(1 + N) / (1 + n)), n this model's aged evidence and N its peers'
    together, so a model the others have outgrown in data is tried again now and then
    (it may have improved) and new or returning models get data."""
    quality = value(parts, optimization, reference)
    n = aged(parts.evidence, parts.last_seq, seq)
    bonus = c * math.sqrt(math.log1p(evidence_total) / (1 + n))
    return (quality + bonus) * parts.success, quality, bonus


def details(
    model: ModelConfig, stats: Stats | None, optimization: str, stream: bool
) -> dict[str, float | None]:
    """The inputs of the per-model half, for the admin rankings."""
    if optimization == "speed":
        return {"prior": model.priors.speed / 10, "latency_ms": latency(stats, stream)}
    if optimization == "cost":
        return {}
    prior, live, n, auto = _quality_inputs(model, stats, optimization)
    return {
        "prior": prior,
        "live": live,
        "evidence": n,
        "rating_optimism": rating_optimism(n),
        "auto_score": auto,
    }


def rating_optimism(ratings: float) -> float:
    """What a quality value adds while the model has few ratings."""
    return RATING_OPTIMISM / (1 + ratings)


def expected_cost(model: ModelConfig, stats: Stats | None, k: float) -> float:
    p = model.pricing
    prompt, completion = PRIOR_TOKENS
    if stats is not None and stats.usage_count:
        n = stats.usage_count
        w = n / (n + k)
        # Recent answers, not all of them: what a model costs now is what counts.
        # (Set whenever usage_count is: by record(), or by Stats.from_dict.)
        prompt = w * (stats.prompt_ewma or 0.0) + (1 - w) * prompt
        completion = w * (stats.completion_ewma or 0.0) + (1 - w) * completion
    token_cost = (prompt * p.input_per_million + completion * p.output_per_million) / 1e6
    return token_cost + p.per_image + p.per_second


def evidence(stats: Stats | None, optimization: str) -> float:
    """How much this model has been observed, for the exploration bonus (aged further by
    the attempts since it last served, see aged()).

    Speed and cost learn from every answer: their evidence is all they have seen, so a
    model the bonus lifts serves a short burst that tells all there is to tell. Quality
    learns from ratings, which are sparse: a burst of a few requests brought one rating
    or none, and a runner-up that had improved could wait hundreds of attempts for the
    next. So quality counts recently served requests (each fading by AGING): a model is
    tried again as soon as it has served little lately, in a steady trickle whose ratings
    (aged as well) tell within a few hundred requests that it changed."""
    if stats is None:
        return 0.0
    if optimization == "speed":
        return min(stats.successes, EVIDENCE_CAP)
    if optimization == "cost":
        return min(stats.usage_count, EVIDENCE_CAP)
    return min(stats.served_recent, EVIDENCE_CAP)


def latency(stats: Stats | None, stream: bool) -> float | None:
    if stats is None:
        return None
    return stats.ttft_ewma if stream and stats.ttft_ewma else stats.latency_ewma


def _quality_inputs(
    model: ModelConfig, stats: Stats | None, optimization: str
) -> tuple[float, float | None, float, float | None]:
    """The prior, the rated value, the ratings behind it and the automatic score."""
    dims: Sequence[str]
    if optimization == "creativity":
        dims, prior = CREATIVITY_DIMS, model.priors.creativity
    else:
        dims, prior = ACCURACY_DIMS, model.priors.accuracy
    live, n = _feedback(stats, dims)
    return prior / 10, live, n, (stats.auto_score if stats is not None else None)


def _feedback(stats: Stats | None, dims: Sequence[str]) -> tuple[float | None, float]:
    """Human ratings (1-5 mapped to 0-1), pooled over the dimensions that apply: the
    value from recent ratings (older ones fade), the evidence from all of them.

    No client key counts for more than the typical key: each key's recent weight and its
    number of ratings are capped at the median over the keys that rated, and the value is
    the mean of the keys' own means under those weights. One key (or none) is unchanged;
    a key posting many ratings weighs as much as a key posting the usual number, so five
    keys rating one way outweigh one key rating the other way as often as it likes.
    """
    if stats is None:
        return None, 0.0
    per_key = [
        _tally(feedback, fading, dims) for feedback, fading in stats.feedback_keys.values()
    ] or [_tally(stats.feedback, stats.feedback_recent, dims)]
    per_key = [t for t in per_key if t[2] > 0]
    if not per_key:
        return None, 0.0
    if len(per_key) == 1:
        total, weight, n = per_key[0]
        return (total / weight if weight else None), n
    weight_cap = statistics.median(t[1] for t in per_key)
    count_cap = statistics.median(t[2] for t in per_key)
    value = weights = evidence = 0.0
    for total, weight, n in per_key:
        evidence += min(n, count_cap)
        if weight > 0:
            share = min(weight, weight_cap)
            value += total / weight * share
            weights += share
    return (value / weights if weights else None), evidence


def _tally(
    feedback: Mapping[str, list[float]], fading: Mapping[str, list[float]], dims: Sequence[str]
) -> tuple[float, float, float]:
    """One key's ratings on `dims`: recent value sum (0-1 scale), recent weight, count."""
    total = weight = n = 0.0
    for dim in dims:
        pair = feedback.get(dim)
        if pair and pair[1]:
            n += pair[1]
            recent = fading.get(dim) or pair
            if recent[1] > 0:
                total += (recent[0] - recent[1]) / 4
                weight += recent[1]
    return total, weight, n
