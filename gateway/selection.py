"""Ranks the models that may serve a request, by the caller's optimization.

One scoring function serves routing and the admin rankings. Each score blends the
YAML prior with live data, the live share growing with the number of observations
(weight n / (n + prior_weight)), and is discounted by the recent success rate.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.blacklist import Blacklist
from gateway.config import ModelConfig, SelectionConfig
from gateway.errors import GatewayError
from gateway.tracker import Stats, Tracker

__all__ = ["Score", "Selector"]

_ACCURACY_DIMS = ("accuracy", "overall", "relevance", "helpfulness")
_CREATIVITY_DIMS = ("creativity",)
_AUTO_PENALTY = 0.5  # a model whose every answer is flagged keeps half its quality
# Optimism for models with little evidence, c / sqrt(1 + n) (UCB-style), so new and
# (c = selection.exploration_bonus times these weights)
# returning models get tried; it fades as their evidence grows.
_AGING = 0.995  # per attempt recorded elsewhere: evidence halves in ~140 attempts
_BONUS = {"speed": 0.3, "cost": 0.3, "accuracy": 1.0, "creativity": 1.0, "continuity": 1.0}
_PRIOR_TOKENS = (500.0, 200.0)  # assumed prompt/completion tokens before data
_PRIOR_SUCCESS = 0.95


@dataclass(slots=True)
class Score:
    model: str
    optimization: str
    total: float
    parts: dict[str, float | None] = field(default_factory=dict)
    blacklisted: bool = False


class Selector:
    def __init__(
        self,
        tracker: Tracker,
        blacklist: Blacklist,
        config: SelectionConfig,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh_seconds: float = 0.05,
    ) -> None:
        self.tracker = tracker
        self.blacklist = blacklist
        self.config = config
        self.rng = rng or random.Random(config.seed)
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self._cache: dict[tuple, tuple[int, float, list[Score]]] = {}

    # -- scoring -----------------------------------------------------------------
    def score(
        self,
        model: ModelConfig,
        ctype: str,
        optimization: str,
        peers: Sequence[ModelConfig],
        stream: bool = False,
        context: tuple[float | None, float] | None = None,
    ) -> Score:
        """The routing score of one model, with the parts that make it up."""
        if context is None:
            context = self._context(peers, ctype, optimization, stream)
        total, parts = self._score(model, ctype, optimization, stream, context, explain=True)
        return Score(
            model.name, optimization, total, parts, self.blacklist.is_blacklisted(model.name)
        )

    def _score(
        self,
        model: ModelConfig,
        ctype: str,
        optimization: str,
        stream: bool,
        context: tuple[float | None, float],
        explain: bool = False,
    ) -> tuple[float, dict[str, float | None]]:
        """One implementation for routing and for the admin rankings; `explain` only adds
        the parts (building them was a third of the cost of ranking 100 models)."""
        stats = self.tracker.stats(model.name, ctype)
        reference, evidence_total = context
        k = self.config.prior_weight
        success = _success(stats)
        weight: float | None
        if optimization == "speed":
            prior = model.priors.speed / 10
            latency = _latency(stats, stream)
            # Relative to the peers' mean, like cost: the mean scores 0.5, as does a
            # neutral prior, so measured and unmeasured models stay comparable.
            live = None if latency is None else reference / (reference + latency)
            n = stats.successes if stats is not None else 0
            quality, weight = _blend(prior, live, n, k)
            if explain:
                parts = {
                    "prior": prior,
                    "latency_ms": latency,
                    "reference_ms": reference,
                    "live": live,
                }
        elif optimization == "cost":
            cost = self.expected_cost(model, stats)
            # reference / (reference + cost): free scores 1, the peers' mean 0.5; smooth,
            # so one free model does not flatten everyone else to zero.
            quality = 1.0 if cost <= 0 else reference / (reference + cost)
            n = stats.usage_count if stats is not None else 0
            weight = None
            if explain:
                parts = {"expected_cost": cost, "reference_cost": reference}
        else:
            dims, prior_value = (
                (_CREATIVITY_DIMS, model.priors.creativity)
                if optimization == "creativity"
                else (_ACCURACY_DIMS, model.priors.accuracy)
            )
            prior = prior_value / 10
            live, n = _feedback(stats, dims)
            quality, weight = _blend(prior, live, n, k)
            auto = stats.auto_score if stats is not None else None
            if auto is not None:  # automatic checks only ever discount: clean is the norm
                quality *= 1 - _AUTO_PENALTY * (1 - auto)
            if explain:
                parts = {"prior": prior, "live": live, "evidence": n, "auto_score": auto}
        # UCB-style optimism: c * sqrt(ln(1 + N) / (1 + n)), n this model's evidence and N
        # its peers' together, so a model the others have outgrown in data is tried
        # again now and then (it may have improved) and new or returning models get data.
        # Ratings are sparse, so for quality the evidence is requests served.
        c = self.config.exploration_bonus * _BONUS[optimization]
        n = self._aged(stats, optimization)
        bonus = c * math.sqrt(math.log1p(evidence_total) / (1 + n))
        total = (quality + bonus) * success
        if not explain:
            return total, {}
        parts.update(
            {
                "weight_live": weight,
                "success_rate": success,
                "value": quality,
                "exploration_bonus": bonus,
            }
        )
        return total, parts

    def _context(
        self, models: Sequence[ModelConfig], ctype: str, optimization: str, stream: bool
    ) -> tuple[float | None, float]:
        """What every score of one ranking shares: the peers' reference cost or latency,
        and their evidence together (for the exploration bonus)."""
        if optimization == "cost":
            reference: float | None = self.reference_cost(models, ctype)
        elif optimization == "speed":
            reference = self.reference_latency(models, ctype, stream)
        else:
            reference = None
        total = sum(self._aged(self.tracker.stats(m.name, ctype), optimization) for m in models)
        return reference, total

    def _aged(self, stats: Stats | None, optimization: str) -> float:
        """A model's evidence, fading while the others serve and it does not (discounted
        UCB): what was true of it hundreds of requests ago may no longer be."""
        n = _evidence(stats, optimization)
        if not n or stats is None:
            return n
        return n * _AGING ** (self.tracker.seq - stats.last_seq)

    def reference_latency(self, models: Sequence[ModelConfig], ctype: str, stream: bool) -> float:
        """The mean observed latency of `models` that have data (1 s if none has)."""
        seen = [
            latency
            for m in models
            if (latency := _latency(self.tracker.stats(m.name, ctype), stream)) is not None
        ]
        return sum(seen) / len(seen) if seen else 1000.0

    def expected_cost(self, model: ModelConfig, stats: Stats | None) -> float:
        p = model.pricing
        prompt, completion = _PRIOR_TOKENS
        if stats is not None and stats.usage_count:
            w = stats.usage_count / (stats.usage_count + self.config.prior_weight)
            prompt = w * stats.prompt_tokens / stats.usage_count + (1 - w) * prompt
            completion = w * stats.completion_tokens / stats.usage_count + (1 - w) * completion
        token_cost = (prompt * p.input_per_million + completion * p.output_per_million) / 1e6
        return token_cost + p.per_image + p.per_second

    def rankings(
        self, models: Sequence[ModelConfig], ctype: str, optimization: str, stream: bool = False
    ) -> list[Score]:
        context = self._context(models, ctype, optimization, stream)
        scores = [self.score(m, ctype, optimization, models, stream, context) for m in models]
        scores.sort(key=lambda s: (s.blacklisted, -s.total))  # benched models cannot serve
        return scores

    def reference_cost(self, models: Sequence[ModelConfig], ctype: str) -> float:
        """The mean expected cost of the paid models among `models` (1.0 if none is paid)."""
        costs = [self.expected_cost(m, self.tracker.stats(m.name, ctype)) for m in models]
        paid = [c for c in costs if c > 0]
        return sum(paid) / len(paid) if paid else 1.0

    # -- routing -------------------------------------------------------------------
    def rank(self, job) -> list[ModelConfig]:  # job: gateway.dispatch.Job
        target = job.target
        optimization = job.optimization or "accuracy"
        candidates = target.candidates
        blacklist = self.blacklist
        healthy = (
            [m for m in candidates if not blacklist.is_blacklisted(m.name)]
            if blacklist.any_benched()
            else candidates
        )
        if not healthy:
            return self._all_blacklisted(candidates)
        first: list[ModelConfig] = []  # models that go ahead of the ranking
        if target.route is None and (healthy is candidates or candidates[0] in healthy):
            first.append(candidates[0])  # a concrete model is tried first
        if optimization == "continuity":
            optimization = "accuracy"
            last = self.tracker.last_model(job.conversation_id) if job.conversation_id else None
            if last is not None and not any(m.name == last for m in first):
                first += [m for m in healthy if m.name == last]
        if len(healthy) - len(first) < 2:
            ahead = {m.name for m in first}
            return first + [m for m in healthy if m.name not in ahead]
        ordered = self._ordered(
            target.name, healthy, job.ctype, optimization, job.body.get("stream") is True
        )
        if self.config.exploration_rate and self.rng.random() < self.config.exploration_rate:
            ordered = self._explore(ordered, job.ctype, optimization)
        if not first:
            return ordered
        ahead = {m.name for m in first}
        return first + [m for m in ordered if m.name not in ahead]

    def _ordered(
        self,
        key: str,
        models: Sequence[ModelConfig],
        ctype: str,
        optimization: str,
        stream: bool,
    ) -> list[ModelConfig]:
        """`models` best first, reused while the tracker has not changed (or for
        `refresh_seconds` while it keeps changing under load)."""
        cache_key = (key, len(models), ctype, optimization, stream)
        now = self.clock()
        cached = self._cache.get(cache_key)
        if cached is not None:
            version, at, members, ordered = cached
            fresh = version == self.tracker.version or now - at < self.refresh_seconds
            if fresh and (members is models or _same(members, models)):
                return ordered
        context = self._context(models, ctype, optimization, stream)
        totals = {m.name: self._score(m, ctype, optimization, stream, context)[0] for m in models}
        ordered = sorted(models, key=lambda m: totals[m.name], reverse=True)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[cache_key] = (self.tracker.version, now, models, ordered)
        return ordered

    def _explore(
        self, ordered: list[ModelConfig], ctype: str, optimization: str
    ) -> list[ModelConfig]:
        """Thompson-style: sample each score with noise that shrinks as data grows."""
        context = self._context(ordered, ctype, optimization, False)

        def sample(model: ModelConfig) -> float:
            stats = self.tracker.stats(model.name, ctype)
            n = stats.requests if stats else 0
            total = self._score(model, ctype, optimization, False, context)[0]
            return total + self.rng.gauss(0.0, 0.3 / math.sqrt(1 + n))

        return sorted(ordered, key=sample, reverse=True)

    def _all_blacklisted(self, candidates: Sequence[ModelConfig]) -> list[ModelConfig]:
        returns = sorted(candidates, key=lambda m: self.blacklist.until(m.name) or 0.0)
        if self.config.when_all_blacklisted == "probe":
            return returns[:1]
        soonest = self.blacklist.until(returns[0].name) or self.blacklist.clock()
        wait = max(1, math.ceil(soonest - self.blacklist.clock()))
        names = ", ".join(m.name for m in candidates)
        raise GatewayError(
            503,
            f"Every model that can serve this request is blacklisted after repeated "
            f"failures ({names}); '{returns[0].name}' returns in {wait} s.",
            type="server_error",
            code="all_models_blacklisted",
            headers={"retry-after": str(wait)},
        )


def _evidence(stats: Stats | None, optimization: str) -> float:
    """How much this model has been observed, for the exploration bonus."""
    if stats is None:
        return 0.0
    if optimization == "speed":
        return stats.successes
    if optimization == "cost":
        return stats.usage_count
    return stats.requests


def _same(a: Sequence[ModelConfig], b: Sequence[ModelConfig]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _success(stats: Stats | None) -> float:
    if stats is None:
        return _PRIOR_SUCCESS
    return (stats.recent_ok + 2 * _PRIOR_SUCCESS) / (stats.recent_n + 2)


def _blend(prior: float, live: float | None, n: float, k: float) -> tuple[float, float]:
    if live is None or n <= 0:
        return prior, 0.0
    weight = n / (n + k)
    return weight * live + (1 - weight) * prior, weight


def _feedback(stats: Stats | None, dims: Sequence[str]) -> tuple[float | None, float]:
    """Human ratings (1-5 mapped to 0-1), pooled over the dimensions that apply: the
    value from recent ratings (older ones fade), the evidence from all of them."""
    if stats is None:
        return None, 0.0
    total = weight = n = 0.0
    for dim in dims:
        pair = stats.feedback.get(dim)
        if pair and pair[1]:
            n += pair[1]
            recent = stats.feedback_recent.get(dim) or pair
            if recent[1] > 0:
                total += (recent[0] - recent[1]) / 4
                weight += recent[1]
    return (total / weight if weight else None), n


def _latency(stats: Stats | None, stream: bool) -> float | None:
    if stats is None:
        return None
    return stats.ttft_ewma if stream and stats.ttft_ewma else stats.latency_ewma
