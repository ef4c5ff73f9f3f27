"""Smoke test of the benchmarks: they start, measure and report. No timing assertions.

Needs Debian's wrk and nginx (bench/README.md); without them the test is skipped,
except in CI (CI set), where that is a failure: .ci/run installs them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("direct", "passthrough", "gatewise")
METRICS = ("rps", "p50_ms", "p99_ms", "c1_p50_ms", "cpu_us_per_req", "ttfb_c1_ms",
           "stream_total_c1_ms", "stream_load_rps", "rss_worker_mb", "startup_ms")  # fmt: skip


def _require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    reason = f"{', '.join(missing)} not installed (apt-get install wrk nginx-light)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install them")
    pytest.skip(reason)


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the benchmark stops the servers it started
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"{args[0]} did not finish in {timeout} s\n{out[-4000:]}\n{err[-4000:]}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-4000:]}\n{err[-4000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_overhead_quick_run_measures_every_target(tmp_path: Path) -> None:
    _require("wrk", "nginx", "taskset", "chrt")
    out = tmp_path / "overhead.json"
    proc = _run(
        ["bench/overhead.py", "--quick", "--skip-litellm", "--targets", ",".join(TARGETS),
         "--json", str(out)],
        timeout=300,
    )  # fmt: skip
    doc = json.loads(out.read_text())
    assert {"meta", "rounds", "summary", "ratios", "checks", "valid", "errors"} <= doc.keys()
    assert doc["valid"] is True and doc["errors"] == 0, doc["rounds"]
    assert list(doc["summary"]) == list(TARGETS)
    for name in TARGETS:
        row = doc["summary"][name]
        for key in METRICS:
            assert isinstance(row[key], int | float) and row[key] > 0, (name, key, row)
        assert row["errors"] == 0
    for m in doc["rounds"]:
        assert m["c50"]["non2xx"] == 0 and m["c50"]["requests"] > 0
        assert m["stream_c1"]["n"] > 0 and m["stream_c1"]["errors"] == 0
    ratios = doc["ratios"]
    assert ratios["gatewise_vs_passthrough_rps"] > 0
    for key in ("gatewise_added_c1_p50_ms", "gatewise_ttfb_delta_ms"):
        assert isinstance(ratios[key], int | float)
    assert ratios["gatewise_vs_litellm_rps"] is None  # LiteLLM was skipped
    assert {c["result"] for c in doc["checks"]} <= {"PASS", "FAIL", "n/a"}
    assert len(doc["checks"]) == len(report.LIMITS) == 10  # solo, keys, baseline: 3 more
    for name in TARGETS:
        assert f"| {name} |" in proc.stdout


def test_selection_bench_reports_every_optimization(tmp_path: Path) -> None:
    out = tmp_path / "selection.json"
    proc = _run(
        ["bench/selection_bench.py", "--iterations", "20", "--attempts", "5",
         "--json", str(out)],
        timeout=120,
    )  # fmt: skip
    doc = json.loads(out.read_text())
    assert doc["models"] == 100
    assert set(doc["results"]) == {"accuracy", "cost", "speed", "creativity", "continuity"}
    for result in doc["results"].values():
        assert result["cold_median_us"] > 0 and result["warm_median_us"] > 0
        assert result["full_median_us"] > 0
        assert isinstance(result["pass"], bool)
    assert "| accuracy |" in proc.stdout


def test_soak_quick_run_samples_memory_and_store(tmp_path: Path) -> None:
    _require("wrk", "nginx", "taskset", "chrt")
    out = tmp_path / "soak.json"
    _run(["bench/soak.py", "--minutes", "0.1", "--slice", "2", "--json", str(out)], timeout=120)
    doc = json.loads(out.read_text())
    assert {"samples", "rss_growth", "errors", "pass"} <= doc.keys()
    assert len(doc["samples"]) >= 2 and doc["errors"] == 0
    assert all(s["rss_mb"] > 0 and s["store_mb"] > 0 and s["rps"] > 0 for s in doc["samples"])
