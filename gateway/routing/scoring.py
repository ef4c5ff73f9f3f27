"""The routing score of one model: the formula, in one place.

A score blends the YAML prior with live data, the live share growing with the number
of observations (weight n / (n + prior_weight)), adds UCB-style optimism for models
with little (aged) evidence, and is discounted by the recent success rate.

Quality (accuracy, creativity) is a posterior instead: each model's expected rating
given the prior and the ratings it rests on (`Posterior`, `belief()`), with a spread
that matches that evidence, which selection samples from (Thompson sampling) so that a
model that fell behind by bad luck keeps being re-tested in proportion to the chance
that it is in fact the best.

What a score takes from the model's own stats and config (`Own`) is split from what
it shares with its peers (the reference cost or latency, their evidence together), so
that a ranking can keep the former per model and recompute it only when that model's
stats change (gateway.routing.ranking_table), while the admin rankings explain every part.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import NamedTuple

from gateway.core.config import ModelConfig
from gateway.routing.tracker import AGING, RATING_AGING, Stats, aged, rated

__all__ = [
    "AGING",
    "BONUS",
    "NORMALS",
    "PRIOR_SUCCESS",
    "Own",
    "Posterior",
    "aged",
    "belief",
    "details",
    "evidence",
    "expected_cost",
    "latency",
    "level",
    "own",
    "total",
    "value",
]


# Standard normal draws for Thompson sampling: `NORMALS[int(random() * len(NORMALS))]`,
# the inverse CDF at 4,096 evenly spaced quantiles, is one uniform number and a lookup
# (~0.12 µs) where random.gauss is Python code (~0.42 µs), for every contender of every
# request. Its tails end at ±3.67 standard deviations (a chance of 1 in 4,096 of a draw
# beyond, both tails together); its variance is 0.9997.
NORMALS: tuple[float, ...] = tuple(
    statistics.NormalDist().inv_cdf((i + 0.5) / 4096) for i in range(4096)
)

AUTO_PENALTY = 0.5  # a model whose every answer is flagged keeps half its quality
# Optimism for models with little evidence (c = selection.exploration_bonus times these
# weights), so new and returning models get tried; it fades as their evidence grows.
# Quality explores by sampling its posterior (selection), not by a bonus.
BONUS = {"speed": 0.3, "cost": 0.3, "accuracy": 0.0, "creativity": 0.0, "continuity": 0.0}
# Evidence counts at most this many observations, so how long a model waits to be tried
# again (until its aged evidence falls to where the bonus lifts it) stays bounded: aged
# from its all-time count, a model that once served 10,000 requests waited ~1,300
# attempts, too long to notice that it got better.
EVIDENCE_CAP = 100
# Ratings are sparse: the prior counts as prior_weight * this many of them.
RATED_PRIOR_SHARE = 0.25
# The prior on a model's quality: its configured value, give or take the spread of a
# rating uniform on the scale (variance 1/12 on 0-1) over prior_weight * RATED_PRIOR_SHARE.
VARIANCE_PRIOR = 1 / 12
# How many ratings the assumed spread of one rating counts as (see belief()); the ratings
# replace it as they come: 0/1 ratings come out near p(1 - p), judge scores that agree
# with each other narrower.
VARIANCE_PRIOR_WEIGHT = 2.0
PRIOR_TOKENS = (500.0, 200.0)  # assumed prompt/completion tokens before data
PRIOR_SUCCESS = 0.95


class Posterior(NamedTuple):
    """What a model's expected quality rests on: the prior and its ratings (0-1), the
    latter as of the tracker's attempt count `seq` (they fade by RATING_AGING per attempt
    after it)."""

    prior: float  # the prior mean, 0-1
    strength: float  # how many ratings the prior counts as
    weight: float  # the ratings' weight (one each, faded)
    total: float  # their weighted sum
    squares: float  # and of their squares
    seq: int
    left: float = 1.0  # what is left of the prior (it fades like the ratings)
    scale: float = 1.0  # what automatic checks leave of it (1: clean)


def level(posteriors: Sequence[Posterior | None], seq: int) -> float:
    """Where the models of one ranking stand together, as a shift of their priors: the
    pooled ratings of all of them (each model's prior counting as its `strength` ratings)
    less the mean of the priors. A YAML prior says how a model compares with the others
    more surely than where the rating scale puts them all: priors of 5/10 say nothing of
    whether answers get 2s or 5s, so a model with few ratings is judged against what its
    peers' ratings show (empirical Bayes), not against the middle of the scale."""
    known = [p for p in posteriors if p is not None]
    if not known:
        return 0.0
    weight = total = 0.0
    for p in known:
        f = RATING_AGING ** (seq - p.seq) if seq > p.seq else 1.0
        weight += p.strength + f * p.weight
        total += p.strength * p.prior + f * p.total
    return total / weight - sum(p.prior for p in known) / len(known)


def belief(p: Posterior, seq: int, shift: float = 0.0) -> tuple[float, float]:
    """The expected quality at attempt count `seq` and its standard error; `shift`
    moves the prior (level()).

    Normal: the prior counts as `strength` ratings of VARIANCE_PRIOR (so before any
    rating the quality may be anywhere near its prior, however alike ratings turn out
    to be); one rating's variance is estimated from the ratings, starting from
    VARIANCE_PRIOR; the mean weighs prior and ratings by their precisions.

    Quality may drift, so evidence fades: ratings and prior alike, by RATING_AGING per
    attempt from the first rating on. The mean stays where the evidence put it while the
    standard error grows, up to that of a rating anywhere on the scale, so a model that
    is not rated for a while is re-tested, and a new rating weighs more against old ones."""
    f = RATING_AGING ** (seq - p.seq) if seq > p.seq else 1.0
    w, s1 = p.weight, p.total  # as of p.seq: prior and ratings fade alike, the mean stays
    mu = min(max(p.prior + shift, 0.0), 1.0)
    prior = p.left * p.strength / VARIANCE_PRIOR  # the prior's precision, as of p.seq
    # One rating's variance: before the ratings say how spread they are, the widest a
    # rating of this mean can have (all at the ends of the scale, m(1 - m)), as if seen
    # in VARIANCE_PRIOR_WEIGHT ratings; so that a few ratings that happen to agree (two
    # wrong answers of a model that is right 86 % of the time) do not pass for certainty.
    m = (prior * mu + s1) / (prior + w)
    spread = VARIANCE_PRIOR_WEIGHT * max(m * (1.0 - m), 1e-4)
    if w > 1e-9:
        spread += f * max(p.squares - s1 * s1 / w, 0.0)
    variance = spread / (VARIANCE_PRIOR_WEIGHT + f * w)
    mean = (prior * mu + s1 / variance) / (prior + w / variance)
    precision = f * (prior + w / variance)
    spread_of_mean = math.sqrt(VARIANCE_PRIOR if precision * VARIANCE_PRIOR <= 1 else 1 / precision)
    return mean * p.scale, spread_of_mean * p.scale


class Own(NamedTuple):
    """What a score takes from the model's own stats and config alone."""

    base: float  # quality: the value; speed: (1 - weight) * prior; cost: the expected cost
    weight: float  # the live data's share of the value (0.0 while there is none)
    latency: float | None  # speed: the observed latency (time to first token for streams)
    evidence: float  # observations, for the exploration bonus, before aging
    last_seq: int  # when the model last served, in the tracker's attempt count
    success: float  # the recent success rate, smoothed towards PRIOR_SUCCESS
    requests: int
    posterior: Posterior | None = None  # quality: what its value rests on


def own(model: ModelConfig, stats: Stats | None, optimization: str, stream: bool, k: float) -> Own:
    """The per-model half of a score; `k` is selection.prior_weight."""
    weight = 0.0
    lat = None
    post = None
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
        post = posterior(model, stats, optimization, k)
        base = belief(post, post.seq)[0]
        weight = post.weight / (post.weight + post.strength)
    if stats is None:
        return Own(base, weight, lat, 0.0, 0, PRIOR_SUCCESS, 0, post)
    return Own(
        base,
        weight,
        lat,
        evidence(stats, optimization),
        stats.last_seq,
        (stats.recent_ok + 2 * PRIOR_SUCCESS) / (stats.recent_n + 2),
        stats.requests,
        post,
    )


def posterior(model: ModelConfig, stats: Stats | None, optimization: str, k: float) -> Posterior:
    """A model's quality posterior for `optimization` (accuracy, creativity, continuity);
    `k` is selection.prior_weight."""
    group = "creativity" if optimization == "creativity" else "accuracy"
    prior = (model.priors.creativity if group == "creativity" else model.priors.accuracy) / 10
    w, s1, s2, seq, left = _feedback(stats, group)
    auto = stats.auto_score if stats is not None else None
    # Automatic checks only ever discount: clean is the norm.
    scale = 1.0 if auto is None else 1 - AUTO_PENALTY * (1 - auto)
    return Posterior(prior, k * RATED_PRIOR_SHARE, w, s1, s2, seq, left, scale)


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
    if parts.posterior is not None:  # quality: the posterior mean, its ratings aged to now
        quality = belief(parts.posterior, seq, reference or 0.0)[0]
    else:
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
    post = posterior(model, stats, optimization, 1.0)
    return {
        "prior": post.prior,
        "live": post.total / post.weight if post.weight > 1e-9 else None,
        "evidence": post.weight,
        "auto_score": stats.auto_score if stats is not None else None,
    }


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


def _feedback(stats: Stats | None, group: str) -> tuple[float, float, float, int, float]:
    """Human ratings of one quality group (one observation per rating), as one tally
    [weight, sum, sum of squares, seq, prior left] aged to the latest rating's count.

    No client key counts for more than the typical key: each key's weight is capped at
    the median over the keys that rated, its ratings keeping their mean and spread. One
    key (or none) is unchanged; a key posting many ratings weighs as much as a key
    posting the usual number, so five keys rating one way outweigh one key rating the
    other way as often as it likes.
    """
    if stats is None:
        return 0.0, 0.0, 0.0, 0, 1.0
    tallies = [g[group] for g in stats.feedback_keys.values() if group in g]
    if not tallies:
        return 0.0, 0.0, 0.0, 0, 1.0
    seq = int(max(t[3] for t in tallies))
    if len(tallies) == 1:
        w, s1, s2, _, left = rated(list(tallies[0]), seq)
        return w, s1, s2, seq, left
    aged_tallies = [rated(list(t), seq) for t in tallies]
    left = max(t[4] for t in aged_tallies)
    aged_tallies = [t for t in aged_tallies if t[0] > 0]
    if not aged_tallies:
        return 0.0, 0.0, 0.0, seq, left
    cap = statistics.median(t[0] for t in aged_tallies)
    w = s1 = s2 = 0.0
    for weight, total, squares, _, _ in aged_tallies:
        share = min(weight, cap) / weight
        w += weight * share
        s1 += total * share
        s2 += squares * share
    return w, s1, s2, seq, left
