"""Soak: Gatewise under steady load for minutes, sampling its resident memory and the
size of its SQLite store, to show both stay flat (RSS within 10 %) or grow only by
what retention allows.

    python bench/soak.py                 # 10 minutes at 50 connections
    python bench/soak.py --minutes 1 --slice 5
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness
from bench.overhead import BENCH, CHAT, Bench

__all__ = ["main"]


def rss_mb(child: harness.Child) -> float:
    """Current resident memory (VmRSS) of the gateway's processes, in MB."""
    total = 0.0
    for pid in child.pids():
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total


def store_mb(workdir: Path) -> float:
    return sum(p.stat().st_size for p in workdir.rglob("*.db*") if p.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--slice", type=int, default=30, help="seconds between samples")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    for tool in ("nginx", "wrk", "taskset", "chrt"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            print(f"soak: {tool} is not installed", file=sys.stderr)
            return 2
    cores = sorted(os.sched_getaffinity(0))
    slices = max(2, int(args.minutes * 60 / args.slice))
    samples: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gatewise-soak-") as tmp:
        bench = Bench(argparse.Namespace(load_policy="batch"), Path(tmp), cores)
        try:
            bench.start_upstream()
            child, port, key, model, _ = bench.launch("gatewise", 1)
            assert child is not None
            url = f"http://127.0.0.1:{port}{CHAT}"
            for i in range(slices):
                run = harness.wrk(url, args.connections, args.slice, model, key, bench.load_cpus)
                sample = {
                    "t_s": (i + 1) * args.slice,
                    "rps": round(run.get("rps", 0)),
                    "errors": run.get("errors", 0),
                    "rss_mb": round(rss_mb(child), 1),
                    "store_mb": round(store_mb(Path(tmp) / "gatewise-1"), 1),
                }
                samples.append(sample)
                print(json.dumps(sample), flush=True)
        finally:
            bench.close()
    # Growth is judged after the first sample: warm-up fills bounded caches by design.
    first, last = samples[0]["rss_mb"], samples[-1]["rss_mb"]
    growth = (last - first) / first if first else 0.0
    errors = sum(s["errors"] for s in samples)
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "minutes": args.minutes,
        "samples": samples,
        "rss_growth": round(growth, 4),
        "errors": errors,
        "pass": growth <= 0.10 and errors == 0,
    }
    print(
        f"RSS {first} -> {last} MB ({growth:+.1%} after the first sample), "
        f"store {samples[0]['store_mb']} -> {samples[-1]['store_mb']} MB, errors {errors}: "
        f"{'PASS' if result['pass'] else 'FAIL'} (goal: <= 10 % growth, no errors)"
    )
    path = args.json or BENCH / "results" / f"soak-{datetime.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return 0 if errors == 0 else 1  # like overhead.py: non-zero only for an invalid run


if __name__ == "__main__":
    sys.exit(main())
