"""Per-prompt routing: which model answers which kind of prompt well, learned online from
the ratings the gateway already receives.

For every model of a route with `per_prompt: true`, a Bayesian linear regression of the
rating (1-5 mapped to 0-1) on the prompt's features (gateway.routing.prompt_features):
a ridge regression whose sufficient statistics are a D x D matrix and a D vector, so
memory is fixed (~1.5 MB per model of such a route at D = 256) and evidence from other
processes is merged by adding theirs (`state()` / `set_peers()`, shared by the Fleet).

Routing takes each model's expected rating for this prompt (the posterior mean) plus a
draw of its model-level uncertainty, that of a mean of its n ratings (Thompson sampling
at the model level, so a model that fell behind by bad luck keeps being tried), and
serves the best, or with a quality tolerance the cheapest within that fraction of the
best. Per prompt it is greedy: prompts differ enough that greedy choices keep teaching
both models (Bastani, Bayati and Khosravi, "Mostly exploration-free algorithms for
contextual bandits", 2021); sampling the per-prompt posterior as well was measured to
route almost at random, because the words no earlier prompt had keep their prior
uncertainty forever (bench/README.md). The bias feature makes each regression's
intercept a model-level estimate, so with few ratings (or prompts unlike any rated one)
routing is model-level routing; before a route has any rating, the selector's order
stands.

The features of each answered request wait for their rating in a bounded map by
response id (`PENDING` answers, ~0.5 KB each). A rating of an answer that another
worker or replica gave is passed to the fleet (`outbox`), and the process that holds
the answer's features learns from it at its next round; with `storage.log_payloads`
the features are rebuilt from the stored prompt at once instead.
One rating is one observation, however many dimensions it fills; a re-rating replaces
the earlier one. No client key steers routing for everyone: a key's ratings count up to
the median weight of the keys that rated the route and no further (until the others
catch up), as gateway.routing.scoring caps them for the model-level estimate.

Constants, and why (none is fitted to a data set):
- `NOISE` 0.25: the variance of any score in 0..1 is at most 1/4 (a coin flip's).
- `RIDGE` 1.0: the prior on the weights is worth one rating of a unit-length prompt.
- The intercept's prior mean is the model's configured accuracy prior (0-10 scale / 10).
"""

from __future__ import annotations

import base64
import contextlib
import math
import random
import statistics
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from gateway.routing.prompt_features import DIM, Vector, features, prompt_text
from gateway.routing.scoring import NORMALS

__all__ = ["NOISE", "PENDING", "RIDGE", "Posterior", "PromptRouter", "rating_value"]

NOISE = 0.25
RIDGE = 1.0
PENDING = 20_000  # answers whose features wait for a rating (matches ResponseIndex)
OUTBOX = 10_000  # ratings waiting to be passed to the fleet (oldest dropped past it)
KEYS = 10_000  # client keys remembered per route (their weights); more share one slot
_ACCURACY = ("accuracy", "overall", "relevance", "helpfulness")  # as scoring.ACCURACY_DIMS
_REFRESH = 500  # local rank-one updates before the inverse is recomputed from scratch
_TRIU = np.triu_indices(DIM)


def rating_value(scores: Mapping[str, float]) -> float | None:
    """One rating as one observation in 0..1: the mean of the quality dimensions it
    fills (1-5 mapped to 0-1); None if it rates none of them (e.g. creativity only)."""
    given = [scores[d] for d in _ACCURACY if d in scores]
    if not given:
        return None
    return (sum(given) / len(given) - 1) / 4


