"""Smoke test of the routing-quality benchmark: the quick run completes and reports.

No target or timing is asserted here; the benchmark's own PASS/FAIL lines are for
people reading the report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = {"speed", "cost", "accuracy", "outage"}
STRATEGIES = {"gatewise", "round-robin", "fixed-priority"}


def run_quick(script: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, script, "--quick", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_quick_quality_run_reports_every_scenario_and_strategy(tmp_path: Path) -> None:
    out = tmp_path / "quality.json"
    proc = run_quick("bench/quality.py", out)
    assert "| scenario | strategy |" in proc.stdout
    assert "| target | scenario | measured | goal | result |" in proc.stdout

    report = json.loads(out.read_text())
    assert report["benchmark"] == "routing-quality"
    assert report["mode"] == "quick"
    assert report["duration_seconds"] > 0
    assert set(report["scenarios"]) == SCENARIOS
    for name, scenario in report["scenarios"].items():
        assert scenario["optimization"] in ("speed", "cost", "accuracy")
        assert set(scenario["strategies"]) == STRATEGIES
        for strategy, m in scenario["strategies"].items():
            where = f"{name}/{strategy}"
            assert m["requests"] == scenario["requests"] > 0, where
            assert m["regret"] >= 0, where
            assert 0 <= m["best_share_after_warmup"] <= 1, where
            assert 0 <= m["failures_with_healthy_alternative"] <= m["failures"], where
            assert m["failures"] <= m["requests"], where
            assert m["upstream_attempts"] >= m["requests"] - m["failures"], where
            assert set(m["served"]) == set(scenario["models"]), where
            # shares are rounded to 4 places: each may be up to 0.00005 high
            assert sum(m["served"].values()) <= 1 + 0.00005 * len(m["served"]), where
            if name == "accuracy":
                assert m["ratings"] > 0, where
                assert "best_share_after_200_ratings" in m, where
        outage = scenario["strategies"]["gatewise"].get("outages")
        assert (outage is not None) == (name == "outage")
    for strategy in STRATEGIES:
        [o] = report["scenarios"]["outage"]["strategies"][strategy]["outages"]
        assert o["wasted_attempts"] >= o["wasted_before_moving_away"] >= 0
        assert o["client_failures"] >= 0
        assert {"away_seconds", "back_seconds", "probe_attempts"} <= set(o)
    # Round-robin calls every model of the route and never retries.
    rr = report["scenarios"]["speed"]["strategies"]["round-robin"]
    assert all(share > 0.2 for share in rr["served"].values())
    assert rr["attempts_per_request"] == 1
    assert report["targets"]
    for check in report["targets"]:
        assert {"scenario", "target", "measured", "goal", "passed"} <= set(check)
        assert isinstance(check["passed"], bool)
    assert isinstance(report["all_targets_passed"], bool)


def test_seeds_run_reports_each_seed_and_the_spread(tmp_path: Path) -> None:
    out = tmp_path / "seeds.json"
    proc = run_quick("bench/quality_seeds.py", out, "--seeds", "1-2")
    assert "| seed | best share | by phase | regret ratio |" in proc.stdout
    report = json.loads(out.read_text())
    assert report["scenario"] == "accuracy"
    assert [r["seed"] for r in report["runs"]] == [1, 2]
    for row in report["runs"]:
        assert 0 <= row["best_share"] <= 1
        assert len(row["by_phase"]) == 2
        assert row["regret_ratio"] > 0
    summary = report["summary"]
    assert summary["runs"] == 2
    assert summary["best_share_min"] == min(r["best_share"] for r in report["runs"])
    assert 0 <= summary["best_share_met"] <= 2
    assert 0 <= summary["regret_ratio_met"] <= 2


def test_seed_lists_read_ranges_and_singles() -> None:
    from bench.quality_seeds import seeds

    assert seeds("1-4,9") == [1, 2, 3, 4, 9]
    assert seeds("7") == [7]
