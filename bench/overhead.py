"""Overhead and throughput of Gatewise against the floor, the stack's best and LiteLLM.

    python bench/overhead.py [--duration 10] [--repetitions 3] [--targets ...] [--quick]

One nginx mock upstream (bench/upstream/nginx.conf) serves every target in the run.
Targets run pinned to the first CPU; nginx, wrk, the streaming client and this script
to the second. Rounds are interleaved (direct, passthrough, gatewise, gatewise-2w,
litellm, direct, ...); each target starts fresh in every round. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness, litellm_proxy, report
from bench.harness import Child

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TARGETS = ("direct", "passthrough", "gatewise", "gatewise-2w", "litellm")
# Run on request (--targets): the fleet's costs. gatewise-solo is gatewise with sharing
# off (storage.share: false); gatewise-keys has 101 named keys with rate limits and
# budgets (checked on every request), gatewise-open none (no key asked for);
# gatewise-pg and gatewise-pg-2w store in PostgreSQL ($BENCH_POSTGRES_URL, default the
# test server), each round in a schema of its own.
FLEET_TARGETS = (
    "gatewise-solo", "gatewise-pg", "gatewise-pg-2w", "gatewise-keys", "gatewise-open"
)  # fmt: skip
# gatewise-baseline is gatewise as it was at --baseline REV (a commit), with that commit's
# bench config, interleaved with today's: "within N % of the last full run" judged in
# one run on one machine instead of across days on a VM whose speed swings 2x.
# gatewise-baseline-keys and -open: the baseline with today's keys and open configs.
KNOWN = TARGETS + FLEET_TARGETS + (
    "gatewise-baseline", "gatewise-baseline-keys", "gatewise-baseline-open"
)  # fmt: skip
POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CHAT = "/v1/chat/completions"
SSE = "/stream/v1/chat/completions"


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, cores: list[int]) -> None:
        self.args = args
        self.tmp = tmp
        self.target_cpus = str(cores[0])
        self.load_cpus = str(cores[1] if len(cores) > 1 else cores[0])
        self.both_cpus = ",".join(dict.fromkeys((self.target_cpus, self.load_cpus)))
        self.cores = [int(c) for c in self.both_cpus.split(",")]
        # What nginx and wrk really run as: batch only where the system allows it.
        self.batch = args.load_policy == "batch" and bool(harness.batch_prefix())
        if args.load_policy == "batch" and not self.batch:
            print("overhead: SCHED_BATCH refused here; nginx and wrk run at the default policy",
                  file=sys.stderr)  # fmt: skip
        self.nginx: Child | None = None
        self.upstream = ""
        self.nginx_startup_ms = 0.0
        self.litellm_exe: Path | None = None
        self.unavailable: dict[str, str] = {}
        self.children: list[Child] = []
        self.baseline: Path | None = None
        if getattr(args, "baseline", None):  # soak.py and ab.py build their own args
            self.baseline = tmp / "baseline"
            self.baseline.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline],
                                     check=True, capture_output=True).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(self.baseline)], input=archive, check=True)

    # -- processes -------------------------------------------------------------------
    def start_upstream(self) -> None:
        port = harness.free_port()
        work = self.tmp / "nginx"
        work.mkdir()
        conf = (BENCH / "upstream" / "nginx.conf").read_text()
        conf = conf.replace("@PORT@", str(port)).replace("@TMP@", str(work))
        (work / "nginx.conf").write_text(conf)
        cmd = ["nginx", "-p", str(work), "-c", str(work / "nginx.conf"), "-e", str(work / "e.log")]
        log = work / "stdout.log"
        self.nginx = Child("nginx", cmd, self.load_cpus, log=log, batch=self.batch)
        self.nginx.start()
        self.children.append(self.nginx)
        self.nginx_startup_ms = harness.wait_ready(self.nginx, port, "/healthz", 10) * 1000
        self.upstream = f"http://127.0.0.1:{port}"
        self.nginx_port = port

    def launch(self, name: str, rnd: int) -> tuple[Child | None, int, str, str, str]:
        """Start one target: (child, port, client key, model, streaming path)."""
        if name == "direct":
            return None, self.nginx_port, "none", "auto", SSE
        port = harness.free_port()
        work = self.tmp / f"{name}-{rnd}"
        work.mkdir()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        key, path, cpus, ready = "bench-key", CHAT, self.target_cpus, "/readyz"
        if name == "passthrough":
            cmd = [sys.executable, str(BENCH / "passthrough.py"), self.upstream, str(port)]
            path, ready = SSE, "/healthz"
        elif name.startswith("gatewise"):
            workers = "2" if name.endswith("-2w") else "1"
            cpus = self.both_cpus if workers == "2" else cpus
            key = "gw-" + secrets.token_hex(12)
            env.update(BENCH_UPSTREAM=self.upstream, BENCH_API_KEY=key,
                       BENCH_ADMIN_TOKEN=secrets.token_hex(12))  # fmt: skip
            # A copy in the target's own directory: a relative SQLite path is the
            # config file's folder's, and each start must begin with an empty store.
            config = str(_config_copy(work))
            if name.startswith("gatewise-baseline"):
                assert self.baseline is not None
                env["PYTHONPATH"] = str(self.baseline)  # its packages before the installed ones
                config = str(_config_copy(work, self.baseline / "bench"))
            if name == "gatewise-solo":
                config = str(_solo_config(work))
            if name.endswith("-keys"):
                config = str(_keys_config(work))
            if name.endswith("-open"):
                config = str(_open_config(work))
            if name.startswith("gatewise-pg"):
                env["GATEWISE_STORAGE_URL"] = _pg_schema(f"gw_bench_{rnd}_{port}")
            cmd = [sys.executable, "-m", "gateway", "serve", "--config", config,
                   "--port", str(port), "--workers", workers]  # fmt: skip
        else:
            assert self.litellm_exe is not None
            cmd, env, key = litellm_proxy.prepare(self.litellm_exe, work, self.upstream, port)
            ready = litellm_proxy.HEALTH_PATH
        child = Child(name, cmd, cpus, env=env, cwd=work, log=work / "output.log").start()
        self.children.append(child)
        timeout = 180 if name == "litellm" else 60
        try:
            child.startup_ms = harness.wait_ready(child, port, ready, timeout) * 1000
        except RuntimeError:
            child.stop()
            raise
        return child, port, key, "auto", path

    # -- one measurement -----------------------------------------------------------
    def measure(self, name: str, rnd: int) -> dict:
        a = self.args
        child, port, key, model, stream_path = self.launch(name, rnd)
        proc = child or self.nginx
        assert proc is not None and self.nginx is not None
        # Two workers run on both CPUs, and so do nginx and wrk: pinned to one CPU they
        # would leave the worker that lands there a fraction of it, which the scheduler
        # could not even out. One worker keeps a CPU to itself, load on the other.
        load = self.both_cpus if name.endswith("-2w") else self.load_cpus
        self.nginx.pin(load)
        url = f"http://127.0.0.1:{port}{CHAT}"
        stream_url = f"http://127.0.0.1:{port}{stream_path}"
        stream_model = "auto" if stream_path == SSE else "auto-stream"
        half = max(1, a.duration // 2)
        out: dict = {"round": rnd, "target": name, "port": port}
        out["startup_ms"] = child.startup_ms if child else self.nginx_startup_ms
        try:
            out["warmup"] = harness.wrk(url, 50, a.warmup, model, key, load, batch=self.batch)
            before = self._counters(proc)
            out["c50"] = harness.wrk(url, 50, a.duration, model, key, load, batch=self.batch)
            out.update(self._cpu_shares(proc, before, self._counters(proc), out["c50"]))
            if not name.endswith("-2w"):
                out["c1"] = harness.wrk(url, 1, half, model, key, load, batch=self.batch)
                out["stream_c1"] = asyncio.run(harness.stream_requests(
                    port, stream_path, stream_model, key, a.stream_requests, 30))  # fmt: skip
                out["stream_load"], out["stream_load_client"] = asyncio.run(
                    self._stream_under_load(stream_url, port, stream_path, stream_model, key, half)
                )
            rss = proc.peak_rss_mb()
            out["rss_mb_per_process"] = {str(k): round(v, 1) for k, v in rss.items()}
            # The busiest process is "one worker" (uvicorn's supervisor is the small one).
            out["rss_worker_mb"] = max(rss.values()) if rss else None
            out["rss_total_mb"] = sum(rss.values()) if rss else None
        finally:
            if child is not None:
                child.stop()
        out["errors"] = sum(
            (out.get(k) or {}).get("errors", 0)
            for k in ("warmup", "c50", "c1", "stream_c1", "stream_load", "stream_load_client")
        )
        return out

    def _counters(self, proc: Child) -> dict[str, float]:
        assert self.nginx is not None
        out = {"target": proc.cpu_ticks(), "own": harness.own_ticks()}
        out["nginx"] = self.nginx.cpu_ticks() if proc is not self.nginx else 0
        for core, (busy, total) in harness.cpu_jiffies(self.cores).items():
            out[f"busy{core}"], out[f"total{core}"] = busy, total
        return out

    def _cpu_shares(self, proc: Child, before: dict, after: dict, run: dict) -> dict:
        """CPU per request, the target's share of its CPU, and what other processes took.

        foreign_*_pct: CPU time that processes outside this benchmark used on the target's
        CPU and on the load CPU during the c=50 run (the machine should be quiet).
        """
        d = {k: after[k] - before[k] for k in before}
        tc, lc = int(self.target_cpus), int(self.load_cpus)
        out = {"cpu_us_per_req": d["target"] * harness.TICK_US / max(1, run["requests"])}
        out["cpu_target_pct"] = 100 * d["target"] / max(1, d[f"total{tc}"])
        load_ours = d["nginx"] + d["own"] + (d["target"] if proc is self.nginx else 0)
        target_foreign = None
        if proc is self.nginx:  # direct: nothing of ours runs on the target CPU
            out["cpu_target_pct"] = 100 * d["target"] / max(1, d[f"total{lc}"])
        elif len(self.cores) == 1 or proc.cpus != self.target_cpus:  # shares every CPU
            # Everything else the shared CPUs did: nginx, wrk, this runner and the kernel's
            # loopback work (softirq), which the workers must leave room for.
            rest = sum(d[f"busy{c}"] for c in self.cores) - d["target"]
            both = rest - load_ours
            total = sum(d[f"total{c}"] for c in self.cores)
            out["foreign_target_cpu_pct"] = out["foreign_load_cpu_pct"] = 100 * max(0, both) / total
            out["rest_cpu_us_per_req"] = max(0, rest) * harness.TICK_US / max(1, run["requests"])
            return out
        else:
            target_foreign = d[f"busy{tc}"] - d["target"]
        out["foreign_target_cpu_pct"] = (
            None if target_foreign is None else 100 * max(0, target_foreign) / d[f"total{tc}"]
        )
        load_foreign = d[f"busy{lc}"] - load_ours
        out["foreign_load_cpu_pct"] = 100 * max(0, load_foreign) / max(1, d[f"total{lc}"])
        return out

    async def _stream_under_load(self, url, port, path, model, key, seconds) -> tuple[dict, dict]:
        async def client() -> dict:
            await asyncio.sleep(0.3)
            return await harness.stream_requests(port, path, model, key, 100_000, seconds - 0.6)

        load = harness.wrk_async(
            url, 49, seconds, model, key, self.load_cpus, stream=True, batch=self.batch
        )
        return tuple(await asyncio.gather(load, client()))  # type: ignore[return-value]

    # -- the run ------------------------------------------------------------------------
    def run(self) -> dict:
        a = self.args
        targets = [t for t in a.targets if t in KNOWN]
        if "litellm" in targets:
            self.litellm_exe, why = litellm_proxy.ensure()
            if why:
                self.unavailable["litellm"] = why
                targets.remove("litellm")
        self.start_upstream()
        rounds: list[dict] = []
        deadline = time.monotonic() + a.time_limit
        truncated = False
        for rnd in range(1, a.repetitions + 1):
            for name in targets:
                if time.monotonic() > deadline:
                    truncated = True
                    break
                print(f"round {rnd}/{a.repetitions}: {name} ...", file=sys.stderr, flush=True)
                try:
                    m = self.measure(name, rnd)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    m = {"round": rnd, "target": name, "errors": 1, "failed": str(exc)[-2000:]}
                    print(f"  {name} failed: {exc}", file=sys.stderr)
                rounds.append(m)
                if "c50" in m:
                    print(f"  {m['c50']['rps']:.0f} req/s, errors {m['errors']}", file=sys.stderr)
        ok = [m for m in rounds if "c50" in m]
        summary = report.summarize(ok)
        ratios = report.ratios(ok, summary)
        errors = sum(m["errors"] for m in rounds)
        return {
            "meta": self.meta(),
            "rounds": rounds,
            "summary": summary,
            "ratios": ratios,
            "checks": report.checks(ratios),
            "unavailable": self.unavailable,
            "errors": errors,
            "valid": errors == 0 and bool(ok) and len(ok) == len(rounds),
            "truncated": truncated,
        }

    def meta(self) -> dict:
        a = self.args

        def version(cmd: list[str]) -> str:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
                return (out.stdout + out.stderr).strip().splitlines()[0]
            return "unknown"

        return {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "duration_s": a.duration,
            "warmup_s": a.warmup,
            "repetitions": a.repetitions,
            "stream_requests": a.stream_requests,
            "quick": a.quick,
            "targets": a.targets,
            "target_cpus": self.target_cpus,
            "load_cpus": self.load_cpus,
            "load_policy": "batch" if self.batch else "other",
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "nginx": version(["nginx", "-v"]),
            "wrk": version(["wrk", "-v"]),
            "litellm": litellm_proxy.VERSION if self.litellm_exe else None,
            "litellm_server": litellm_proxy.server_stack() if self.litellm_exe else None,
            "commit": version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
            "baseline": a.baseline,
            "nginx_startup_ms": self.nginx_startup_ms,
            "note": "gatewise-2w, nginx and wrk share both CPUs in the gatewise-2w rounds",
        }

    def close(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                child.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=10, help="seconds per c=50 run (default 10)")
    p.add_argument("--repetitions", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset")
    p.add_argument("--skip-litellm", action="store_true")
    p.add_argument("--quick", action="store_true", help="2 s, 1 round: a smoke run")
    p.add_argument("--warmup", type=int, default=1, help="seconds of warm-up load")
    p.add_argument("--stream-requests", type=int, default=300)
    p.add_argument("--time-limit", type=float, default=720, help="stop starting rounds after")
    p.add_argument("--json", type=Path, default=None, help="where to write the JSON results")
    p.add_argument("--load-policy", choices=("batch", "other"), default="batch",
                   help="scheduling policy of nginx and wrk: SCHED_BATCH (default) or "
                        "SCHED_OTHER (bench/README.md, Scheduling)")  # fmt: skip
    p.add_argument("--baseline", default=None, metavar="REV",
                   help="a commit run as target gatewise-baseline")  # fmt: skip
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(KNOWN)
    if unknown:
        p.error(f"unknown targets: {', '.join(sorted(unknown))} (known: {', '.join(KNOWN)})")
    if args.baseline and "gatewise-baseline" not in args.targets:
        args.targets.append("gatewise-baseline")
    if any(t.startswith("gatewise-baseline") for t in args.targets) and not args.baseline:
        p.error("the gatewise-baseline target needs --baseline REV")
    if args.skip_litellm and "litellm" in args.targets:
        args.targets.remove("litellm")
    if args.quick:
        args.duration, args.repetitions, args.stream_requests = 2, 1, 50
    return args


def _config_copy(work: Path, bench: Path = BENCH) -> Path:
    path = work / "gatewise.yaml"
    path.write_text((bench / "gatewise.yaml").read_text())
    return path


def _solo_config(work: Path) -> Path:
    """bench/gatewise.yaml with fleet sharing off."""
    import yaml

    raw = yaml.safe_load((BENCH / "gatewise.yaml").read_text())
    raw.setdefault("storage", {})["share"] = False
    path = work / "gatewise-solo.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _keys_config(work: Path) -> Path:
    """bench/gatewise.yaml with the client's key a named key whose rate limit and budget
    are checked on every request (and never reached), among 100 other keys: what key
    lookup, rate limiting and budget accounting cost on the request path."""
    import yaml

    raw = yaml.safe_load((BENCH / "gatewise.yaml").read_text())
    limits = {
        "rate_limit": {"requests_per_minute": 10**9, "tokens_per_minute": 10**12},
        "budget": {"daily_usd": 10**9, "monthly_usd": 10**10},
    }
    others = [{"name": f"team-{i}", "key": secrets.token_hex(16), **limits} for i in range(100)]
    raw["server"]["api_keys"] = [{"name": "bench", "key": "${BENCH_API_KEY}", **limits}, *others]
    path = work / "gatewise-keys.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _open_config(work: Path) -> Path:
    """bench/gatewise.yaml with no client key at all: what the keys cost, every one of
    them, against a gateway that has none (issue 18: "with and without keys")."""
    import yaml

    raw = yaml.safe_load((BENCH / "gatewise.yaml").read_text())
    raw["server"]["api_keys"] = []
    path = work / "gatewise-open.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _pg_schema(name: str) -> str:
    """A fresh schema on the benchmark's PostgreSQL; the url a gateway uses to work in it."""
    subprocess.run(
        ["psql", POSTGRES, "-qc", f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"],
        check=True,
        capture_output=True,
    )
    return f"{POSTGRES}?search_path={name}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("nginx", "wrk", "taskset", "chrt"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            print(f"overhead: {tool} is not installed", file=sys.stderr)
            return 2
    cores = sorted(os.sched_getaffinity(0))
    with contextlib.suppress(OSError):  # this script and its clients run on the load CPU
        os.sched_setaffinity(0, {cores[1] if len(cores) > 1 else cores[0]})
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="gatewise-bench-") as tmp:
        bench = Bench(args, Path(tmp), cores)
        try:
            result = bench.run()
        finally:
            bench.close()
            signal.signal(signal.SIGTERM, previous)
    print(report.markdown(result))
    path = args.json or BENCH / "results" / f"overhead-{datetime.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"\nresults: {path}")
    return 0 if result["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