@dataclass(slots=True)
class Evidence:
    """The sufficient statistics of weighted ratings: sum w x xT, sum w y x, sum w,
    and the weight per client key. Additive: the fleet's is the sum of its processes'."""

    xx: np.ndarray = field(default_factory=lambda: np.zeros((DIM, DIM)))
    xy: np.ndarray = field(default_factory=lambda: np.zeros(DIM))
    n: float = 0.0
    keys: dict[str, float] = field(default_factory=dict)

    def add(self, other: Evidence) -> None:
        self.xx += other.xx
        self.xy += other.xy
        self.n += other.n
        for key, weight in other.keys.items():
            self.keys[key] = self.keys.get(key, 0.0) + weight

    def to_dict(self) -> dict[str, Any]:
        """Compact: the upper triangle as float32, base64 (~175 KB at D = 256)."""
        return {
            "dim": DIM,
            "xx": base64.b64encode(self.xx[_TRIU].astype(np.float32).tobytes()).decode(),
            "xy": self.xy.tolist(),
            "n": self.n,
            "keys": self.keys,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        if data.get("dim") != DIM:
            raise ValueError("stored with another feature dimension")
        upper = np.frombuffer(base64.b64decode(data["xx"]), dtype=np.float32)
        if len(upper) != len(_TRIU[0]):
            raise ValueError("truncated matrix")
        xx = np.zeros((DIM, DIM))
        xx[_TRIU] = upper
        xx = xx + np.triu(xx, 1).T
        xy = np.asarray(data["xy"], dtype=np.float64)
        if xy.shape != (DIM,):
            raise ValueError("bad vector")
        keys = {str(k): float(v) for k, v in dict(data.get("keys") or {}).items()}
        return cls(xx, xy, float(data["n"]), keys)


class Posterior:
    """One model on one route: its own evidence, its peers' (summed), and the posterior
    of the regression on both: the mean weights and the inverse precision."""

    __slots__ = ("_updates", "a_inv", "b", "mean", "own", "peers", "prior")

    def __init__(self, prior_quality: float) -> None:
        self.prior = np.zeros(DIM)
        self.prior[0] = RIDGE * prior_quality  # the intercept starts at the model's prior
        self.own = Evidence()
        self.peers = Evidence()
        self.a_inv = np.eye(DIM) / RIDGE
        self.b = self.prior.copy()
        self.mean = self.a_inv @ self.b
        self._updates = 0

    @property
    def n(self) -> float:
        return self.own.n + self.peers.n

    def predict(self, x: Vector) -> tuple[float, float]:
        """The expected rating (0-1) for prompt `x`, and the standard deviation of the
        model-level part of it that routing explores by: that of a mean of n ratings."""
        return float(x @ self.mean), math.sqrt(NOISE / (RIDGE + self.own.n + self.peers.n))

    def spread(self, x: Vector) -> float:
        """The standard deviation of the expected rating for prompt `x`, all of it."""
        return math.sqrt(max(NOISE * float(x @ (self.a_inv @ x)), 0.0))

    def add(self, x: Vector, y: float, weight: float, key: str) -> None:
        """One rating: a rank-one update of the inverse (Sherman-Morrison), O(D^2)."""
        own = self.own
        own.xx += weight * np.outer(x, x)
        own.xy += (weight * y) * x
        own.n += weight
        own.keys[key] = own.keys.get(key, 0.0) + weight
        self.b += (weight * y) * x
        self._updates += 1
        if self._updates >= _REFRESH:
            self.refresh()
            return
        ax = self.a_inv @ x
        self.a_inv -= np.outer(ax, ax) * (weight / (1.0 + weight * float(x @ ax)))
        self.mean = self.a_inv @ self.b

    def replace(self, x: Vector, old: float, new: float, weight: float) -> None:
        """A re-rating of an answer: the same prompt, another value."""
        delta = (weight * (new - old)) * x
        self.own.xy += delta
        self.b += delta
        self.mean = self.a_inv @ self.b

    def set_peers(self, peers: Evidence) -> None:
        self.peers = peers
        self.refresh()

    def refresh(self) -> None:
        """The posterior from the evidence, from scratch (after peers change, and now and
        then so that rank-one updates do not drift)."""
        precision = self.own.xx + self.peers.xx
        precision[np.diag_indices(DIM)] += RIDGE
        self.b = self.prior + self.own.xy + self.peers.xy
        self.a_inv = np.linalg.inv(precision)
        self.mean = self.a_inv @ self.b
        self._updates = 0


@dataclass(slots=True)
class _Pending:
    route: str
    x: np.ndarray  # float16: the features, half the memory, ample precision for ~1e-3
    rated: tuple[str, float, float] | None = None  # model, value, weight once rated


class PromptRouter:
    """The per-prompt learners of every route that has one, and the features of recent
    answers waiting for their ratings."""

    def __init__(
        self,
        routes: Mapping[str, Mapping[str, float]],
        *,
        rng: random.Random | None = None,
        pending: int = PENDING,
    ) -> None:
        """`routes`: route name -> {model name: prior quality 0-1} for each route that
        routes per prompt."""
        self.rng = rng or random.Random()
        self.posteriors: dict[str, dict[str, Posterior]] = {
            route: {model: Posterior(q) for model, q in models.items()}
            for route, models in routes.items()
        }
        self._pending: dict[str, _Pending] = {}
        self._order: deque[str] = deque()
        self._size = pending
        self.version = 0  # bumped by every rating taken in (the fleet publishes on change)
        # Ratings of answers of per-prompt routes whose features this process does not
        # hold (another worker or replica answered): for the Fleet to pass on.
        self.outbox: deque[tuple[str, str, dict[str, float], str]] = deque(maxlen=OUTBOX)

    def routes(self, route: str | None) -> bool:
        """Whether `route` routes per prompt."""
        return route in self.posteriors

    # -- the request path --------------------------------------------------------------
    def choose(
        self,
        route: str,
        x: Vector,
        models: Sequence[str],
        costs: Sequence[float],
        tolerance: float = 0.0,
    ) -> int | None:
        """The index in `models` of the one to serve prompt `x`: each model's expected
        rating sampled from its posterior, the best sample wins, or with `tolerance` the
        cheapest within that fraction of the best (`costs` are read only then). None
        while the route has no rating
        (the caller keeps its model-level order) or knows none of `models`."""
        learners = self.posteriors.get(route)
        if learners is None:
            return None
        uniform, n = self.rng.random, len(NORMALS)
        samples: list[float] = []
        rated = False
        for name in models:
            posterior = learners.get(name)
            if posterior is None:
                return None
            rated = rated or posterior.n > 0
            mean, sd = posterior.predict(x)
            samples.append(mean + sd * NORMALS[int(uniform() * n)])
        if not rated:
            return None
        best = max(range(len(models)), key=samples.__getitem__)
        if tolerance <= 0:
            return best
        floor = samples[best] - tolerance * abs(samples[best])
        near = [i for i in range(len(models)) if samples[i] >= floor]
        return min(near, key=lambda i: (costs[i], -samples[i]))

    def expected(self, route: str, x: Vector) -> dict[str, tuple[float, float]]:
        """Each model's expected rating for prompt `x` and its standard deviation."""
        return {m: p.predict(x) for m, p in self.posteriors.get(route, {}).items()}

    def remember(self, response_id: str, route: str, x: Vector) -> None:
        """Keep a request's features until its answer is rated (the oldest go first)."""
        pending = self._pending
        if response_id not in pending:
            self._order.append(response_id)
        pending[response_id] = _Pending(route, x.astype(np.float16))
        if len(pending) > self._size:
            del pending[self._order.popleft()]

    # -- ratings -------------------------------------------------------------------------
    def rate(
        self,
        response_id: str,
        model: str,
        scores: Mapping[str, float],
        key: str = "",
        stored: tuple[str | None, str | None] | None = None,
    ) -> bool:
        """Learn from one rating of an answer, by its response id; whether it taught
        anything (False: not an answer of a per-prompt route that this process still
        remembers, or a rating of no quality dimension). `stored` is the answer's route
        and prompt as the store has them (the prompt when payloads are logged): an
        answer another worker gave is learned from through them."""
        entry = self._pending.get(response_id)
        if entry is None and stored is not None:
            entry = self._from_stored(response_id, *stored)
        value = rating_value(scores)
        if value is None:
            return False
        if entry is None:
            if stored is not None and stored[0] in self.posteriors:
                # Another process of the fleet may hold its features: the Fleet passes
                # the rating on (`outbox`), and that process learns from it.
                self.outbox.append((response_id, model, dict(scores), key))
            return False
        learners = self.posteriors.get(entry.route)
        posterior = learners.get(model) if learners is not None else None
        if learners is None or posterior is None:
            return False
        x = entry.x.astype(np.float64)
        if entry.rated is not None and entry.rated[0] == model:
            _, old, weight = entry.rated
            if old == value:
                return False  # the same rating again (e.g. read again from the fleet)
            posterior.replace(x, old, value, weight)
        else:
            weight = self._weight(learners.values(), key)
            if weight <= 0:
                entry.rated = (model, value, 0.0)
                return False
            posterior.add(x, value, weight, key if len(posterior.own.keys) < KEYS else "")
        entry.rated = (model, value, weight)
        self.version += 1
        return True

    def _from_stored(
        self, response_id: str, route: str | None, prompt: str | None
    ) -> _Pending | None:
        if route not in self.posteriors or not prompt:
            return None
        body: dict[str, Any] = {"prompt": prompt}
        if prompt.startswith("["):  # the messages, as JSON (evaluation._prompt_text)
            with contextlib.suppress(orjson.JSONDecodeError):
                body = {"messages": orjson.loads(prompt)}
        text, turns = prompt_text(body)
        if not text:
            return None
        assert route is not None
        self.remember(response_id, route, features(text, turns))
        return self._pending[response_id]

    @staticmethod
    def _weight(learners: Iterable[Posterior], key: str) -> float:
        """A rating's weight: 1 while its key's weight in the route stays within the
        median over the keys that rated it, 0 past it (a lone key is not capped)."""
        weights: dict[str, float] = {}
        for posterior in learners:
            for evidence in (posterior.own, posterior.peers):
                for k, w in evidence.keys.items():
                    weights[k] = weights.get(k, 0.0) + w
        mine = weights.get(key, 0.0)
        if len(weights) < 2 or mine == 0.0:
            return 1.0
        cap = statistics.median(weights.values())
        return min(1.0, max(cap - mine, 0.0))

    def summary(self) -> list[dict[str, Any]]:
        """What each per-prompt learner rests on, for the admin API: per route and model,
        the ratings (weighted, the fleet's), the keys they came from, their mean, and the
        expected rating (1-5) on the typical rated prompt of the route and how far it
        spreads between the route's rated prompts (a learner that tells prompts apart
        spreads its expectations)."""
        out = []
        for route, learners in self.posteriors.items():
            together = Evidence()
            for posterior in learners.values():
                together.add(posterior.own)
                together.add(posterior.peers)
            # x[0] is 1 for every prompt: row 0 of sum(w x xT) is sum(w x), so the
            # typical rated prompt is that over sum(w).
            typical = together.xx[0] / together.n if together.n else None
            for model, posterior in learners.items():
                n = posterior.n
                keys = set(posterior.own.keys) | set(posterior.peers.keys)
                mean = float(posterior.own.xy[0] + posterior.peers.xy[0]) / n if n else None
                expected = spread = None
                if typical is not None:
                    expected = 1 + 4 * float(typical @ posterior.mean)
                    # E[(x.m)^2] over rated prompts, from the second moments
                    second = float(posterior.mean @ together.xx @ posterior.mean) / together.n
                    spread = 4 * math.sqrt(max(second - (expected - 1) ** 2 / 16, 0.0))
                out.append(
                    {
                        "route": route,
                        "model": model,
                        "ratings": round(n, 3),
                        "keys": len(keys),
                        "mean_rating": None if mean is None else round(1 + 4 * mean, 3),
                        "expected_typical": None if expected is None else round(expected, 3),
                        "expected_spread": None if spread is None else round(spread, 3),
                    }
                )
        return out

    # -- the fleet -----------------------------------------------------------------------
    def state(self) -> list[tuple[str, str, dict[str, Any]]]:
        """This process's own evidence: (route, model, data) for each that has some."""
        return [
            (route, model, posterior.own.to_dict())
            for route, learners in self.posteriors.items()
            for model, posterior in learners.items()
            if posterior.own.n > 0
        ]

    def set_peers(self, peers: Mapping[tuple[str, str], Sequence[Evidence]]) -> None:
        """Take in the rest of the fleet's evidence per (route, model), replacing what
        was taken in before; recomputes the posteriors that changed (O(D^3) each)."""
        for route, learners in self.posteriors.items():
            for model, posterior in learners.items():
                parts = peers.get((route, model), ())
                total = Evidence()
                for part in parts:
                    total.add(part)
                if total.n != posterior.peers.n or not np.array_equal(total.xy, posterior.peers.xy):
                    posterior.set_peers(total)
