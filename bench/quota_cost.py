"""What a limited key's full check costs as the fleet's origins pile up.

    python bench/quota_cost.py [--origins 0,100,1000] [--live 4] [--checks 2000]

A key's full admission check (`Quota._open`: its budget and rate window over every
origin that counted it) runs at its first request of each second. Every process that
ever counted the key is an origin whose row the store keeps, and a restart is a new
origin, so a fleet that restarts often collects hundreds. Here a key has `--origins`
of them that counted it ten days ago (stopped processes) and `--live` that counted it
just now; each check is a new second. In process, CPU time per check, median of 5.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the checkout it lives in is imported
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.core.config import KeyBudget, KeyRateLimit
from gateway.core.keys import Tenant
from gateway.routing.quota import Quota, Usage

__all__ = ["main", "seconds_per_check"]

START = 1_800_000_000.0


def seconds_per_check(origins: int, live: int, checks: int) -> float:
    """CPU seconds of one full check of a key counted by `origins` stopped processes."""
    now = [START]
    quota = Quota(lambda: now[0])
    team = Tenant(
        "team",
        rate_limit=KeyRateLimit(requests_per_minute=10**9, tokens_per_minute=10**12),
        budget=KeyBudget(daily_usd=1e9, monthly_usd=1e10),
    )
    for i in range(origins):
        usage = Usage()
        usage.add(START - 10 * 86400, requests=1, tokens=10, cost=0.01)
        quota.take(f"stopped:{i}", "team", usage)
    for i in range(live):
        usage = Usage()
        usage.add(START, requests=1, tokens=10, cost=0.01)
        quota.take(f"live:{i}", "team", usage)
    quota.admit(team)
    began = time.process_time()
    for _ in range(checks):
        now[0] += 1.0  # a new second: the full check
        quota.admit(team)
    return (time.process_time() - began) / checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--origins", default="0,100,1000")
    parser.add_argument("--live", type=int, default=4)
    parser.add_argument("--checks", type=int, default=2000)
    args = parser.parse_args(argv)
    print("| stopped origins | µs per full check (median of 5) |")
    print("|---:|---:|")
    for origins in (int(n) for n in args.origins.split(",")):
        runs = [seconds_per_check(origins, args.live, args.checks) for _ in range(5)]
        print(f"| {origins:,} | {statistics.median(runs) * 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
