"""Real-data replay: does Gatewise route well on real answers of two real models?

Recorded prompts (GSM8K, MT-Bench; bench/replay_data.py) go through a real gateway
process (`gateway serve` on a loopback port) whose route holds a weak and a strong
model with equal priors, weak listed first; a loopback upstream answers with the
recorded answer of whichever model was asked (bench/replay_upstream.py). Simulated
users rate a share of the answers (accuracy = overall = 5 when the served answer was
right, 1 when wrong; MT-Bench judge scores mapped to 1-5). Every run is a fresh gateway.

Reported per data set and setting, over seeds and per half of the run: quality, cost,
share of strong calls, PGR ((q - q_weak) / (q_strong - q_weak)), the gap to the
random-mix line (q minus what mixing the two at random gives at the same share of
strong calls, with a 95 % interval over seeds), and the per-prompt oracle (the weak
model whenever it does as well). With --tolerances, `optimization: cost` with each
quality tolerance: the curve of quality against cost.

    python bench/replay.py [--data gsm8k,mt_bench] [--seeds 1-13] [--prompts 600]
        [--optimization accuracy] [--tolerances 0,0.05,0.1,0.2,0.3]
        [--route-option KEY=VALUE ...] [--sim] [--json PATH]

--route-option adds a key to the route's YAML for every run (e.g. a per-prompt routing
switch), so a routing mode can be compared on the same seeds. --sim replays in-process
through the gateway's own Selector and Tracker (no HTTP; fast, approximate).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.*` and `gateway` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import orjson
import yaml
from scipy import stats as scipy_stats

from bench.quality_run import ROOT, GatewayProcess
from bench.quality_seeds import seeds as parse_seeds
from bench.replay_data import MODELS, PRICES, Prompt, load, rated, run_prompts
from bench.replay_upstream import RecordedUpstream

__all__ = ["Setting", "main", "measure", "summarize"]

SHARE_GOAL = 0.95  # accuracy: the strong model's share of the second half, every run
DEFAULT_PROMPTS = {"gsm8k": 600, "mt_bench": None}  # None: all (160 turns)
TT = "text-to-text"


@dataclass(frozen=True, slots=True)
class Setting:
    optimization: str
    tolerance: float | None = None

    @property
    def name(self) -> str:
        if self.tolerance is None:
            return self.optimization
        return f"{self.optimization}, tolerance {self.tolerance:g}"


@dataclass(slots=True)
class Served:
    position: int
    prompt: Prompt
    model: str | None = None  # None: the request failed


# -- the gateway under test -----------------------------------------------------------
def gateway_config(
    upstream_url: str, setting: Setting, seed: int, options: dict[str, Any]
) -> dict[str, Any]:
    route: dict[str, Any] = {
        "name": "replay",
        "models": list(MODELS),
        "optimization": setting.optimization,
    }
    if setting.tolerance is not None:
        route["quality_tolerance"] = setting.tolerance
    route.update(options)
    return {
        "server": {"log_level": "warning"},
        "providers": [{"name": "recorded", "type": "openai", "base_url": upstream_url}],
        "models": [
            {
                "name": m,
                "provider": "recorded",
                "context_window": 128000,
                "pricing": {"input_per_million": PRICES[m][0], "output_per_million": PRICES[m][1]},
            }
            for m in MODELS
        ],
        "routes": [route],
        "selection": {"seed": seed},
        "storage": {"url": "memory://"},
    }


def _rating(prompt: Prompt, model: str) -> dict[str, int]:
    r = prompt.rating[model]
    return {"accuracy": r, "overall": r}


async def replay(
    prompts: Sequence[Prompt],
    setting: Setting,
    seed: int,
    rate: float,
    concurrency: int,
    upstream: RecordedUpstream,
    workdir: Path,
    options: dict[str, Any],
) -> list[Served]:
    """One run through a fresh gateway process."""
    gateway = GatewayProcess(gateway_config(upstream.url, setting, seed, options), workdir)
    served = [Served(i, p) for i, p in enumerate(prompts)]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        await gateway.spawn()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await gateway.ready(session)
            queue: deque[Served] = deque(served)

            async def worker() -> None:
                while queue:
                    s = queue.popleft()
                    messages = [{"role": r, "content": c} for r, c in s.prompt.messages]
                    body = {"model": "replay", "messages": messages}
                    async with session.post(gateway.url + "/v1/chat/completions", json=body) as r:
                        await r.read()
                        if r.status != 200:
                            continue
                        s.model = r.headers.get("x-gatewise-model")
                        response_id = r.headers.get("x-gatewise-response-id")
                    if s.model in MODELS and rated(seed, s.position, rate):
                        rating = {"response_id": response_id, **_rating(s.prompt, s.model)}
                        async with session.post(gateway.url + "/v1/feedback", json=rating) as r:
                            await r.read()

            await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await gateway.stop()
    return served


def simulate(
    prompts: Sequence[Prompt],
    setting: Setting,
    seed: int,
    rate: float,
    concurrency: int,
    options: dict[str, Any],
) -> list[Served]:
    """One run in-process: the gateway's Selector and Tracker, answers finishing in the
    order sent with `concurrency` in flight (so ratings lag as over HTTP)."""
    from bench.selection_bench import FakeClock
    from gateway.core.config import parse_config
    from gateway.core.types import Attempt
    from gateway.routing.blacklist import Blacklist
    from gateway.routing.catalog import Catalog
    from gateway.routing.dispatch import ReplyJob
    from gateway.routing.recorder import learn
    from gateway.routing.selection import Selector
    from gateway.routing.tracker import Tracker
    from providers.base import Endpoint

    raw = gateway_config("http://127.0.0.1:9", setting, seed, options)
    raw["providers"][0] = {"name": "recorded", "type": "mock"}
    config = parse_config(raw)
    target = Catalog(config, {}).resolve("replay", TT)  # type: ignore[arg-type]
    clock = FakeClock()
    blacklist = Blacklist(threshold=config.selection.blacklist_threshold, clock=clock)
    tracker = Tracker(clock=clock)
    selector = Selector(
        tracker, blacklist, config.selection, rng=random.Random(seed), clock=clock,
        refresh_seconds=config.selection.score_refresh_seconds,
    )  # fmt: skip
    in_flight: deque[Served] = deque()
    served = []

    def finish(s: Served) -> None:
        model = s.model
        assert model is not None
        pt, ct = s.prompt.tokens(model)
        learn(
            tracker,
            blacklist,
            Attempt(
                "sim", None, 1, model, "recorded", TT, "replay", setting.optimization,  # type: ignore[arg-type]
                True, latency_ms=1000.0, prompt_tokens=pt, completion_tokens=ct,
                cost=s.prompt.cost(model), timestamp=clock.now,
            ),
        )  # fmt: skip
        if rated(seed, s.position, rate):
            tracker.add_feedback(model, TT, _rating(s.prompt, model))

    for i, prompt in enumerate(prompts):
        body = {
            "model": "replay",
            "messages": [{"role": r, "content": c} for r, c in prompt.messages],
        }
        job = ReplyJob(
            "sim", Endpoint.CHAT, target, body, setting.optimization,  # type: ignore[arg-type]
            tolerance=setting.tolerance,
        )  # fmt: skip
        s = Served(i, prompt, selector.rank(job)[0].name)
        clock.now += 0.01
        served.append(s)
        in_flight.append(s)
        if len(in_flight) >= concurrency:
            finish(in_flight.popleft())
    while in_flight:
        finish(in_flight.popleft())
    return served


# -- metrics ----------------------------------------------------------------------------
def measure(served: Sequence[Served]) -> dict[str, Any]:
    """Quality, cost and strong share of one slice of a run, with its reference lines."""
    ok = [s for s in served if s.model in MODELS]
    if not ok:
        return {"requests": len(served), "answered": 0}
    n = len(ok)

    def q(pick: Any) -> float:
        return sum(s.prompt.quality[pick(s)] for s in ok) / n

    def c(pick: Any) -> float:
        return sum(s.prompt.cost(pick(s)) for s in ok) / n * 1000  # $ per 1,000 requests

    def oracle(s: Served) -> str:
        return "weak" if s.prompt.quality["weak"] >= s.prompt.quality["strong"] else "strong"

    share = sum(s.model == "strong" for s in ok) / n
    quality, q_strong, q_weak = q(lambda s: s.model), q(lambda s: "strong"), q(lambda s: "weak")
    spread = q_strong - q_weak
    return {
        "requests": len(served),
        "answered": n,
        "strong_share": share,
        "quality": quality,
        "cost_per_1k": c(lambda s: s.model),
        "always_strong": {"quality": q_strong, "cost_per_1k": c(lambda s: "strong")},
        "always_weak": {"quality": q_weak, "cost_per_1k": c(lambda s: "weak")},
        "pgr": (quality - q_weak) / spread if spread else None,
        "random_mix_gap": quality - (q_weak + share * spread),
        "oracle": {
            "quality": q(oracle),
            "cost_per_1k": c(oracle),
            "strong_share": sum(oracle(s) == "strong" for s in ok) / n,
        },
    }


def halves(served: Sequence[Served]) -> dict[str, dict[str, Any]]:
    mid = len(served) // 2
    return {"all": measure(served), "first": measure(served[:mid]), "second": measure(served[mid:])}


def _interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval over seeds."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = (
        scipy_stats.t.ppf(0.975, len(values) - 1)
        * statistics.stdev(values)
        / math.sqrt(len(values))
    )
    return mean, mean - half, mean + half


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Over seeds: per half, the means, and the strong share's spread and goal count."""
    out: dict[str, Any] = {"runs": len(runs)}
    for part in ("all", "first", "second"):
        rows = [r["halves"][part] for r in runs if r["halves"][part].get("answered")]
        if not rows:
            continue
        shares = [r["strong_share"] for r in rows]
        gap = _interval([r["random_mix_gap"] for r in rows])
        pgrs = [r["pgr"] for r in rows if r["pgr"] is not None]
        out[part] = {
            "strong_share_mean": statistics.fmean(shares),
            "strong_share_min": min(shares),
            "runs_strong_share_at_least_95": sum(s >= SHARE_GOAL for s in shares),
            "quality": statistics.fmean(r["quality"] for r in rows),
            "cost_per_1k": statistics.fmean(r["cost_per_1k"] for r in rows),
            "pgr": statistics.fmean(pgrs) if pgrs else None,
            "random_mix_gap": {"mean": gap[0], "low": gap[1], "high": gap[2]},
            "always_strong": {
                k: statistics.fmean(r["always_strong"][k] for r in rows)
                for k in ("quality", "cost_per_1k")
            },
            "always_weak": {
                k: statistics.fmean(r["always_weak"][k] for r in rows)
                for k in ("quality", "cost_per_1k")
            },
            "oracle": {
                k: statistics.fmean(r["oracle"][k] for r in rows)
                for k in ("quality", "cost_per_1k", "strong_share")
            },
        }
    return out


