"""Routing's caches (per-model score parts, rankings, the healthy candidates) change
how fast it picks, never what: it follows the explained scores as the state moves."""

from __future__ import annotations

import math
import random

import pytest

from gateway.routing.catalog import Catalog
from gateway.routing.dispatch import ReplyJob
from gateway.routing.scoring import aged, evidence
from gateway.routing.selection import Selector
from providers.base import Endpoint
from tests.gateway.routing.scoring_states import OPTIMIZATIONS, RandomState
from tests.gateway.routing.test_selection import NAMES, TT, World, priors


def test_a_model_whose_stats_changed_is_rescored_once_the_refresh_window_passes() -> None:
    w = World(
        priors(alpha={"accuracy": 9}, beta={"accuracy": 7}, gamma={"accuracy": 6}),
        refresh=0.05,
        blacklist_threshold=1000,  # failing, not benched: only its score can move it
    )
    w.record("beta", 40)
    w.record("gamma", 40)
    w.record("alpha", 40)
    assert w.rank("accuracy") == ["alpha", "beta", "gamma"]
    w.record("alpha", 40, ok=False)
    assert w.rank("accuracy") == ["alpha", "beta", "gamma"]  # within the window: cached
    w.clock.now += 0.06  # the refresh window has passed
    assert w.rank("accuracy") == ["beta", "gamma", "alpha"]
    assert w.rank("accuracy", stream=True) == ["beta", "gamma", "alpha"]


def test_ratings_alone_rescore_a_model() -> None:
    w = World(priors(alpha={"creativity": 8}, beta={"creativity": 7}), refresh=0.05)
    w.record("alpha", 50)
    w.record("beta", 50)
    assert w.rank("creativity") == ["alpha", "beta"]
    w.rate("beta", 300, "creativity", 5)
    w.rate("alpha", 300, "creativity", 1)
    w.clock.now += 0.06  # the refresh window has passed
    assert w.rank("creativity") == ["beta", "alpha"]


def test_an_admin_letting_a_model_back_in_takes_effect_at_once() -> None:
    w = World(priors(alpha={"accuracy": 9}, beta={"accuracy": 8}, gamma={"accuracy": 7}))
    w.bench("alpha")
    assert w.rank("accuracy") == ["beta", "gamma"]
    w.blacklist.clear("alpha")  # the tracker does not hear of it
    assert sorted(w.rank("accuracy")) == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize("seed", range(6))
def test_routing_follows_the_explained_scores(seed: int) -> None:
    state = RandomState(seed, models=4 + 3 * seed)
    selector = Selector(state.tracker, state.blacklist, state.config.selection, refresh_seconds=0)
    target = Catalog(state.config, {}).resolve("m0", TT)
    for step in range(240):
        state.step()
        if step % 20:
            continue
        for optimization in OPTIMIZATIONS:
            for stream in (False, True):
                job = ReplyJob("req", Endpoint.CHAT, target, {"stream": stream},
                               optimization=optimization)  # fmt: skip
                ranked = [m.name for m in selector.rank(job)]
                healthy = [m for m in target.candidates
                           if not state.blacklist.is_blacklisted(m.name)]  # fmt: skip
                explained = state.explained(optimization, stream, healthy)
                first = ["m0"] if "m0" in explained else []
                rest = [m.name for m in healthy if m.name not in first]
                rest.sort(key=explained.__getitem__, reverse=True)
                assert ranked == first + rest


def test_exploration_samples_around_the_explained_scores() -> None:
    w = World(
        priors(alpha={"speed": 6}, beta={"speed": 5.8}, gamma={"speed": 5.6}),
        seed=3,
        exploration_rate=1.0,
    )
    w.record("beta", 30, latency_ms=50.0)
    w.record("gamma", 3, latency_ms=80.0)
    mirror = random.Random(3)  # the same draws as the selector's rng
    for _ in range(30):
        ordered = w.rank("speed")
        mirror.random()  # the draw that decided to explore
        base = w.rankings("speed")
        planned = sorted(base, key=lambda n: base[n].total, reverse=True)
        stats = {n: w.tracker.stats(n, TT) for n in NAMES}
        seq = w.tracker.seq
        seen = {  # the aged evidence, as the exploration bonus sees it
            n: aged(evidence(s, "speed"), s.last_seq, seq) if s else 0.0 for n, s in stats.items()
        }
        sampled = {
            n: base[n].total + mirror.gauss(0.0, 0.3 / math.sqrt(1 + seen[n])) for n in planned
        }
        assert ordered == sorted(planned, key=sampled.__getitem__, reverse=True)
