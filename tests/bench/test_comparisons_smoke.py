"""bench/comparisons.py: runs, and recovers the order of three simulated models."""

from __future__ import annotations

import json
from pathlib import Path

from bench.comparisons import MODELS, main, run_once, strengths, summarise, win_rate


def test_the_simulated_models_have_the_stated_win_rates() -> None:
    theta = strengths(0.6)
    assert abs(win_rate(theta, "A", "B") - 0.6) < 1e-12
    assert abs(win_rate(theta, "B", "C") - 0.6) < 1e-12
    assert abs(win_rate(theta, "A", "C") - 0.6923) < 1e-4


def test_far_apart_models_are_ordered_quickly_and_right() -> None:
    theta = strengths(0.85)
    runs = [
        run_once(seed, theta, ties=0.1, design="all", step=10, max_judgements=2000)
        for seed in range(1, 11)
    ]
    summary = summarise(runs, 2000)
    assert summary["decided"] == 10 and summary["wrong"] == 0
    assert summary["judgements_p95"] is not None and summary["judgements_p95"] < 300
    assert all(r["order"] == MODELS for r in runs)


def test_close_models_are_not_declared_ordered_from_a_handful(tmp_path: Path) -> None:
    """The command writes its result; with a cap of 30 judgements near-equal models are
    never decided (an order from 30 coin flips would be a false claim)."""
    out = tmp_path / "cmp.json"
    assert main(["--seeds", "5", "--adjacent", "0.52", "--max", "30", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["runs"] == 5 and result["decided"] == 0
    assert result["win_rates"]["A>B"] == 0.52 and len(result["runs_detail"]) == 5
