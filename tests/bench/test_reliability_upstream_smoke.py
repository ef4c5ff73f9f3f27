"""bench/reliability_upstream.py runs: a real gateway, a raw upstream, small numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_upstream_reliability_benchmark_measures_rss_around_refused_answers(
    tmp_path: Path,
) -> None:
    out = tmp_path / "reliability.json"
    cmd = [sys.executable, str(ROOT / "bench" / "reliability_upstream.py"), "--oversized", "3",
           "--normal", "20", "--limit-mib", "8", "--json", str(out)]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(out.read_text())
    assert measured["oversized_answers"] == 3 and measured["transport"] == "native"
    rss = measured["rss_mib"]
    assert min(rss.values()) > 0
    # 3 refused bodies of 8 MiB: nothing of them may stay resident
    assert rss["after_oversized"] - rss["baseline"] < 8, rss
