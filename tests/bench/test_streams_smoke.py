"""Smoke test of the long-streams benchmark (bench/streams.py): it starts nginx with its
echo module, Gatewise, the pass-through and the two references (an nginx proxy and
bench/relay.py's byte relay), holds streams open and reports every number for each.
No timing assertions: this machine's numbers belong in bench/README.md."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bench.streams import ECHO_MODULE
from tests.bench.test_overhead_smoke import _run

NUMBERS = ("ttfb_p50_ms", "ttfb_p99_ms", "gap_p50_ms", "gap_p99_ms", "gap_max_ms",
           "health_p99_ms", "probe_floor_p99_ms", "cpu_pct", "rss_kib_per_stream",
           "cpu_us_per_event", "held_us_per_event", "gc_max_ms", "gc_max_cpu_ms")  # fmt: skip


def needs_nginx() -> None:
    if shutil.which("nginx") is None or shutil.which("taskset") is None or not ECHO_MODULE.exists():
        reason = "nginx with its echo module (libnginx-mod-http-echo) and taskset are needed"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def test_a_short_run_holds_streams_through_every_target_and_reports_them(tmp_path: Path) -> None:
    needs_nginx()
    out = tmp_path / "streams.json"
    proc = _run(
        ["bench/streams.py", "--streams", "40", "--duration", "14", "--loaders", "1",
         "--targets", "gatewise,passthrough,nginx,relay", "--probe-port", "--json", str(out)],
        timeout=240,
    )  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    targets = ["gatewise", "passthrough", "nginx", "relay"]
    assert [(r["target"], r["streams"]) for r in rows] == [(t, 40) for t in targets]
    for row in rows:
        assert row["alive"] and row["errors"] == 0, row
        assert row["completed"] == row["started"] >= 40, row  # every stream read to its end
        assert all(row[k] is not None for k in NUMBERS), row
        # The probe heard the Python targets' collections (nginx has none).
        assert (sum(row["gc_counts"]) > 0) is (row["target"] != "nginx"), row
        # Only Gatewise has a probe port (`--probe-port`), probed beside the clients' port.
        assert (row["probe_port_p99_ms"] is not None) is (row["target"] == "gatewise"), row
    assert "| gatewise | 40 | 0 |" in proc.stdout


def test_anthropic_streams_are_held_through_the_messages_api(tmp_path: Path) -> None:
    """`--api anthropic`: Messages streams asked of Gatewise's /v1/messages, served by an
    `anthropic` provider, read to their message_stop."""
    needs_nginx()
    out = tmp_path / "streams.json"
    _run(
        ["bench/streams.py", "--streams", "40", "--duration", "14", "--loaders", "1",
         "--targets", "gatewise,relay", "--api", "anthropic", "--chunks", "10",
         "--json", str(out)],
        timeout=240,
    )  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [(r["target"], r["api"]) for r in rows] == [
        ("gatewise", "anthropic"),
        ("relay", "anthropic"),
    ]
    for row in rows:
        assert row["alive"] and row["errors"] == 0, row
        assert row["completed"] == row["started"] >= 40, row
        assert all(row[k] is not None for k in NUMBERS), row
