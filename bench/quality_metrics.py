"""Turns recorded runs into routing-quality metrics, checks them against the targets
and renders the markdown report."""

from __future__ import annotations

import itertools
import math
from statistics import mean
from typing import Any

from bench.quality_run import Run
from bench.quality_scenarios import Outage, Scenario

__all__ = ["check_targets", "measure", "regret_ratio", "render"]

RATINGS_TARGET = 200
REGRET_RATIO_TARGET = 5.0
BEST_SHARE_TARGET = 0.9
WASTED_TARGET = 3


def regret_ratio(gatewise: dict[str, Any], round_robin: dict[str, Any]) -> float:
    """Round-robin's regret over Gatewise's (inf when Gatewise lost nothing)."""
    return round_robin["regret"] / gatewise["regret"] if gatewise["regret"] > 0 else math.inf


def _share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _phases(sc: Scenario) -> list[tuple[int, int]]:
    edges = [0, *sc.boundaries(), sc.requests]
    return list(itertools.pairwise(edges))


def _warming(sc: Scenario, step: int) -> bool:
    return any(b <= step < b + sc.warmup for b in (0, *sc.boundaries()))


def measure(run: Run) -> dict[str, Any]:
    sc, recs = run.scenario, sorted(run.records, key=lambda r: r.step)
    ok = [r.status == 200 for r in recs]
    regrets = [sc.regret(r.model if r.status == 200 else None, r.step) for r in recs]
    is_best = [r.status == 200 and r.model == sc.best(r.step) for r in recs]
    latencies = sorted((r.done - r.sent) * 1000 for r in recs)
    served: dict[str, int] = {}
    for r in recs:
        if r.model is not None:
            served[r.model] = served.get(r.model, 0) + 1
    out: dict[str, Any] = {
        "requests": len(recs),
        "seconds": round(run.seconds, 3),
        "regret": round(mean(regrets), 6),
        "regret_by_phase": [
            {"steps": [a, b], "regret": round(mean(regrets[a:b]), 6)} for a, b in _phases(sc)
        ],
        "mean_value": round(mean(sc.value(r.model, r.step) for r in recs if r.model), 6),
        "oracle_value": round(mean(sc.value(sc.best(s), s) for s in range(len(recs))), 6),
        "best_share_after_warmup": _share(
            [b for r, b in zip(recs, is_best, strict=True) if not _warming(sc, r.step)]
        ),
        "failures": ok.count(False),
        "failures_with_healthy_alternative": sum(
            1 for r, good in zip(recs, ok, strict=True) if not good and sc.has_healthy(r.step)
        ),
        "upstream_attempts": len(run.hits),
        "attempts_per_request": round(len(run.hits) / max(1, len(recs)), 4),
        "failed_attempts": sum(1 for h in run.hits if h.status != 200),
        "served": {m: round(served.get(m, 0) / max(1, len(recs)), 4) for m in sc.names},
        "client_latency_ms": {
            "p50": round(latencies[len(latencies) // 2], 2),
            "p95": round(latencies[int(len(latencies) * 0.95)], 2),
        },
        "ratings": sum(r.rated for r in recs),
    }
    if sc.feedback_rate:
        out.update(_after_ratings(sc, recs, is_best))
    if sc.outages:
        out["outages"] = [_outage(run, recs, o) for o in sc.outages]
    if run.scores is not None:
        out["gateway_scores_at_end"] = run.scores
    return out


def _after_ratings(sc: Scenario, recs: list, is_best: list[bool]) -> dict[str, Any]:
    """Share of requests that reached the best model once RATINGS_TARGET ratings were in,
    counted afresh in each phase (a change resets what was learnt about the truth)."""
    overall: list[bool] = []
    phases = []
    for a, b in _phases(sc):
        base = recs[a].ratings_before
        flags = [is_best[i] for i in range(a, b) if recs[i].ratings_before - base >= RATINGS_TARGET]
        overall += flags
        phases.append({"steps": [a, b], "requests": len(flags), "best_share": _share(flags)})
    return {"best_share_after_200_ratings": _share(overall), "after_200_ratings_by_phase": phases}


def _outage(run: Run, recs: list, outage: Outage) -> dict[str, Any]:
    sc = run.scenario
    start = recs[outage.start].sent
    end = recs[outage.end].sent if outage.end < len(recs) else recs[-1].done
    hits = sorted(
        (h for h in run.hits if h.model == outage.model and outage.start <= h.step < outage.end),
        key=lambda h: h.at,
    )
    times = [h.at for h in hits]
    gap = max(0.1, sc.blacklist_seconds / 2)
    burst, moved = len(times), not times  # attempts until traffic first stopped for `gap`
    for i, t in enumerate(times):
        nxt = times[i + 1] if i + 1 < len(times) else end
        if nxt - t > gap:
            burst, moved = i + 1, True
            break
    away = (times[burst - 1] - start if times else 0.0) if moved else None
    back = next(
        (r for r in recs[outage.end :] if r.status == 200 and r.model == outage.model), None
    )
    window = recs[outage.start : outage.end]
    return {
        "model": outage.model,
        "steps": [outage.start, outage.end],
        "seconds": round(end - start, 3),
        "client_failures": sum(1 for r in window if r.status != 200),
        "wasted_attempts": len(times),
        "wasted_before_moving_away": burst,
        "probe_attempts": len(times) - burst,
        "away_seconds": None if away is None else round(away, 3),
        "away_after_requests": None if away is None else _away_steps(hits[:burst], outage),
        "back_seconds": None if back is None else round(back.done - end, 3),
        "back_after_requests": None if back is None else back.step - outage.end,
    }


def _away_steps(burst: list, outage: Outage) -> int:
    """Client requests sent from the outage start until the last attempt of the burst."""
    return max((h.step for h in burst), default=outage.start - 1) - outage.start + 1


def check_targets(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def add(scenario: str, name: str, measured: Any, goal: str, passed: bool) -> None:
        checks.append(
            {
                "scenario": scenario,
                "target": name,
                "measured": measured,
                "goal": goal,
                "passed": bool(passed),
            }
        )

    for name, by in results.items():
        gw, rr = by.get("gatewise"), by.get("round-robin")
        if gw is None:
            continue
        if name != "outage" and rr is not None:
            ratio = regret_ratio(gw, rr)
            shown = None if math.isinf(ratio) else round(ratio, 2)
            add(
                name,
                "regret ratio round-robin / gatewise",
                shown,
                ">= 5",
                ratio >= REGRET_RATIO_TARGET,
            )
        if "best_share_after_200_ratings" in gw:
            share = gw["best_share_after_200_ratings"]
            add(
                name,
                "best-model share after 200 ratings",
                share,
                ">= 0.90",
                share is not None and share >= BEST_SHARE_TARGET,
            )
        fails = gw["failures_with_healthy_alternative"]
        add(name, "client failures while a healthy model exists", fails, "0", fails == 0)
        for o in gw.get("outages", []):
            wasted = o["wasted_before_moving_away"]
            add(
                name,
                f"wasted attempts before the blacklist ({o['model']} down)",
                wasted,
                "<= 3",
                o["away_seconds"] is not None and wasted <= WASTED_TARGET,
            )
    return checks


def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "never" if unit == "s" else "-"
    if isinstance(value, float):
        text = f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def render(
    results: dict[str, dict[str, dict[str, Any]]],
    scenarios: dict[str, Scenario],
    checks: list[dict[str, Any]],
) -> str:
    lines = [
        "| scenario | strategy | regret/req | RR ÷ this | best share | after 200 ratings "
        "| failures | wasted (burst+probes) | away | back | attempts/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by in results.items():
        sc = scenarios[name]
        rr = by.get("round-robin", {}).get("regret")
        for strategy, m in by.items():
            ratio = "-" if rr is None else ("∞" if m["regret"] <= 0 else f"{rr / m['regret']:.1f}x")
            outages = m.get("outages", [])
            wasted = ", ".join(
                f"{o['wasted_attempts']} ({o['wasted_before_moving_away']}+{o['probe_attempts']})"
                for o in outages
            )
            away = ", ".join(_num(o["away_seconds"], "s") for o in outages)
            back = ", ".join(_num(o["back_seconds"], "s") for o in outages)
            lines.append(
                f"| {name} | {strategy} | {_num(m['regret'], sc.unit)} | {ratio} "
                f"| {_num(m['best_share_after_warmup'])} "
                f"| {_num(m.get('best_share_after_200_ratings'))} | {m['failures']} "
                f"| {wasted or '-'} | {away or '-'} | {back or '-'} "
                f"| {m['attempts_per_request']:.2f} |"
            )
    strategies = list(next(iter(results.values()), {}))
    lines += ["", f"| regret by phase | steps | {' | '.join(strategies)} |"]
    lines.append("|---|---|" + "---|" * len(strategies))
    for name, by in results.items():
        for i, phase in enumerate(next(iter(by.values()))["regret_by_phase"]):
            a, b = phase["steps"]
            cells = [_num(by[s]["regret_by_phase"][i]["regret"], scenarios[name].unit) for s in by]
            lines.append(f"| {name} | {a}-{b} | {' | '.join(cells)} |")
    lines += ["", "| target | scenario | measured | goal | result |", "|---|---|---|---|---|"]
    for c in checks:
        shown = "∞" if c["measured"] is None and "ratio" in c["target"] else _num(c["measured"])
        lines.append(
            f"| {c['target']} | {c['scenario']} | {shown} | {c['goal']} "
            f"| {'PASS' if c['passed'] else 'FAIL'} |"
        )
    return "\n".join(lines)
