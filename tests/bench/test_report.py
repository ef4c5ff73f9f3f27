"""bench/report.py: the ratios that explain the two-worker result."""

from __future__ import annotations

import pytest

from bench.report import ratios, summarize


def _round(target: str, rps: float, cpu: float, **extra: float) -> dict:
    c50 = {"rps": rps, "p50_ms": 1.0, "p99_ms": 2.0}
    return {"round": 1, "target": target, "c50": c50, "cpu_us_per_req": cpu, "errors": 0, **extra}


def test_the_two_worker_ceiling_comes_from_what_the_rest_needs_per_request() -> None:
    rounds = [
        _round("gatewise", 5000, 200.0, cpu_target_pct=100.0),
        # Two workers at 210 us each got 1.6 CPUs; nginx, wrk and the kernel took 50 us
        # per request of the same two CPUs.
        _round("gatewise-2w", 7600, 210.0, cpu_target_pct=160.0, rest_cpu_us_per_req=50.0),
    ]
    out = ratios(rounds, summarize(rounds))
    assert out["gatewise_2w_vs_1w_rps"] == pytest.approx(1.52)
    assert out["gatewise_2w_cores"] == pytest.approx(1.6)
    assert out["gatewise_2w_ceiling"] == pytest.approx(2 / (1 + 50 / 200))


def test_no_ceiling_without_a_two_worker_run() -> None:
    rounds = [_round("gatewise", 5000, 200.0)]
    assert ratios(rounds, summarize(rounds))["gatewise_2w_ceiling"] is None
