"""What a crash loses: a gateway under load, killed -9, restarted on the same store.

    python bench/reliability_crash.py [--seconds 5] [--concurrency 32] [--bench-loops 4]
                                      [--store sqlite|postgres|both] [--json PATH]

One `gatewise serve` process (the built-in mock upstream, 1 ms answers) on a store (one
SQLite file, or a PostgreSQL schema of its own on $BENCH_POSTGRES_URL, default the test
server). A client runs, at once and for `--seconds`:

- `--concurrency` loops that ask for an answer and rate every other one at once (a
  rating stores its answer with it: the unrated ones show the answers' loss window);
- `--bench-loops` loops that bench models one after another (three failing requests
  each, to a model that always fails, with a fallback that answers) and let every other
  one back (`DELETE /performance/blacklisted/{model}`).

Then `kill -9`, with all of it in flight. An action is acknowledged when its whole 2xx
reached the client. The gateway restarts on the same store, and the script counts what
it finds of what was acknowledged: ratings, answers (rateable after the restart), and
benches (benched: still benched; let back: still back). README.md ("What a crash
loses") says what may be lost; the counts show it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port  # noqa: E402
from gateway.storage import Query, create_store  # noqa: E402

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
KEY = "crash-bench-key"
AUTH = {"authorization": f"Bearer {KEY}"}
FLAKY = 400  # models that always fail: one bench each, more than a run gets through
ALL = 10**7  # a page larger than any run's rows


def config(url: str) -> dict[str, Any]:
    flaky = [
        {
            "name": f"f{i:03d}",
            "provider": "sim",
            "mock": {"failure_rate": 1.0, "latency_ms": 1},
            "fallbacks": ["steady"],
        }
        for i in range(FLAKY)
    ]
    return {
        "server": {"api_keys": [KEY]},
        "providers": [{"name": "sim", "type": "mock"}],
        "models": [{"name": "steady", "provider": "sim", "mock": {"latency_ms": 1}}, *flaky],
        "selection": {"exploration_rate": 0},
        "storage": {"url": url},
    }


class Gateway:
    """One `gatewise serve` process on the store at `url`."""

    def __init__(self, url: str, work: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        path = work / f"gateway-{self.port}.yaml"
        path.write_text(yaml.safe_dump(config(url)))
        self.log_path = work / f"gateway-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("GATEWISE_STORAGE_URL", None)
        cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(path),
               "--port", str(self.port), "--log-level", "error"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.base + "/readyz", timeout=1).status_code == 200:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(self.log_path.read_text(errors="replace"))
            time.sleep(0.05)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self._log.close()


@dataclass
class Acknowledged:
    unrated: list[tuple[str, float]] = field(default_factory=list)  # response id, when
    ratings: list[str] = field(default_factory=list)
    benched: list[str] = field(default_factory=list)
    let_back: list[str] = field(default_factory=list)
    letting_back: set[str] = field(default_factory=set)  # let-backs sent, not answered
    cut_short: int = 0  # requests the kill cut short: never acknowledged
    ran_out: int = 0  # bench loops that benched all their models before the kill


async def chat(http: httpx.AsyncClient, base: str, model: str) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    resp = await http.post(base + "/v1/chat/completions", json=body, headers=AUTH)
    resp.raise_for_status()
    return dict(resp.json())


async def answer_and_rate(http: httpx.AsyncClient, base: str, ack: Acknowledged) -> None:
    n = 0
    while True:
        n += 1
        try:
            rid = (await chat(http, base, "steady"))["id"]
            if n % 2:
                ack.unrated.append((rid, time.monotonic()))
                continue
            rating = {"response_id": rid, "accuracy": 1 + n % 5}
            resp = await http.post(base + "/v1/feedback", json=rating, headers=AUTH)
            resp.raise_for_status()
            ack.ratings.append(rid)
        except httpx.TransportError:
            ack.cut_short += 1
            return


async def bench_and_let_back(
    http: httpx.AsyncClient,
    base: str,
    ack: Acknowledged,
    loop: int,
    loops: int,
    killed: asyncio.Event,
) -> None:
    for i in range(loop, FLAKY, loops):
        model = f"f{i:03d}"
        try:
            for _ in range(3):
                await chat(http, base, model)  # fails on the model, answered by steady
            ack.benched.append(model)
            if i % 2:
                ack.letting_back.add(model)
                resp = await http.delete(base + f"/performance/blacklisted/{model}")
                resp.raise_for_status()
                ack.let_back.append(model)
                ack.letting_back.discard(model)
        except httpx.TransportError:
            ack.cut_short += 1
            return
    # Every model benched before the kill (a fast machine): what was acknowledged is
    # checked all the same; this loop just waits for the end.
    ack.ran_out += 1
    await killed.wait()


async def load(
    base: str, seconds: float, concurrency: int, bench_loops: int, gw: Gateway
) -> Acknowledged:
    ack = Acknowledged()
    killed = asyncio.Event()
    limits = httpx.Limits(max_connections=concurrency + bench_loops)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        loops = [answer_and_rate(http, base, ack) for _ in range(concurrency)]
        loops += [
            bench_and_let_back(http, base, ack, i, bench_loops, killed) for i in range(bench_loops)
        ]
        tasks = [asyncio.ensure_future(c) for c in loops]
        await asyncio.sleep(seconds)
        killed_at = time.monotonic()
        gw.kill()  # everything in flight
        killed.set()
        await asyncio.gather(*tasks)
    ack.unrated = [(rid, killed_at - at) for rid, at in ack.unrated]  # age at the kill
    return ack


async def found(url: str) -> tuple[set[str], set[str]]:
    """The answers and the rated answers the store has."""
    store = create_store(url)
    await store.open()
    try:
        answers = {r["response_id"] for r in await store.responses(Query(limit=ALL))}
        rated = {r["response_id"] for r in await store.feedback(Query(limit=ALL))}
    finally:
        await store.close()
    return answers, rated


def benched_now(base: str) -> set[str]:
    rows = httpx.get(base + "/performance/blacklisted", timeout=10).json()["data"]
    return {row["model"] for row in rows}


def run(url: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    gw = Gateway(url, work)
    try:
        ack = asyncio.run(load(gw.base, args.seconds, args.concurrency, args.bench_loops, gw))
    finally:
        gw.stop()
    restarted = Gateway(url, work)
    try:
        benched = benched_now(restarted.base)
    finally:
        restarted.stop()
    answers, rated = asyncio.run(found(url))
    lost_answers = [age for rid, age in ack.unrated if rid not in answers]
    # A model whose let-back was sent but not answered may be either: counted as neither.
    still_benched = set(ack.benched) - set(ack.let_back) - ack.letting_back
    return {
        "ratings": {
            "acknowledged": len(ack.ratings),
            "lost": sum(1 for rid in ack.ratings if rid not in rated),
        },
        "unrated_answers": {
            "acknowledged": len(ack.unrated),
            "lost": len(lost_answers),
            "oldest_lost_s": round(max(lost_answers), 3) if lost_answers else None,
        },
        "benched": {
            "acknowledged": len(still_benched),
            "lost": len(still_benched - benched),
        },
        "let_back": {
            "acknowledged": len(ack.let_back),
            "lost": len(set(ack.let_back) & benched),
        },
        "cut_short_by_the_kill": ack.cut_short,
        "bench_loops_out_of_models": ack.ran_out,
    }


def pg_schema_url(name: str) -> str:
    subprocess.run(["psql", POSTGRES, "-qc", f"CREATE SCHEMA {name}"], check=True)
    return f"{POSTGRES}?search_path={name}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--bench-loops", type=int, default=4)
    p.add_argument("--store", choices=["postgres", "sqlite", "both"], default="both")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    result: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "bench_loops": args.bench_loops,
    }
    for store in stores:
        with tempfile.TemporaryDirectory() as tmp:
            schema = f"gw_crash_bench_{os.getpid()}"
            url = pg_schema_url(schema) if store == "postgres" else f"sqlite:///{tmp}/crash.db"
            try:
                result[store] = run(url, Path(tmp), args)
            finally:
                if store == "postgres":
                    subprocess.run(["psql", POSTGRES, "-qc", f"DROP SCHEMA {schema} CASCADE"],
                                   check=True, capture_output=True)  # fmt: skip
        print(f"{store}:", file=sys.stderr)
        for name, row in result[store].items():
            print(f"  {name:<22} {row}", file=sys.stderr)
    stamp = datetime.date.today().isoformat()
    path = args.json or BENCH / "results" / f"reliability-crash-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results in {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
