"""The in-process simulation of the routing-quality scenarios (bench/quality_sim.py).

It stands in for the real run when judging selection changes over hundreds of seeds, so
these tests check that it routes through the gateway's own selection and feeds it what
the real run would: answers in flight, and ratings from the same truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.quality_metrics import measure
from bench.quality_scenarios import build_scenarios
from bench.quality_sim import simulate
from tests.bench.test_quality_smoke import run_quick


@pytest.fixture(scope="module")
def scenarios():
    return build_scenarios(quick=True)


def test_gatewise_learns_from_the_ratings_round_robin_ignores(scenarios) -> None:
    sc = scenarios["accuracy"]
    gw = measure(simulate(sc, "gatewise", seed=3))
    rr = measure(simulate(sc, "round-robin", seed=3))
    assert gw["requests"] == rr["requests"] == sc.requests
    assert gw["ratings"] > 0 and rr["ratings"] > 0
    # Round-robin serves each of the 4 models a quarter of the time; the gateway, which
    # only learns the truth from the ratings, sends most requests to the best model.
    assert set(rr["served"].values()) == {0.25}
    assert gw["best_share_after_200_ratings"] > 0.6
    assert gw["regret"] < rr["regret"] / 2


def test_speed_and_cost_are_learnt_from_the_answers(scenarios) -> None:
    for name in ("speed", "cost"):
        gw = measure(simulate(scenarios[name], "gatewise", seed=1))
        assert gw["ratings"] == 0, name
        assert gw["best_share_after_warmup"] > 0.6, name


def test_ratings_arrive_after_the_answers_in_flight(scenarios) -> None:
    """Eight requests are sent before the first answer (and its rating) is in."""
    run = simulate(scenarios["accuracy"], "gatewise", seed=1, concurrency=8)
    assert [r.ratings_before for r in run.records[:8]] == [0] * 8
    first_rated = next(i for i, r in enumerate(run.records) if r.rated)
    assert run.records[first_rated + 8].ratings_before >= 1


def test_the_same_seed_gives_the_same_run(scenarios) -> None:
    a = simulate(scenarios["accuracy"], "gatewise", seed=5)
    b = simulate(scenarios["accuracy"], "gatewise", seed=5)
    assert [r.model for r in a.records] == [r.model for r in b.records]


def test_outages_are_left_to_the_real_run(scenarios) -> None:
    with pytest.raises(ValueError, match="real run"):
        simulate(scenarios["outage"], "gatewise", seed=1)


def test_seeds_runner_simulates_with_sim(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    run_quick("bench/quality_seeds.py", out, "--sim", "--seeds", "1-3")
    report = json.loads(out.read_text())
    assert report["mode"] == "quick simulated"
    assert [r["seed"] for r in report["runs"]] == [1, 2, 3]
    assert report["summary"]["runs"] == 3
