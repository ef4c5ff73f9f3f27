"""`gatewise demo` runs for a bounded time and leaves rankings, a blacklist event,
fallbacks and feedback in the admin API."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx

from tests.support.upstream import free_port


def test_demo_shows_rankings_blacklist_fallbacks_and_feedback(tmp_path) -> None:
    port = free_port()
    db = tmp_path / "demo.db"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "demo",
            "--port",
            str(port),
            "--duration",
            "90",
            "--rate",
            "25",
            "--db",
            str(db),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    seen = {"blacklisted": set(), "fallbacks": 0, "rated": 0, "tops": {}}
    try:
        deadline = time.monotonic() + 75
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read() if proc.stdout else "demo exited")
            try:
                blacklisted = httpx.get(f"{base}/performance/blacklisted", timeout=5).json()
                rows = httpx.get(f"{base}/performance", timeout=5).json()["data"]
                ranks = httpx.get(f"{base}/performance/rankings", timeout=5).json()["rankings"]
                evals = httpx.get(f"{base}/evaluations/summary", timeout=5).json()
            except httpx.TransportError:
                time.sleep(0.2)  # not up yet: poll again
                continue
            seen["blacklisted"] |= {e["model"] for e in blacklisted["data"]}
            seen["fallbacks"] = sum(r["fallbacks"] for r in rows)
            seen["rated"] = evals["overall"]["rated_responses"]
            seen["tops"] = {opt: entries[0]["model"] for opt, entries in ranks.items()}
            if (
                seen["blacklisted"]
                and seen["fallbacks"] > 0
                and seen["rated"] >= 5
                and len(set(seen["tops"].values())) >= 3
            ):
                break
            time.sleep(0.5)  # polling interval while the demo's traffic accumulates
        assert seen["blacklisted"], seen
        assert seen["fallbacks"] > 0, seen
        assert seen["rated"] >= 5, seen
        assert len(set(seen["tops"].values())) >= 3, seen  # rankings differ by criterion
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert "/model-performance" in out
    assert "Demo stopped after" in out
    # The banner stays on screen: the simulated failures' warnings go to the log file.
    assert '"level"' not in out and "blacklisted" not in out, out
    assert f"Logs:            {tmp_path / 'demo.log'}" in out
    assert '"event":"blacklisted"' in (tmp_path / "demo.log").read_text()
