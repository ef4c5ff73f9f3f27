"""Smoke test of the stopping benchmark (bench/shutdown.py): a worker holding streams
from nginx gets SIGTERM; every stream is told at the deadline and stored as such. No
timing assertions: this machine's numbers belong in bench/README.md."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench.test_overhead_smoke import _run
from tests.bench.test_streams_smoke import needs_nginx


def test_a_short_run_ends_every_stream_with_its_reason_and_stores_it(tmp_path: Path) -> None:
    needs_nginx()
    out = tmp_path / "shutdown.json"
    _run(["bench/shutdown.py", "--streams", "30", "--deadline", "1", "--json", str(out)],
         timeout=120)  # fmt: skip
    [row] = json.loads(out.read_text())
    assert (row["told"], row["whole"], row["cut"]) == (30, 0, 0), row
    assert row["stored"] == {"gateway_stopped": 30}, row
    assert row["told_after_deadline_ms"]["max"] is not None
    assert row["exit_after_signal_s"] >= 1 and not row["traceback_in_log"], row
