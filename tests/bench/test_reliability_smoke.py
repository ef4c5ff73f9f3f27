"""bench/reliability.py inbound runs: small numbers, the same measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_inbound_benchmark_measures_silent_connections_and_header_bombs(
    tmp_path: Path,
) -> None:
    out = tmp_path / "reliability.json"
    cmd = [sys.executable, str(ROOT / "bench" / "reliability.py"), "inbound", "--silent", "60",
           "--max-connections", "20", "--header-timeout", "2", "--wait", "10",
           "--bomb-mib", "32", "--bombs", "1", "--slow", "30", "--body-timeout", "2",
           "--json", str(out)]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("| `python bench/reliability.py inbound") == 3  # three table rows
    measured = json.loads(out.read_text())["inbound"]
    silent = measured["silent"]
    assert silent["silent_opened"] == 60
    # The worker holds 20: the kept-alive client and 19 silent ones; the rest are refused.
    assert silent["held"] >= 19 and silent["refused_503"] > 0
    assert silent["held"] + silent["refused_503"] == 60
    assert silent["kept_alive_served_after"] is True and silent["new_client_status"] == 503
    assert 1.5 < silent["all_silent_closed_after_s"] < 10
    assert silent["new_client_served_after_s"] is not None
    bombs = measured["bombs"]
    assert [bomb["sent_mib"] < 32 for bomb in bombs["each"]] == [True]
    assert bombs["headers_10000_status"] == "431"
    slow = measured["slow_bodies"]
    # 19 slow bodies held (and the kept-alive client), the rest refused; the held ones
    # answered 408 at the body timeout and closed.
    assert slow["slow_opened"] == 30 and slow["still_open_at_end"] == 0
    assert set(slow["answers"]) == {"408", "503"} and sum(slow["answers"].values()) == 30
    assert slow["answers"]["408"] >= 18
    assert 1.5 < slow["all_slow_closed_after_s"] < 10
    assert slow["new_client_served_after_s"] is not None


def test_the_bodies_benchmark_measures_large_bodies_held_at_once(tmp_path: Path) -> None:
    out = tmp_path / "bodies.json"
    # 1 MiB of `[{},...]` is estimated at ~97 MB parsed: 150 MB holds one at a time.
    cmd = [sys.executable, str(ROOT / "bench" / "reliability.py"), "bodies", "--clients", "4",
           "--body-mib", "1", "--hold", "3", "--max-body-memory", "150000000",
           "--json", str(out)]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("| `python bench/reliability.py bodies") == 1
    measured = json.loads(out.read_text())["bodies"]
    assert measured["answers"] == {"200": 1, "503": 3}
    assert set(measured["short_chats"]) == {"200"} and measured["peak_rss_mib"] > 0


def test_the_answers_benchmark_measures_large_answers_held_at_once(tmp_path: Path) -> None:
    out = tmp_path / "answers.json"
    # 1 MiB of embeddings is charged ~4 MB raw and parsed: 6 MB holds one at a time.
    cmd = [sys.executable, str(ROOT / "bench" / "reliability.py"), "answers", "--clients", "3",
           "--answer-mib", "1", "--trickle", "1", "--max-body-memory", "6000000",
           "--json", str(out)]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("| `python bench/reliability.py answers") == 1
    measured = json.loads(out.read_text())["answers"]
    assert set(measured["statuses"]) <= {"200", "503"} and measured["statuses"].get("503", 0) >= 1
    assert sum(measured["statuses"].values()) == 3
    assert set(measured["short_chats"]) == {"200"} and measured["peak_rss_mib"] > 0


def test_the_answers_benchmark_measures_streams_of_one_large_event(tmp_path: Path) -> None:
    out = tmp_path / "frames.json"
    # A 1 MiB event is charged ~2 MiB while it is held: 3 MB holds one at a time.
    cmd = [sys.executable, str(ROOT / "bench" / "reliability.py"), "answers", "--stream",
           "--clients", "3", "--answer-mib", "1", "--trickle", "1",
           "--max-body-memory", "3000000", "--json", str(out)]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("| `python bench/reliability.py answers --stream") == 1
    assert "streams, each one event of 1 MiB" in result.stdout
    measured = json.loads(out.read_text())["answers"]
    statuses = measured["statuses"]
    assert set(statuses) <= {"200", "200 cut"} and statuses.get("200 cut", 0) >= 1
    assert sum(statuses.values()) == 3
    assert set(measured["short_chats"]) == {"200"}
