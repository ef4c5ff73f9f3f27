"""The per-prompt ceiling: its PGR is the issue's definition and its ridge is the least
squares one, and on the recorded data it runs and reports every line."""

from __future__ import annotations

import numpy as np
import pytest

from bench.pgr_ceiling import half_to_strong_pgr, main, ridge
from bench.replay_data import DATA_DIR


def test_pgr_is_the_share_of_the_quality_gap_recovered() -> None:
    weak = np.array([0.0, 1.0, 0.0, 1.0])
    strong = np.array([1.0, 1.0, 1.0, 0.0])  # q_weak 0.5, q_strong 0.75
    # The strong model on prompts 0 and 2 (where only it is right): q = 1.0.
    assert half_to_strong_pgr(np.array([4.0, 1, 3, 2]), weak, strong) == pytest.approx(2.0)
    # On 1 and 3 (where it gains nothing, or loses): q = (0 + 1 + 0 + 0) / 4 = 0.25.
    assert half_to_strong_pgr(np.array([1.0, 4, 2, 3]), weak, strong) == pytest.approx(-1.0)


def test_ridge_is_least_squares_with_the_prior_as_extra_rows() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 6)), rng.normal(size=40)
    for lam in (0.5, 10.0):
        stacked = np.vstack([x, np.sqrt(lam) * np.eye(6)])
        expected = np.linalg.lstsq(stacked, np.concatenate([y, np.zeros(6)]), rcond=None)[0]
        assert ridge(x, y, lam) == pytest.approx(expected)


@pytest.mark.skipif(not (DATA_DIR / "gsm8k.jsonl").exists(), reason="RouteLLM data not here")
def test_on_the_recorded_answers_it_reports_both_sets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--train", "120,250", "--repeats", "3"]) == 0
    out = capsys.readouterr().out
    gsm8k, mt_bench = out.split("mt_bench: 160 prompts")
    assert "gsm8k: 1319 prompts" in gsm8k
    assert "| 250 | gateway's | 10 |" in gsm8k and "| 120 | gateway's | 10 |" in gsm8k
    assert "| 120 | gateway's | 10 |" in mt_bench
    assert "| 250 |" not in mt_bench  # 250 of 160 turns cannot be had
