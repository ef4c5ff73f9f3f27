"""bench/experiments.py, small: it runs through the gateway's own Experiments object,
writes its results, and a real 0.3-point lift is found while identical arms are not
told apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.experiments import expected_rating, lifted_quality, main


def test_the_lift_is_the_issues_on_the_quality_benchmarks_rating_scale() -> None:
    control = 0.6
    assert expected_rating(control) == pytest.approx(3.4, abs=0.01)
    assert expected_rating(lifted_quality(control, 0.3)) - expected_rating(control) == (
        pytest.approx(0.3, abs=1e-6)
    )


def test_a_small_run_finds_the_lift_and_no_false_winner(tmp_path: Path) -> None:
    out = tmp_path / "experiments.json"
    code = main(["--runs", "30", "--horizon", "800", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["aa"]["runs"] == result["power"]["runs"] == 30
    assert result["aa"]["winner"] <= 0.05 and result["aa_strict"]["winner"] <= 0.05
    assert result["power"]["challenger_within_promise"] >= 0.8
    assert result["power"]["wrong_winner"] == 0
    assert code == 0
