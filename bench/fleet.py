"""How fast the fleet learns as one: two replicas on one store.

    python bench/fleet.py [--trials 20] [--store postgres|sqlite|both] [--json PATH]

Two `gatewise serve` processes share a store (a PostgreSQL schema of their own on
$BENCH_POSTGRES_URL, default the test server, or one SQLite file) with the default
`storage.share_interval` (1 s). Per trial, measured from the moment the triggering
answer is back at the client until the other replica shows the change (polled every
5 ms through its admin API):

- bench: three failing requests through replica A bench the model; until B lists it;
- let-back: `DELETE /performance/blacklisted/{model}` on A; until B no longer lists it;
- rating: a rating posted to B for an answer A gave; until A's metrics count it.

Medians and maxima over the trials. The upstream is the built-in mock (a model that
always fails, one that always answers), so nothing but the gateways is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.harness import serve_gateway  # noqa: E402

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
KEY = "fleet-bench-key"
AUTH = {"authorization": f"Bearer {KEY}"}


def config(url: str) -> dict[str, Any]:
    return {
        "server": {"api_keys": [KEY]},
        "providers": [{"name": "sim", "type": "mock", "mock": {"latency_ms": 1}}],
        "models": [
            {
                "name": "flaky",
                "provider": "sim",
                "mock": {"failure_rate": 1.0},
                "fallbacks": ["steady"],
            },
            {"name": "steady", "provider": "sim"},
        ],
        "selection": {"exploration_rate": 0},
        "storage": {"url": url},
    }


@contextlib.contextmanager
def replica(url: str, work: Path) -> Iterator[str]:
    with serve_gateway(config(url), work) as (port, _):
        yield f"http://127.0.0.1:{port}"


def until(check: Callable[[], bool], timeout: float = 30.0) -> float:
    began = time.perf_counter()
    while not check():
        if time.perf_counter() - began > timeout:
            raise RuntimeError("no change seen within the timeout")
        time.sleep(0.005)
    return time.perf_counter() - began


def benched(base: str) -> bool:
    rows = httpx.get(base + "/performance/blacklisted", timeout=5).json()["data"]
    return any(row["model"] == "flaky" for row in rows)


def ratings(base: str) -> int:
    rows = httpx.get(base + "/performance/metrics/steady", timeout=5).json()["metrics"]
    return sum(r["feedback"].get("overall", {}).get("count", 0) for r in rows)


def chat(base: str, model: str) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(base + "/v1/chat/completions", json=body, headers=AUTH, timeout=10)
    resp.raise_for_status()
    return dict(resp.json())


def trials(a: str, b: str, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"bench": [], "let_back": [], "rating": []}
    for i in range(n):
        for _ in range(3):
            chat(a, "flaky")  # fails on flaky, answered by steady
        out["bench"].append(until(lambda: benched(b)))
        httpx.delete(a + "/performance/blacklisted/flaky", timeout=5).raise_for_status()
        out["let_back"].append(until(lambda: not benched(b)))
        answer = chat(a, "steady")["id"]
        before = ratings(a)
        rating = {"response_id": answer, "overall": 1 + i % 5}
        httpx.post(b + "/v1/feedback", json=rating, headers=AUTH, timeout=10).raise_for_status()
        out["rating"].append(until(lambda before=before: ratings(a) > before))
    return out


def summary(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "median_ms": round(statistics.median(values) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1),
            "trials": len(values),
        }
        for name, values in samples.items()
    }


def run(store: str, n: int, work: Path) -> dict[str, dict[str, float]]:
    if store == "postgres":
        schema = f"gw_fleet_bench_{os.getpid()}"
        subprocess.run(["psql", POSTGRES, "-qc", f"CREATE SCHEMA {schema}"], check=True)
        url = f"{POSTGRES}?search_path={schema}"
    else:
        url = f"sqlite:///{work / 'fleet.db'}"
    try:
        with replica(url, work) as a, replica(url, work) as b:
            return summary(trials(a, b, n))
    finally:
        if store == "postgres":
            subprocess.run(
                ["psql", POSTGRES, "-qc", f"DROP SCHEMA {schema} CASCADE"],
                check=True,
                capture_output=True,
            )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--store", choices=["postgres", "sqlite", "both"], default="both")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    stores = ["postgres", "sqlite"] if args.store == "both" else [args.store]
    result: dict[str, Any] = {"date": datetime.datetime.now().isoformat(timespec="seconds")}
    for store in stores:
        with tempfile.TemporaryDirectory() as tmp:
            result[store] = run(store, args.trials, Path(tmp))
        print(f"{store}:", file=sys.stderr)
        for name, row in result[store].items():
            print(f"  {name:<9} median {row['median_ms']:>7} ms   max {row['max_ms']:>7} ms",
                  file=sys.stderr)  # fmt: skip
    stamp = datetime.date.today().isoformat()
    path = args.json or BENCH / "results" / f"fleet-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results in {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
