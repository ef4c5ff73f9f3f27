"""Ranks the models that may serve a request, by the caller's optimization.

One scoring formula (gateway.routing.scoring) serves routing and the admin rankings. Routing
runs on every request, so it keeps each ranking's per-model parts in a RankingTable
(refreshed only for the models whose stats changed) and reuses the resulting order
while the tracker has not changed, or for `refresh_seconds` while it keeps changing.

Quality is learned from sparse ratings, so each request draws every contending model's
quality from its posterior and the highest draw goes first (Thompson sampling): a model
is tried as often as it may be the best, and one that fell behind by bad luck is
re-tested until its ratings say where it stands. With a quality tolerance, `cost` serves
the cheapest model whose drawn quality is within that fraction of the best draw.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from gateway.core.config import ModelConfig, SelectionConfig
from gateway.core.errors import AllModelsBlacklisted
from gateway.routing.blacklist import Blacklist
from gateway.routing.dispatch import Job
from gateway.routing.ranking_table import RankingTable
from gateway.routing.scoring import (
    AGING,
    BONUS,
    NORMALS,
    aged,
    belief,
    details,
    evidence,
    expected_cost,
    latency,
    level,
    own,
    total,
)
from gateway.routing.tracker import Stats, Tracker

if TYPE_CHECKING:  # numpy is loaded only when a route routes per prompt
    from gateway.routing.prompt_router import PromptRouter
from providers.base import Endpoint

__all__ = ["Score", "Selector"]

_MODEL = attrgetter("model")
_TEXT = frozenset((Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES, Endpoint.MESSAGES))
_RANKINGS = 256  # rankings kept, oldest out first; each table ~32 KB for 100 models
_QUALITY = frozenset({"accuracy", "creativity"})
# A model whose expected quality is this many standard errors (its own and the best's)
# below the best is not drawn: its chance of being the best is below 1 in 30,000.
_CONTENDING = 4.0
# At most this many contenders are drawn from per request (those with the highest upper
# bound, mean + 2 standard errors): a route of 100 models that ratings cannot yet tell
# apart would otherwise cost 100 draws per request.
_DRAWN = 8


@dataclass(slots=True)
class Score:
    model: str
    optimization: str
    total: float
    parts: dict[str, float | None] = field(default_factory=dict)
    blacklisted: bool = False


@dataclass(slots=True)
class _Ranked:
    """A cached ranking: its table, and the order it gave at tracker `version`."""

    table: RankingTable
    version: int = -1
    at: float = -math.inf
    ordered: list[ModelConfig] = field(default_factory=list)
    # Quality: each model's expected quality and standard error (in the table's order),
    # and the models that may be the best, with theirs (drawn from per request).
    beliefs: list[tuple[float, float]] = field(default_factory=list)
    contenders: list[tuple[ModelConfig, float, float]] = field(default_factory=list)


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
        prompts: PromptRouter | None = None,
    ) -> None:
        self.tracker = tracker
        self.prompts = prompts  # the per-prompt learners of the routes that have them
        self.blacklist = blacklist
        self.config = config
        self.rng = rng or random.Random(config.seed)
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self._cache: dict[tuple[str, str, str, bool], _Ranked] = {}
        # (id(candidates), benched models) -> (candidates, healthy ones, healthy by name)
        self._healthy: dict[
            tuple[int, tuple[str, ...]],
            tuple[Sequence[ModelConfig], Sequence[ModelConfig], dict[str, ModelConfig]],
        ] = {}

    # -- scoring, explained --------------------------------------------------------
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
        score, parts = self._score(model, ctype, optimization, stream, context, explain=True)
        return Score(
            model.name, optimization, score, parts, self.blacklist.is_blacklisted(model.name)
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
        """gateway.routing.scoring's formula for one model; `explain` adds the parts."""
        stats = self.tracker.stats(model.name, ctype)
        reference, evidence_total = context
        mine = own(model, stats, optimization, stream, self.config.prior_weight)
        c = self.config.exploration_bonus * BONUS[optimization]
        score, quality, bonus = total(
            mine, optimization, reference, evidence_total, self.tracker.seq, c
        )
        if not explain:
            return score, {}
        parts = details(model, stats, optimization, stream)
        weight: float | None = mine.weight
        if optimization == "speed":
            parts["reference_ms"] = reference
            lat = mine.latency
            parts["live"] = None if lat is None else reference / (reference + lat)  # type: ignore[operator]
        elif optimization == "cost":
            parts = {"expected_cost": mine.base, "reference_cost": reference}
            weight = None
        if mine.posterior is not None:
            parts["level"] = reference
            parts["uncertainty"] = belief(mine.posterior, self.tracker.seq, reference or 0.0)[1]
        parts.update(
            {
                "weight_live": weight,
                "success_rate": mine.success,
                "value": quality,
                "exploration_bonus": bonus,
            }
        )
        return score, parts

    def _context(
        self, models: Sequence[ModelConfig], ctype: str, optimization: str, stream: bool
    ) -> tuple[float | None, float]:
        """What every score of one ranking shares: the peers' reference cost or latency,
        and their aged evidence together (for the exploration bonus)."""
        if optimization == "cost":
            reference: float | None = self.reference_cost(models, ctype)
        elif optimization == "speed":
            reference = self.reference_latency(models, ctype, stream)
        else:  # quality: where the models' ratings put them all (scoring.level)
            k = self.config.prior_weight
            ratings = [
                own(m, self.tracker.stats(m.name, ctype), optimization, stream, k).posterior
                for m in models
            ]
            reference = level(ratings, self.tracker.seq)
        seq = self.tracker.seq
        stats = [self.tracker.stats(m.name, ctype) for m in models]
        together = sum(aged(evidence(s, optimization), s.last_seq if s else 0, seq) for s in stats)
        return reference, together

    def reference_latency(self, models: Sequence[ModelConfig], ctype: str, stream: bool) -> float:
        """The mean observed latency of `models` that have data (1 s if none has)."""
        seen = [
            lat
            for m in models
            if (lat := latency(self.tracker.stats(m.name, ctype), stream)) is not None
        ]
        return sum(seen) / len(seen) if seen else 1000.0

    def expected_cost(self, model: ModelConfig, stats: Stats | None) -> float:
        return expected_cost(model, stats, self.config.prior_weight)

    def reference_cost(self, models: Sequence[ModelConfig], ctype: str) -> float:
        """The mean expected cost of the paid models among `models` (1.0 if none is paid)."""
        costs = [self.expected_cost(m, self.tracker.stats(m.name, ctype)) for m in models]
        paid = [c for c in costs if c > 0]
        return sum(paid) / len(paid) if paid else 1.0

    def rankings(
        self, models: Sequence[ModelConfig], ctype: str, optimization: str, stream: bool = False
    ) -> list[Score]:
        context = self._context(models, ctype, optimization, stream)
        scores = [self.score(m, ctype, optimization, models, stream, context) for m in models]
        scores.sort(key=lambda s: (s.blacklisted, -s.total))  # benched models cannot serve
        return scores

    # -- routing -------------------------------------------------------------------
    def rank(self, job: Job[Any, Any]) -> Sequence[ModelConfig]:
        target = job.target
        optimization = job.optimization or "accuracy"
        candidates = target.candidates
        healthy, by_name = self._healthy_of(candidates)
        if not healthy:
            return self._all_blacklisted(candidates)
        first: list[ModelConfig] = []  # models that go ahead of the ranking
        if target.route is None and (healthy is candidates or candidates[0].name in by_name):
            first.append(candidates[0])  # a concrete model is tried first
        if optimization == "continuity":
            optimization = "accuracy"
            last = self.tracker.last_model(job.conversation_id) if job.conversation_id else None
            if last is not None and last in by_name and (not first or first[0].name != last):
                first.append(by_name[last])
        if len(healthy) - len(first) < 2:
            ahead = {m.name for m in first}
            return first + [m for m in healthy if m.name not in ahead]
        stream = job.body.get("stream") is True
        ranked = self._ranked(target.name, healthy, job.ctype, optimization, stream)
        ordered = ranked.ordered
        sampling = self.config.exploration_bonus > 0
        if optimization in _QUALITY and sampling:
            if len(ranked.contenders) > 1:
                ordered = _ahead(self._drawn(ranked.contenders), ordered)
        elif self.config.exploration_rate and self.rng.random() < self.config.exploration_rate:
            ordered = self._explore(target.name, healthy, ordered, job.ctype, optimization)
        if optimization == "cost" and job.tolerance is not None:
            ordered = self._within(target.name, healthy, ordered, job, job.tolerance, sampling)
        prompts = self.prompts
        if prompts is not None and optimization == "accuracy" and prompts.routes(target.route):
            ordered = self._per_prompt(prompts, job, ordered)
        if not first:
            return ordered
        if len(first) == 1:  # a target holds one object per model name (Catalog)
            head = first[0]
            if ordered[0] is head:  # already first
                return ordered
            out = [m for m in ordered if m is not head]  # by identity: == compares fields
            out.insert(0, head)
            return out
        ahead = {m.name for m in first}
        return first + [m for m in ordered if m.name not in ahead]

    def _per_prompt(
        self,
        prompts: PromptRouter,
        job: Job[Any, Any],
        ordered: list[ModelConfig],
        tolerance: float = 0.0,
    ) -> list[ModelConfig]:
        """The model the route's per-prompt learner picks for this prompt first, the
        model-level order after it (for fallback); the features wait for the rating.
        With a quality `tolerance`, the cheapest model within it of the best."""
        from gateway.routing.prompt_features import features, prompt_text

        if job.endpoint not in _TEXT:
            return ordered
        text, turns = prompt_text(job.body)
        if not text:
            return ordered
        route = job.target.route
        assert route is not None
        x = features(text, turns)
        prompts.remember(job.response_id, route, x)
        costs = (
            [self.expected_cost(m, self.tracker.stats(m.name, job.ctype)) for m in ordered]
            if tolerance > 0
            else ()
        )
        pick = prompts.choose(route, x, [m.name for m in ordered], costs, tolerance)
        if not pick:  # None (no rating yet) or the model-level first already
            return ordered
        out = ordered[:]
        out.insert(0, out.pop(pick))
        return out

    def _healthy_of(
        self, candidates: Sequence[ModelConfig]
    ) -> tuple[Sequence[ModelConfig], dict[str, ModelConfig]]:
        """The candidates that are not benched (`candidates` itself if none is), and
        them by name; kept while the set of benched models stays the same."""
        blacklist = self.blacklist
        benched = tuple(map(_MODEL, blacklist.active())) if blacklist.any_benched() else ()
        key = (id(candidates), benched)
        hit = self._healthy.get(key)
        if hit is not None and hit[0] is candidates:
            return hit[1], hit[2]
        healthy: Sequence[ModelConfig] = [m for m in candidates if m.name not in benched]
        if len(healthy) == len(candidates):
            healthy = candidates
        if len(self._healthy) > 1024:
            self._healthy.clear()
        by_name = {m.name: m for m in healthy}
        self._healthy[key] = (candidates, healthy, by_name)
        return healthy, by_name

    def _entry(
        self, key: str, models: Sequence[ModelConfig], ctype: str, optimization: str, stream: bool
    ) -> _Ranked:
        cache_key = (key, ctype, optimization, stream)
        ranked = self._cache.get(cache_key)
        if ranked is not None:
            table = ranked.table
            if table.models is models:
                return ranked
            if _same(table.models, models):
                table.models = models
                return ranked
        if len(self._cache) >= _RANKINGS:
            del self._cache[next(iter(self._cache))]  # the oldest
        table = RankingTable(models, ctype, optimization, stream, self.config.prior_weight)
        ranked = self._cache[cache_key] = _Ranked(table)
        return ranked

    def _ranked(
        self, key: str, models: Sequence[ModelConfig], ctype: str, optimization: str, stream: bool
    ) -> _Ranked:
        """`models` best first, reused while the tracker has not changed (or for
        `refresh_seconds` while it keeps changing under load)."""
        ranked = self._cache.get((key, ctype, optimization, stream))
        if ranked is None or ranked.table.models is not models:
            ranked = self._entry(key, models, ctype, optimization, stream)
        now = self.clock()
        tracker = self.tracker
        if ranked.version == tracker.version or now - ranked.at < self.refresh_seconds:
            return ranked
        table = ranked.table
        table.sync(tracker)
        if optimization in _QUALITY:
            self._believe(ranked, tracker.seq)
        else:
            c = self.config.exploration_bonus * BONUS[optimization]
            ranked.ordered = table.ranked(tracker.seq, c)
        ranked.version = tracker.version
        ranked.at = now
        return ranked

    @staticmethod
    def _believe(ranked: _Ranked, seq: int) -> None:
        """A quality ranking: by expected quality, with the models that may be the best."""
        models = ranked.table.models
        beliefs = ranked.beliefs = ranked.table.routing_beliefs(seq)
        if not beliefs:
            ranked.ordered, ranked.contenders = [], []
            return
        means = [m for m, _ in beliefs]
        spreads = [s for _, s in beliefs]
        ranked.ordered = sorted(models, key=partial(next, iter(means)), reverse=True)
        top = means.index(max(means))
        floor = means[top] - _CONTENDING * spreads[top]
        picked: Sequence[int] = range(len(means))
        if len(means) > _DRAWN:  # the likeliest to be the best: bounded work per request
            upper = [m + 2 * s for m, s in beliefs]
            picked = sorted(picked, key=upper.__getitem__)[-_DRAWN:]
        ranked.contenders = [
            (models[i], means[i], spreads[i])
            for i in picked
            if means[i] + _CONTENDING * spreads[i] >= floor
        ]

    def _drawn(self, contenders: Sequence[tuple[ModelConfig, float, float]]) -> ModelConfig:
        """The model with the highest quality drawn from each contender's posterior."""
        uniform, n = self.rng.random, len(NORMALS)
        best, best_draw = contenders[0][0], -math.inf
        for model, mean, spread in contenders:
            draw = mean + spread * NORMALS[int(uniform() * n)]
            if draw > best_draw:
                best, best_draw = model, draw
        return best

    def _within(
        self,
        key: str,
        models: Sequence[ModelConfig],
        ordered: list[ModelConfig],
        job: Job[Any, Any],
        tolerance: float,
        sampling: bool,
    ) -> list[ModelConfig]:
        """`ordered` (cheapest first) with the models whose quality is within the job's
        tolerance of the best ahead of the rest: "the cheapest model whose expected
        quality is within X of the best". Qualities are drawn from their posteriors
        (with `sampling`), so a model's place is re-tested as ratings come in."""
        quality = self._ranked(key, models, job.ctype, "accuracy", False)
        uniform, n = self.rng.random, len(NORMALS)
        draws = [mean + spread * NORMALS[int(uniform() * n)] if sampling else mean
                 for mean, spread in quality.beliefs]  # fmt: skip
        if not draws:
            return ordered
        bar = (1.0 - tolerance) * max(draws)
        within = {m.name for m, d in zip(quality.table.models, draws, strict=True) if d >= bar}
        if len(within) == len(ordered):
            return ordered
        return [m for m in ordered if m.name in within] + [
            m for m in ordered if m.name not in within
        ]

    def _explore(
        self,
        key: str,
        models: Sequence[ModelConfig],
        ordered: list[ModelConfig],
        ctype: str,
        optimization: str,
    ) -> list[ModelConfig]:
        """Thompson-style: sample each score with noise that shrinks as data grows
        (scored as for a non-streaming request, sampled in ranked order).

        The data is the aged evidence, as for the exploration bonus: a model that has not
        served for a while is uncertain again. With all-time counts, a runner-up with a
        few hundred old requests was never drawn, so when it got better only the bonus
        could find out (the accuracy scenario of bench/quality.py then sometimes kept
        the old best for its whole second half)."""
        table = self._entry(key, models, ctype, optimization, False).table
        table.sync(self.tracker)
        seq = self.tracker.seq
        c = self.config.exploration_bonus * BONUS[optimization]
        totals = table.totals(seq, c)
        f = AGING ** (seq - table.anchor)  # table.aged is aged to its anchor
        evidence_now = table.aged
        position = {m.name: i for i, m in enumerate(models)}
        gauss = self.rng.gauss
        sampled = []
        for m in ordered:
            i = position[m.name]
            sampled.append(totals[i] + gauss(0.0, 0.3 / math.sqrt(1 + f * evidence_now[i])))
        return sorted(ordered, key=partial(next, iter(sampled)), reverse=True)

    def _all_blacklisted(self, candidates: Sequence[ModelConfig]) -> list[ModelConfig]:
        returns = sorted(candidates, key=lambda m: self.blacklist.until(m.name) or 0.0)
        if self.config.when_all_blacklisted == "probe":
            return returns[:1]
        soonest = self.blacklist.until(returns[0].name) or self.blacklist.clock()
        wait = max(1, math.ceil(soonest - self.blacklist.clock()))
        names = ", ".join(m.name for m in candidates)
        raise AllModelsBlacklisted(
            f"Every model that can serve this request is blacklisted after repeated "
            f"failures ({names}); '{returns[0].name}' returns in {wait} s.",
            retry_after=wait,
        )


def _ahead(model: ModelConfig, ordered: list[ModelConfig]) -> list[ModelConfig]:
    if ordered[0] is model:
        return ordered
    for i, m in enumerate(ordered):  # by identity: == compares fields; contenders lead
        if m is model:
            return [model, *ordered[:i], *ordered[i + 1 :]]
    return ordered


def _same(a: Sequence[ModelConfig], b: Sequence[ModelConfig]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
