"""Medians, ratios, targets and the markdown table of bench/overhead.py's results."""

from __future__ import annotations

import statistics
from collections.abc import Callable

__all__ = ["LIMITS", "checks", "markdown", "ratios", "summarize"]

# The targets of the issue, as (key in ratios, comparison, limit, wording).
LIMITS = [
    ("gatewise_vs_passthrough_rps", ">=", 0.70, "throughput >= 70% of the pass-through's"),
    ("gatewise_vs_litellm_rps", ">=", 30.0, "throughput >= 30x LiteLLM's"),
    ("gatewise_added_c1_p50_ms", "<=", 0.5, "added latency at c=1 <= 0.5 ms p50 over direct"),
    ("gatewise_ttfb_delta_ms", "<=", 1.0, "streaming TTFB <= 1 ms over the pass-through's"),
    ("gatewise_peak_rss_mb", "<=", 120.0, "peak RSS of one worker <= 120 MB"),
    ("gatewise_startup_s", "<=", 1.0, "start-up to ready <= 1 s"),
    ("gatewise_2w_vs_1w_rps", ">=", 1.7, "--workers 2 >= 1.7x one worker's throughput"),
    ("gatewise_vs_solo_rps", ">=", 0.95, "fleet sharing on >= 95% of the throughput without"),
    ("gatewise_keys_vs_plain_rps", ">=", 0.95, "limited keys >= 95% of one plain key's throughput"),
    ("gatewise_vs_baseline_rps", ">=", 0.95, "throughput >= 95% of the --baseline commit's"),
]

# Per-round metrics: name -> how to read it from one measurement.
_METRICS: dict[str, Callable[[dict], float | None]] = {
    "startup_ms": lambda m: m.get("startup_ms"),
    "rps": lambda m: m["c50"]["rps"],
    "p50_ms": lambda m: m["c50"]["p50_ms"],
    "p99_ms": lambda m: m["c50"]["p99_ms"],
    "cpu_us_per_req": lambda m: m.get("cpu_us_per_req"),
    "c1_p50_ms": lambda m: (m.get("c1") or {}).get("p50_ms"),
    "c1_p99_ms": lambda m: (m.get("c1") or {}).get("p99_ms"),
    "ttfb_c1_ms": lambda m: (m.get("stream_c1") or {}).get("ttfb_p50_ms"),
    "stream_total_c1_ms": lambda m: (m.get("stream_c1") or {}).get("total_p50_ms"),
    "stream_load_rps": lambda m: (m.get("stream_load") or {}).get("rps"),
    "stream_load_p50_ms": lambda m: (m.get("stream_load") or {}).get("p50_ms"),
    "ttfb_load_ms": lambda m: (m.get("stream_load_client") or {}).get("ttfb_p50_ms"),
    "rss_worker_mb": lambda m: m.get("rss_worker_mb"),
    "cpu_target_pct": lambda m: m.get("cpu_target_pct"),
    "rest_cpu_us_per_req": lambda m: m.get("rest_cpu_us_per_req"),
    "foreign_target_cpu_pct": lambda m: m.get("foreign_target_cpu_pct"),
    "foreign_load_cpu_pct": lambda m: m.get("foreign_load_cpu_pct"),
    "rss_total_mb": lambda m: m.get("rss_total_mb"),
}