# -- the command ------------------------------------------------------------------------
def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/replay.py", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="gsm8k,mt_bench", help="gsm8k, mt_bench or both")
    parser.add_argument("--seeds", default="1-13", type=parse_seeds, help="e.g. 1-13 or 1,4")
    parser.add_argument("--prompts", type=int, default=None, help="per run (default: 600 / all)")
    parser.add_argument("--optimization", default="accuracy")
    parser.add_argument(
        "--tolerances",
        default=None,
        help="also run optimization cost with each of these quality tolerances (0-1)",
    )
    parser.add_argument("--rated", type=float, default=0.3, help="share of answers rated")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--route-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="added to the route's YAML (VALUE read as YAML), for every run",
    )
    parser.add_argument("--sim", action="store_true", help="in-process: fast, approximate")
    parser.add_argument("--json", default=None, help="default bench/results/replay-DATE.json")
    args = parser.parse_args(argv)
    args.data = [d.strip() for d in args.data.split(",") if d.strip()]
    args.settings = [Setting(args.optimization)]
    if args.tolerances:
        try:
            values = [float(t) for t in args.tolerances.split(",")]
        except ValueError:
            parser.error(f"--tolerances: expected numbers, got {args.tolerances!r}")
        if not all(0 <= t <= 1 for t in values):
            parser.error("--tolerances: each must be from 0 to 1")
        args.settings += [Setting("cost", t) for t in values]
    options: dict[str, Any] = {}
    for item in args.route_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--route-option: expected KEY=VALUE, got {item!r}")
        options[key] = yaml.safe_load(value)
    args.options = options
    return args


