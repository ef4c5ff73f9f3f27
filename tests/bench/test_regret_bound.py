"""The replay's lower bound: its divergence is scipy's, and on the recorded data it says
what issue 22's goal asks of a router that keeps re-testing."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from scipy.stats import entropy

from bench.regret_bound import kl_divergence, main, weak_calls_bound
from bench.replay_data import DATA_DIR


def test_the_divergence_is_scipys_on_the_smoothed_counts() -> None:
    p, q = Counter({5: 116, 4: 18, 3: 4, 2: 3, 1: 19}), Counter({5: 145, 4: 4, 2: 1, 1: 10})
    smooth = [[c[k] + 0.5 for k in range(1, 6)] for c in (p, q)]
    assert kl_divergence(p, q) == pytest.approx(entropy(smooth[0], smooth[1]))
    assert kl_divergence(p, p) == 0.0


def test_the_bound_halves_with_twice_the_information() -> None:
    assert weak_calls_bound(0.1, 0.5, 300, 600) == pytest.approx(math.log(2) / 0.05)
    once = weak_calls_bound(0.1, 0.5, 300, 600)
    assert weak_calls_bound(0.2, 0.5, 300, 600) == pytest.approx(once / 2)


@pytest.mark.skipif(not (DATA_DIR / "gsm8k.jsonl").exists(), reason="RouteLLM data not here")
def test_on_the_recorded_answers_95_percent_is_out_of_reach_on_mt_bench(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 0
    lines = capsys.readouterr().out.splitlines()[2:]
    rows = {line.split("|")[1].split()[0]: line for line in lines}
    share = {name: float(row.split("|")[-2].split()[0]) for name, row in rows.items()}
    assert share["mt_bench"] < 90 < share["gsm8k"] < 95.5