def _median(values: list[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


def summarize(rounds: list[dict]) -> dict[str, dict]:
    """Per target: the median of every metric over the rounds, and the errors summed."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(m["target"] for m in rounds):
        mine = [m for m in rounds if m["target"] == name]
        row = {k: _median([get(m) for m in mine]) for k, get in _METRICS.items()}
        row["rounds"] = len(mine)
        row["errors"] = sum(m["errors"] for m in mine)
        out[name] = row
    return out


def _paired(rounds: list[dict], a: str, b: str, metric: str, op: str) -> float | None:
    """Median over rounds of (a op b) for one metric, pairing a and b within each round."""
    get = _METRICS[metric]
    values = []
    for r in sorted({m["round"] for m in rounds}):
        x = next((get(m) for m in rounds if m["round"] == r and m["target"] == a), None)
        y = next((get(m) for m in rounds if m["round"] == r and m["target"] == b), None)
        if x is None or y is None or (op == "/" and not y):
            continue
        values.append(x / y if op == "/" else x - y)
    return _median(values)


def ratios(rounds: list[dict], summary: dict[str, dict]) -> dict[str, float | None]:
    gw = summary.get("gatewise", {})
    out: dict[str, float | None] = {
        "gatewise_vs_passthrough_rps": _paired(rounds, "gatewise", "passthrough", "rps", "/"),
        "gatewise_vs_litellm_rps": _paired(rounds, "gatewise", "litellm", "rps", "/"),
        "passthrough_vs_direct_rps": _paired(rounds, "passthrough", "direct", "rps", "/"),
        "gatewise_2w_vs_1w_rps": _paired(rounds, "gatewise-2w", "gatewise", "rps", "/"),
        # The fleet (on request): sharing's cost, and PostgreSQL against SQLite.
        "gatewise_vs_solo_rps": _paired(rounds, "gatewise", "gatewise-solo", "rps", "/"),
        # Keys as tenants: lookup, rate limit and budget on every request.
        "gatewise_keys_vs_plain_rps": _paired(rounds, "gatewise-keys", "gatewise", "rps", "/"),
        # Today's code against an earlier commit's (--baseline), in the same rounds.
        "gatewise_vs_baseline_rps": _paired(rounds, "gatewise", "gatewise-baseline", "rps", "/"),
        "gatewise_vs_baseline_cpu": _paired(
            rounds, "gatewise", "gatewise-baseline", "cpu_us_per_req", "/"
        ),
        "gatewise_pg_vs_sqlite_rps": _paired(rounds, "gatewise-pg", "gatewise", "rps", "/"),
        "gatewise_pg_2w_vs_1w_rps": _paired(rounds, "gatewise-pg-2w", "gatewise-pg", "rps", "/"),
        # Why the ratio above is what it is: the CPU the two workers got (the rest of the
        # two went to nginx, wrk and the kernel's loopback work), and requests per CPU
        # second against one worker's (1.0: a worker does as much alone as beside another).
        "gatewise_2w_cores": _cores(summary.get("gatewise-2w", {})),
        "gatewise_2w_vs_1w_per_core": _paired(
            rounds, "gatewise", "gatewise-2w", "cpu_us_per_req", "/"
        ),
        # What the ratio could reach on these CPUs if a worker cost as much beside another
        # as alone: 2 / (1 + R / G), with G one worker's CPU per request and R what the
        # rest (nginx, wrk, loopback softirq) needs per request beside two workers.
        "gatewise_2w_ceiling": _ceiling(gw, summary.get("gatewise-2w", {})),
        "gatewise_added_c1_p50_ms": _paired(rounds, "gatewise", "direct", "c1_p50_ms", "-"),
        "passthrough_added_c1_p50_ms": _paired(rounds, "passthrough", "direct", "c1_p50_ms", "-"),
        "litellm_added_c1_p50_ms": _paired(rounds, "litellm", "direct", "c1_p50_ms", "-"),
        "gatewise_ttfb_delta_ms": _paired(rounds, "gatewise", "passthrough", "ttfb_c1_ms", "-"),
        "gatewise_ttfb_load_delta_ms": _paired(
            rounds, "gatewise", "passthrough", "ttfb_load_ms", "-"
        ),
        "gatewise_vs_passthrough_cpu": _paired(
            rounds, "gatewise", "passthrough", "cpu_us_per_req", "/"
        ),
        "gatewise_vs_litellm_cpu": _paired(rounds, "gatewise", "litellm", "cpu_us_per_req", "/"),
        "gatewise_peak_rss_mb": gw.get("rss_worker_mb"),
        "gatewise_startup_s": gw["startup_ms"] / 1000 if gw.get("startup_ms") else None,
    }
    return out


def _ceiling(one: dict, two: dict) -> float | None:
    g, rest = one.get("cpu_us_per_req"), two.get("rest_cpu_us_per_req")
    return 2 / (1 + rest / g) if g and rest is not None else None


def _cores(row: dict) -> float | None:
    pct = row.get("cpu_target_pct")
    return None if pct is None else pct / 100


def checks(values: dict[str, float | None]) -> list[dict]:
    out = []
    for key, op, limit, wording in LIMITS:
        value = values.get(key)
        if value is None:
            verdict = "n/a"
        else:
            verdict = "PASS" if (value >= limit if op == ">=" else value <= limit) else "FAIL"
        out.append({"target": wording, "key": key, "value": value, "limit": limit, "op": op,
                    "result": verdict})  # fmt: skip
    return out


def _fmt(value: float | str | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


_COLUMNS = [
    ("req/s c50", "rps", 0),
    ("p50 ms", "p50_ms", 2),
    ("p99 ms", "p99_ms", 2),
    ("c1 p50 ms", "c1_p50_ms", 3),
    ("added c1 ms", "added_c1_ms", 3),
    ("CPU µs/req", "cpu_us_per_req", 0),
    ("TTFB c1 ms", "ttfb_c1_ms", 3),
    ("stream total c1 ms", "stream_total_c1_ms", 3),
    ("stream req/s c50", "stream_load_rps", 0),
    ("TTFB load ms", "ttfb_load_ms", 2),
    ("RSS/worker MB", "rss_worker_mb", 1),
    ("target CPU %", "cpu_target_pct", 0),
    ("foreign CPU % target/load", "foreign", 0),
    ("start-up ms", "startup_ms", 0),
    ("errors", "errors", 0),
]


def markdown(result: dict) -> str:
    summary, rounds = result["summary"], result["rounds"]
    lines = [
        f"Overhead benchmark, {result['meta']['date']}: medians of {result['meta']['repetitions']}"
        f" interleaved round(s), {result['meta']['duration_s']} s per load run. "
        f"Targets on CPU {result['meta']['target_cpus']}, nginx + wrk + clients on CPU "
        f"{result['meta']['load_cpus']}.",
        "",
        "| target | " + " | ".join(c[0] for c in _COLUMNS) + " |",
        "|---|" + "---:|" * len(_COLUMNS),
    ]
    for name, row in summary.items():
        row = {**row, "added_c1_ms": _paired(rounds, name, "direct", "c1_p50_ms", "-")}
        if name == "direct":
            row["added_c1_ms"] = None
        target, load = row["foreign_target_cpu_pct"], row["foreign_load_cpu_pct"]
        row["foreign"] = f"{_fmt(target, 0)} / {_fmt(load, 0)}"
        cells = [_fmt(row.get(key), digits) for _, key, digits in _COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {_fmt(v, 3)} |" for k, v in result["ratios"].items()]
    lines += ["", "| target | value | limit | result |", "|---|---:|---:|---|"]
    for c in result["checks"]:
        lines.append(
            f"| {c['target']} | {_fmt(c['value'], 3)} | {c['op']} {c['limit']:g} | {c['result']} |"
        )
    for name, why in result.get("unavailable", {}).items():
        lines.append(f"\n{name}: unavailable ({why})")
    if "gatewise-2w" in summary:
        lines.append(
            "\ngatewise-2w runs `--workers 2` on both CPUs, and so do nginx and wrk in its rounds;"
            " gatewise_2w_vs_1w_rps compares it with one worker alone on one CPU. The ratio is"
            " the CPU the workers got (gatewise_2w_cores, out of 2) times what a worker does per"
            " CPU second beside another against alone (gatewise_2w_vs_1w_per_core)."
            " gatewise_2w_ceiling = 2 / (1 + rest / one worker's CPU per request) is where it"
            " stops if a worker costs as much beside another as alone (bench/README.md, Two"
            " workers)."
        )
    if result["meta"].get("litellm_server"):
        lines.append(f"\nLiteLLM {result['meta']['litellm']} ran as installed from PyPI "
                     f"({result['meta']['litellm_server']}), one worker.")  # fmt: skip
    target = [r.get("foreign_target_cpu_pct") or 0.0 for r in summary.values()]
    load = [r.get("foreign_load_cpu_pct") or 0.0 for r in summary.values()]
    if max(target, default=0) > 5 or max(load, default=0) > 25:
        lines.append(
            f"\nWARNING: other processes took up to {max(target):.0f}% of the target's CPU and"
            f" {max(load):.0f}% of the load CPU during the c=50 runs: the machine was not quiet,"
            " so these numbers are noisy (rerun on an idle machine)."
        )
    verdict = "VALID" if result["valid"] else "INVALID (non-2xx, socket errors or timeouts)"
    lines.append(f"\nrun: {verdict}; errors: {result['errors']}")
    return "\n".join(lines)
