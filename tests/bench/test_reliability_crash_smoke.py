"""bench/reliability_crash.py runs: a short load on SQLite, kill -9, restart, counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_crash_benchmark_counts_what_was_acknowledged_and_what_survived(
    tmp_path: Path,
) -> None:
    out = tmp_path / "crash.json"
    cmd = [sys.executable, str(ROOT / "bench" / "reliability_crash.py"), "--seconds", "3",
           "--concurrency", "4", "--store", "sqlite", "--json", str(out)]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(out.read_text())["sqlite"]
    assert measured["ratings"]["acknowledged"] > 0
    assert measured["benched"]["acknowledged"] + measured["let_back"]["acknowledged"] > 0
    # What README.md promises: nothing acknowledged of these is lost.
    for kept in ("ratings", "benched", "let_back"):
        assert measured[kept]["lost"] == 0, measured
