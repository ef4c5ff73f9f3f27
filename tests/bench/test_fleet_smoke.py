"""bench/fleet.py runs: two replicas on one SQLite file, one trial of each measurement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_fleet_benchmark_measures_all_three_propagations(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    cmd = [sys.executable, str(ROOT / "bench" / "fleet.py"), "--trials", "1",
           "--store", "sqlite", "--json", str(out)]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(out.read_text())["sqlite"]
    assert set(measured) == {"bench", "let_back", "rating"}
    for row in measured.values():
        assert row["trials"] == 1 and 0 < row["median_ms"] <= row["max_ms"] < 30_000
