"""bench/prompt_routing.py: its figures mean what bench/README.md says (PGR, the gap to
random mixing, the oracle), and a short run over the real data produces them all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from bench.prompt_routing import DATA, Item, _segment, main


def item(weak: float, strong: float) -> Item:
    return Item(np.zeros(1), (weak, strong), (1, 1), (1.0, 10.0))


def test_pgr_and_the_gap_to_random_mixing() -> None:
    # Weak right on the first two, strong on all but the last; served: strong on the
    # two prompts weak gets wrong, weak on the others: the oracle's choices.
    items = [item(1, 1), item(1, 0), item(0, 1), item(0, 1)]
    served = [(items[0], 0), (items[1], 0), (items[2], 1), (items[3], 1)]
    figures = _segment(served)
    assert figures["quality"] == 1.0 == figures["q_oracle"]
    assert (figures["q_weak"], figures["q_strong"]) == (0.5, 0.75)
    assert figures["strong_share"] == 0.5
    assert figures["pgr"] == pytest.approx((1.0 - 0.5) / (0.75 - 0.5))
    assert figures["gap_to_random"] == pytest.approx(1.0 - (0.5 + 0.5 * 0.25))
    assert figures["cost_per_1k"] == pytest.approx(1000 * (1 + 1 + 10 + 10) / 4)
    # Either model alone is an end of the random-mix line: no gap, PGR 0 and 1.
    for k in (0, 1):
        alone = _segment([(i, k) for i in items])
        assert alone["gap_to_random"] == pytest.approx(0.0)
        assert alone["pgr"] == pytest.approx(k)


@pytest.mark.skipif(not (DATA / "mt_bench.jsonl").exists(), reason="RouteLLM data not here")
def test_a_short_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert main(["--data", "mt_bench", "--seeds", "2", "--checkpoints", "50",
                 "--tolerance", "0,0.3", "--json", str(out)]) == 0  # fmt: skip
    report = orjson.loads(out.read_bytes())["mt_bench"]
    assert set(report) == {
        "online tolerance=0.0 first_half", "online tolerance=0.0 second_half",
        "online tolerance=0.3 first_half", "online tolerance=0.3 second_half",
        "held-out after 50 ratings",
    }  # fmt: skip
    held = report["held-out after 50 ratings"]
    assert held["strong_share"][0] == 0.5  # exactly half, by the expected gain
    for key in ("quality", "pgr", "gap_to_random", "q_oracle", "cost_per_1k"):
        assert np.isfinite(held[key][0])
