"""bench/ab.py runs: two targets on one CPU at once, every step in alternating order."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench.test_overhead_smoke import _require, _run


def test_two_rounds_measure_both_targets_first_in_turn(tmp_path: Path) -> None:
    _require("wrk", "nginx", "git")
    out = tmp_path / "ab.json"
    result = _run(
        ["bench/ab.py", "--a", "gatewise", "--b", "gatewise-baseline", "--baseline", "HEAD",
         "--rounds", "2", "--duration", "1", "--warmup", "1", "--json", str(out)],
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(out.read_text())
    rounds = summary["rounds"]
    assert [r["first"] for r in rounds] == ["gatewise", "gatewise-baseline"]
    for r in rounds:
        for target in ("gatewise", "gatewise-baseline"):
            assert r[target]["requests"] > 0 and r[target]["cpu_us_per_req"] > 0
        assert (
            r["cpu_ratio"]
            == r["gatewise"]["cpu_us_per_req"] / r["gatewise-baseline"]["cpu_us_per_req"]
        )
    assert summary["errors"] == 0
    assert "CPU per request" in result.stdout
