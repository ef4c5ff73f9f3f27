"""One ranking's per-model score parts, kept in step with the models' stats and
combined in one pass.

Ranking runs on every request, and rescoring 100 models cost ~400 µs when every part
was recomputed. A model's own parts (gateway.routing.scoring.Own) only change when its Stats
do, so a table keeps them and refreshes just the models whose Stats changed (the
tracker lists the latest changes; `Stats.changes` tells the rest). A rescoring then
combines them with what the peers share in one comprehension over per-model tuples:
no method call, attribute or dict per model.

The score (value + c * sqrt(ln(1 + N) / (1 + n))) * success is computed as
value * success + k / sqrt(p + f * q), with k = c * sqrt(ln(1 + N)), p = 1 / success²
and q = m / success². Aging is factored: a model's aged evidence
n = evidence * AGING ** (seq - last_seq) is f * m, with m = evidence * AGING **
(anchor - last_seq) kept per model and f = AGING ** (seq - anchor) computed once per
ranking; the anchor moves every REANCHOR attempts. Quality's value is its posterior mean aged to
the ranking's attempt count (`beliefs()`, with the spread selection samples from). The
totals equal the explained ones
(gateway.routing.scoring.total) to rounding: tests/gateway/routing/test_ranking_table.py checks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from itertools import compress, islice
from math import log1p, sqrt
from operator import mul, ne

from gateway.core.config import ModelConfig
from gateway.routing.scoring import AGING, Posterior, belief, level, own
from gateway.routing.tracker import Stats, Tracker

__all__ = ["RankingTable"]

REANCHOR = 1024  # AGING ** 1024 ~ 0.006: m stays far from overflow and underflow
# Routing's quality beliefs are recomputed for every model at most this many attempts
# apart (in between, only the models whose stats changed): aging moves them by under
# 7 % in that time (RATING_AGING ** 64), and recomputing 100 of them costs ~300 µs.
BELIEFS_FRESH = 64
FEW = 16  # changes since the last sync looked up one by one; more: every model checked


class _NoStats:
    """Stands in for a model that has no Stats yet (its parts come from the priors)."""

    __slots__ = ()
    changes = 0


_NO_STATS = _NoStats()


class RankingTable:
    """`models` scored for one conversation type and optimization (and streaming, which
    only speed looks at)."""

    __slots__ = (
        "aged", "anchor", "believed", "believed_seq", "changes", "count", "counted", "ctype",
        "evidence", "generation", "index", "last_seq", "models", "optimization", "posteriors",
        "prior_weight", "reference", "requests", "rows", "seen", "shift", "stale", "stats",
        "stream", "success",
    )  # fmt: skip

    def __init__(
        self,
        models: Sequence[ModelConfig],
        ctype: str,
        optimization: str,
        stream: bool,
        prior_weight: float,
    ) -> None:
        n = len(models)
        self.models = models
        self.ctype = ctype
        self.optimization = optimization
        self.stream = stream
        self.prior_weight = prior_weight
        self.generation = -1  # the tracker's, when `stats` was looked up
        self.changes = -1  # the tracker's count of Stats changes at the last sync
        self.stats: list[Stats | _NoStats] = [_NO_STATS] * n
        self.index: dict[int, int] = {}  # id(Stats) -> its model's position
        self.seen = [-1] * n  # each model's Stats.changes when its parts were computed
        # Per model, in `models` order. What totals() reads is one tuple per model:
        # quality (value * success, p, q); speed (weight * success, latency, value-part
        # * success, p, q); cost (success, cost, p, q).
        self.rows: list[tuple[float, ...]] = []
        self.evidence = [0.0] * n
        self.last_seq = [0] * n
        self.aged = [0.0] * n  # m
        self.requests = [0] * n
        self.reference = [0.0] * n  # speed, cost: what each adds to the peers' reference
        self.counted = [False] * n  # whether it counts towards the reference mean
        self.count = 0  # how many do
        self.anchor = 0
        self.posteriors: list[Posterior | None] = [None] * n  # quality: what values rest on
        self.success = [1.0] * n
        # Routing's copy of beliefs(): as of `believed_seq` and level `shift`, but for the
        # `stale` models (their stats changed since), which routing_beliefs() refreshes.
        self.believed: list[tuple[float, float]] = []
        self.believed_seq = 0
        self.shift = 0.0
        self.stale: set[int] = set()

    def sync(self, tracker: Tracker) -> int:
        """Recompute the parts of the models whose stats changed; returns how many."""
        every = False  # whether to look at every model rather than the tracker's latest
        if tracker.generation != self.generation:  # Stats objects created or replaced
            lookup = tracker.stats
            ctype = self.ctype
            fresh = [lookup(m.name, ctype) or _NO_STATS for m in self.models]
            self.seen = [
                -1 if a is not b else s
                for a, b, s in zip(fresh, self.stats, self.seen, strict=True)
            ]
            self.stats = fresh
            self.index = {id(s): i for i, s in enumerate(fresh) if s is not _NO_STATS}
            self.generation = tracker.generation
            every = True
        if not -REANCHOR <= tracker.seq - self.anchor <= REANCHOR:
            if self.rows:
                self._reanchor(tracker.seq)
            else:  # nothing computed yet
                self.anchor = tracker.seq
        new = tracker.changes - self.changes
        self.changes = tracker.changes
        if not (every or new):
            return 0
        if not every and new <= min(len(tracker.changed), FEW):  # the tracker says which
            index = self.index
            seen = self.seen
            count = 0
            for stats in islice(reversed(tracker.changed), new):
                i = index.get(id(stats))
                if i is not None and seen[i] != stats.changes:
                    self._set(i)
                    seen[i] = stats.changes
                    count += 1
            return count
        changes = [s.changes for s in self.stats]
        changed = list(compress(range(len(changes)), map(ne, changes, self.seen)))
        if len(changed) > len(changes) // 4:
            self._rebuild()
        else:
            for i in changed:
                self._set(i)
        self.seen = changes
        return len(changed)

    def _set(self, i: int) -> None:
        stats = self.stats[i]
        opt = self.optimization
        base, weight, lat, n, last, success, requests, post = own(
            self.models[i],
            None if stats is _NO_STATS else stats,  # type: ignore[arg-type]
            opt,
            self.stream,
            self.prior_weight,
        )
        self.evidence[i] = n
        self.last_seq[i] = last
        self.requests[i] = requests
        self.posteriors[i] = post
        self.success[i] = success
        self.stale.add(i)
        m = self.aged[i] = n * AGING ** (self.anchor - last) if n else 0.0
        p = 1.0 / (success * success)  # success > 0: it has a prior
        if opt == "speed":
            x = 1.0 if lat is None else lat
            self.count += (lat is not None) - self.counted[i]
            self.counted[i] = lat is not None
            self.reference[i] = 0.0 if lat is None else lat
            self.rows[i] = (weight * success, x, base * success, p, m * p)
        elif opt == "cost":
            self.count += (base > 0) - self.counted[i]
            self.counted[i] = base > 0  # free models are left out of the reference
            self.reference[i] = base if base > 0 else 0.0
            self.rows[i] = (success, base, p, m * p)
        else:
            self.rows[i] = (base * success, p, m * p)

    def _rebuild(self) -> None:
        """Every model's parts at once: on first use, or when most models changed."""
        if not self.models:
            return
        opt = self.optimization
        parts = [
            own(m, None if s is _NO_STATS else s, opt, self.stream, self.prior_weight)  # type: ignore[arg-type]
            for m, s in zip(self.models, self.stats, strict=True)
        ]
        base, weight, latency, evidence, last_seq, success, requests, posteriors = map(
            list, zip(*parts, strict=True)
        )
        self.posteriors = posteriors
        self.success = success
        self.believed = []  # all changed: routing_beliefs() starts afresh
        self.evidence = evidence
        self.last_seq = last_seq
        self.requests = requests
        anchor = self.anchor
        self.aged = [n * AGING ** (anchor - s) if n else 0.0
                     for n, s in zip(evidence, last_seq, strict=True)]  # fmt: skip
        p = [1.0 / (s * s) for s in success]  # success > 0: it has a prior
        q = list(map(mul, self.aged, p))
        rows: list[tuple[float, ...]]
        if opt == "speed":
            self.counted = [x is not None for x in latency]
            self.reference = [0.0 if x is None else x for x in latency]
            x = [1.0 if x is None else x for x in latency]
            rows = list(
                zip(map(mul, weight, success), x, map(mul, base, success), p, q, strict=True)
            )
        elif opt == "cost":
            self.counted = [b > 0 for b in base]
            self.reference = [b if b > 0 else 0.0 for b in base]
            rows = list(zip(success, base, p, q, strict=True))
        else:
            rows = list(zip(map(mul, base, success), p, q, strict=True))
        self.count = sum(self.counted)
        self.rows = rows

    def _reanchor(self, seq: int) -> None:
        """Age every model's evidence to `seq` (q in the rows follows)."""
        self.anchor = seq
        aged = self.aged = [n * AGING ** (seq - s) if n else 0.0
                            for n, s in zip(self.evidence, self.last_seq, strict=True)]  # fmt: skip
        rows = zip(self.rows, aged, strict=True)
        if self.optimization == "speed":
            self.rows = [(ws, x, vs, p, m * p) for (ws, x, vs, p, _), m in rows]
        elif self.optimization == "cost":
            self.rows = [(s, x, p, m * p) for (s, x, p, _), m in rows]
        else:
            self.rows = [(vs, p, m * p) for (vs, p, _), m in rows]

    def totals(self, seq: int, c: float) -> list[float]:
        """Every model's score, in `models` order; `c` is the exploration weight."""
        if not -REANCHOR <= seq - self.anchor <= REANCHOR:
            self._reanchor(seq)
        f = AGING ** (seq - self.anchor)
        k = c * sqrt(log1p(f * sum(self.aged)))
        opt = self.optimization
        count = self.count
        if opt == "speed":
            ref = sum(self.reference) / count if count else 1000.0
            return [
                ws * ref / (ref + x) + vs + k / sqrt(p + f * q) for ws, x, vs, p, q in self.rows
            ]
        if opt == "cost":
            ref = sum(self.reference) / count if count else 1.0
            # value * success = success * ref / (ref + cost): a free model (0) is worth 1
            return [s * ref / (ref + x) + k / sqrt(p + f * q) for s, x, p, q in self.rows]
        means = [m for m, _ in self.beliefs(seq)]
        if not k:
            return means
        return [m + k / sqrt(p + f * q) for m, (_, p, q) in zip(means, self.rows, strict=True)]

    def beliefs(self, seq: int) -> list[tuple[float, float]]:
        """Quality: every model's expected quality at `seq` and its standard error, both
        times its success rate, in `models` order."""
        shift = level(self.posteriors, seq)
        return [self._belief(i, seq, shift) for i in range(len(self.models))]

    def _belief(self, i: int, seq: int, shift: float) -> tuple[float, float]:
        mean, spread = belief(self.posteriors[i], seq, shift)  # type: ignore[arg-type]
        s = self.success[i]
        return mean * s, spread * s

    def routing_beliefs(self, seq: int) -> list[tuple[float, float]]:
        """beliefs() as routing uses them: recomputed for every model when the last full
        pass is BELIEFS_FRESH attempts old, otherwise only for the models whose stats
        changed since (by the same level)."""
        n = len(self.models)
        if len(self.believed) != n or seq - self.believed_seq >= BELIEFS_FRESH:
            self.shift = level(self.posteriors, seq)
            self.believed = [self._belief(i, seq, self.shift) for i in range(n)]
            self.believed_seq = seq
        else:
            for i in self.stale:
                self.believed[i] = self._belief(i, seq, self.shift)
        self.stale.clear()
        return self.believed

    def ranked(self, seq: int, c: float) -> list[ModelConfig]:
        """`models` best first; ties keep the configured order."""
        # sorted() calls the key once per item, in order: hand it the totals in turn
        # (a key that looks each model up costs as much as the sort).
        return sorted(self.models, key=partial(next, iter(self.totals(seq, c))), reverse=True)
