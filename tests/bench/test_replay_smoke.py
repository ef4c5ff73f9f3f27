"""Smoke test of the real-data replay: a short run through real gateway processes
completes and reports every measure per half. No target is asserted here; the numbers
are for bench/README.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.replay_data import DATA_DIR

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (DATA_DIR / "gsm8k.jsonl").exists(), reason=f"no recorded answers in {DATA_DIR}"
)


def test_a_short_replay_reports_quality_cost_and_the_reference_lines(tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    proc = subprocess.run(
        [sys.executable, "bench/replay.py", "--seeds", "1", "--prompts", "40",
         "--tolerances", "0.2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| data | setting | half |" in proc.stdout
    report = json.loads(out.read_text())
    assert report["mode"] == "real gateway"
    assert set(report["data"]) == {"gsm8k", "mt_bench"}
    for name, data in report["data"].items():
        assert set(data["settings"]) == {"accuracy", "cost, tolerance 0.2"}, name
        for setting, block in data["settings"].items():
            [run] = block["runs"]
            halves = run["halves"]
            assert halves["all"]["answered"] == 40, (name, setting)  # every request served
            assert halves["first"]["requests"] == halves["second"]["requests"] == 20
            for part in halves.values():
                assert 0 <= part["strong_share"] <= 1
                assert part["cost_per_1k"] > 0
                assert part["always_weak"]["cost_per_1k"] < part["always_strong"]["cost_per_1k"]
                # What random mixing gives at this share, plus the gap, is the quality.
                mix = part["always_weak"]["quality"] + part["strong_share"] * (
                    part["always_strong"]["quality"] - part["always_weak"]["quality"]
                )
                assert part["quality"] == pytest.approx(mix + part["random_mix_gap"])
                assert part["oracle"]["quality"] >= max(
                    part["always_weak"]["quality"], part["always_strong"]["quality"]
                )
            summary = block["summary"]
            assert summary["runs"] == 1
            assert summary["second"]["runs_strong_share_at_least_95"] in (0, 1)


def test_route_options_reach_the_route(tmp_path: Path) -> None:
    """A routing mode switched per run (e.g. per-prompt routing) goes in the route's
    YAML; an option the gateway does not know fails the run loudly."""
    proc = subprocess.run(
        [sys.executable, "bench/replay.py", "--data", "mt_bench", "--seeds", "1",
         "--prompts", "4", "--route-option", "no_such_option=true",
         "--json", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "no_such_option" in proc.stderr