async def _real(
    args: argparse.Namespace, name: str, prompts: list[Prompt], workdir: Path
) -> dict[str, list[dict[str, Any]]]:
    upstream = RecordedUpstream(prompts)
    await upstream.start()
    out: dict[str, list[dict[str, Any]]] = {}
    try:
        for setting in args.settings:
            for seed in args.seeds:
                chosen = run_prompts(prompts, seed, args.prompts or DEFAULT_PROMPTS[name])
                served = await replay(
                    chosen, setting, seed, args.rated, args.concurrency, upstream, workdir,
                    args.options,
                )  # fmt: skip
                _keep(out, name, setting, seed, served)
    finally:
        await upstream.stop()
    return out


def _keep(
    out: dict[str, list[dict[str, Any]]],
    name: str,
    setting: Setting,
    seed: int,
    served: list[Served],
) -> None:
    row = {"seed": seed, "halves": halves(served)}
    out.setdefault(setting.name, []).append(row)
    second = row["halves"]["second"]
    print(
        f"  {name} {setting.name} seed {seed}: strong {second.get('strong_share', 0):.3f} of the "
        f"second half, quality {row['halves']['all'].get('quality', 0):.3f}",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    began = time.monotonic()
    report: dict[str, Any] = {
        "benchmark": "replay",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "simulated" if args.sim else "real gateway",
        "seeds": args.seeds,
        "rated": args.rated,
        "concurrency": args.concurrency,
        "route_options": args.options,
        "python": platform.python_version(),
        "data": {},
    }
    for name in args.data:
        prompts = load(name)
        if args.sim:
            runs: dict[str, list[dict[str, Any]]] = {}
            for setting in args.settings:
                for seed in args.seeds:
                    chosen = run_prompts(prompts, seed, args.prompts or DEFAULT_PROMPTS[name])
                    served = simulate(
                        chosen, setting, seed, args.rated, args.concurrency, args.options
                    )
                    _keep(runs, name, setting, seed, served)
        else:
            with tempfile.TemporaryDirectory(prefix="gatewise-replay-") as tmp:
                runs = asyncio.run(_real(args, name, prompts, Path(tmp)))
        report["data"][name] = {
            "prompts_per_run": args.prompts or DEFAULT_PROMPTS[name] or len(prompts),
            "settings": {
                setting: {"summary": summarize(rows), "runs": rows}
                for setting, rows in runs.items()
            },
        }
    report["duration_seconds"] = round(time.monotonic() - began, 1)
    path = (
        Path(args.json)
        if args.json
        else ROOT / "bench" / "results" / f"replay-{dt.date.today()}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print(render(report))
    print(f"\n{report['duration_seconds']:.0f} s; results in {path}")
    return 0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _qc(line: dict[str, float]) -> str:
    return f"{line['quality']:.3f} / {line['cost_per_1k']:.3f}"


def render(report: dict[str, Any]) -> str:
    lines = [
        "| data | setting | half | strong share (mean / min) | runs ≥ 95 % | quality "
        "| $ per 1k | PGR | gap to random mix (95 % CI) | always strong q / $ | always weak q / $ "
        "| oracle q / $ / strong |",
        "|---|---|---|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for name, data in report["data"].items():
        for setting, block in data["settings"].items():
            s = block["summary"]
            for part in ("all", "first", "second"):
                if part not in s:
                    continue
                p = s[part]
                g = p["random_mix_gap"]
                pgr = "-" if p["pgr"] is None else f"{p['pgr']:.2f}"
                lines.append(
                    f"| {name} | {setting} | {part} "
                    f"| {_pct(p['strong_share_mean'])} / {_pct(p['strong_share_min'])} "
                    f"| {p['runs_strong_share_at_least_95']} of {s['runs']} | {p['quality']:.3f} "
                    f"| {p['cost_per_1k']:.3f} | {pgr} "
                    f"| {g['mean']:+.3f} ({g['low']:+.3f}, {g['high']:+.3f}) "
                    f"| {_qc(p['always_strong'])} | {_qc(p['always_weak'])} "
                    f"| {p['oracle']['quality']:.3f} / {p['oracle']['cost_per_1k']:.3f} / "
                    f"{_pct(p['oracle']['strong_share'])} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
