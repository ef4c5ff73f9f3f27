"""The routing fast path: a RankingTable's totals are the explained scores, and it
recomputes a model's parts exactly when that model's stats changed."""

from __future__ import annotations

import random

import pytest

from gateway.routing.ranking_table import FEW, REANCHOR, RankingTable
from gateway.routing.scoring import BONUS
from gateway.routing.tracker import Stats
from tests.gateway.routing.scoring_states import OPTIMIZATIONS, TT, RandomState


def table(state: RandomState, optimization: str, stream: bool) -> RankingTable:
    prior_weight = state.config.selection.prior_weight
    return RankingTable(state.models, TT, optimization, stream, prior_weight)


def fast(state: RandomState, t: RankingTable) -> dict[str, float]:
    t.sync(state.tracker)
    c = state.config.selection.exploration_bonus * BONUS[t.optimization]
    totals = t.totals(state.tracker.seq, c)
    return {m.name: total for m, total in zip(t.models, totals, strict=True)}


def best_first(totals: dict[str, float], names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: totals[n], reverse=True)


@pytest.mark.parametrize("seed", range(12))
def test_fast_totals_equal_the_explained_ones_as_the_state_changes(seed: int) -> None:
    state = RandomState(seed, models=3 + seed)
    tables = {(o, s): table(state, o, s) for o in OPTIMIZATIONS for s in (False, True)}
    names = [m.name for m in state.models]
    gaps = random.Random(seed)  # between rescorings: one change, a few, or many
    due = 0
    for step in range(400):
        state.step()
        if step < due:
            continue
        due = step + gaps.choice([1, 1, 2, 5, 10, FEW, FEW + 1, 40, 90])
        for (optimization, stream), t in tables.items():
            explained = state.explained(optimization, stream)
            got = fast(state, t)
            assert got == pytest.approx(explained, rel=1e-12, abs=1e-15), (optimization, stream)
            assert [m.name for m in t.ranked(state.tracker.seq, _c(state, t))] == best_first(
                explained, names
            )


def _c(state: RandomState, t: RankingTable) -> float:
    return state.config.selection.exploration_bonus * BONUS[t.optimization]


def test_only_the_models_whose_stats_changed_are_recomputed() -> None:
    state = RandomState(1, models=6)
    for _ in range(200):
        state.step()
    t = table(state, "accuracy", False)
    assert t.sync(state.tracker) == 6  # first use: every model
    assert t.sync(state.tracker) == 0
    state.tracker.add_feedback("m2", TT, {"accuracy": 5.0})
    assert t.sync(state.tracker) == 1
    state.tracker.add_auto_score("m4", TT, 0.1)
    state.tracker.add_auto_score("m4", TT, 0.2)
    assert t.sync(state.tracker) == 1
    assert fast(state, t) == pytest.approx(state.explained("accuracy", False), rel=1e-12)


def test_a_model_seen_for_the_first_time_is_picked_up() -> None:
    state = RandomState(2, models=4)
    t = table(state, "speed", False)
    before = fast(state, t)
    assert before == pytest.approx(state.explained("speed", False))  # priors alone
    state.step()  # creates the first Stats object (the tracker's generation moves)
    assert fast(state, t) == pytest.approx(state.explained("speed", False), rel=1e-12)


def test_peers_taken_in_replace_the_stats_a_table_holds() -> None:
    state = RandomState(3, models=5)
    for _ in range(100):
        state.step()
    t = table(state, "cost", False)
    fast(state, t)
    peer = Stats.from_dict(state.tracker.own()[("m1", TT)].to_dict(), state.clock)
    peer.usage_count = 10_000  # a peer that has seen much more of m1
    peer.completion_tokens = 10_000 * 50_000
    peer.completion_ewma = 50_000.0
    state.tracker.set_peers({("m1", TT): [(peer, 1.0)]})
    assert fast(state, t) == pytest.approx(state.explained("cost", False), rel=1e-12)


def test_a_table_made_late_in_the_tracker_s_life_ages_from_there() -> None:
    state = RandomState(5, models=4)
    for _ in range(2 * REANCHOR + 5):
        state.step()
    t = table(state, "accuracy", True)
    assert fast(state, t) == pytest.approx(state.explained("accuracy", True), rel=1e-12)


def test_aging_stays_exact_across_many_anchors() -> None:
    state = RandomState(4, models=5)
    t = table(state, "creativity", False)
    for _ in range(3 * REANCHOR + 17):
        state.step()
        if state.tracker.seq % 500 == 0:
            fast(state, t)
    assert fast(state, t) == pytest.approx(state.explained("creativity", False), rel=1e-12)
