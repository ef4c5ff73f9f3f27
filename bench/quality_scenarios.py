"""Scenarios for the routing-quality benchmark: upstream models whose truth is known.

Every model's true quality, latency, token counts, price and failure rate are a
function of the *step* (the index of the client request, carried in the prompt),
so the scripted upstream, the oracle and the metrics all agree on what was true
when a request was served, whatever the concurrency.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SCENARIO_NAMES",
    "Change",
    "ModelSpec",
    "Outage",
    "Scenario",
    "Truth",
    "build_scenarios",
    "rating_for",
]

SCENARIO_NAMES = ("speed", "cost", "accuracy", "outage")
UNITS = {"speed": "ms", "cost": "µ$", "accuracy": "quality"}


@dataclass(frozen=True, slots=True)
class Truth:
    quality: float = 0.7  # 0..1, revealed to the gateway only through user feedback
    latency_ms: float = 10.0  # the upstream really waits this long
    prompt_tokens: int = 400
    completion_tokens: int = 200
    fail_rate: float = 0.0  # random 500s, independent of outages


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    truth: Truth
    input_per_million: float = 1.0
    output_per_million: float = 2.0

    def cost(self, truth: Truth) -> float:
        """True $ per request at the given truth."""
        return (
            truth.prompt_tokens * self.input_per_million
            + truth.completion_tokens * self.output_per_million
        ) / 1e6


@dataclass(frozen=True, slots=True)
class Change:
    """From `step` on, `model` has these Truth fields replaced."""

    step: int
    model: str
    updates: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Outage:
    """`model` answers HTTP 503 for every request whose step is in [start, end)."""

    model: str
    start: int
    end: int


@dataclass
class Scenario:
    name: str
    description: str
    optimization: str  # speed | cost | accuracy: the criterion the route optimises
    models: list[ModelSpec]  # in route order (also the fixed-priority baseline's order)
    requests: int
    concurrency: int = 8
    rate: float | None = None  # requests/s when paced (needed where wall time matters)
    changes: list[Change] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    feedback_rate: float = 0.0  # share of answers the simulated users rate
    warmup: int = 100  # requests ignored by best-share after the start and each change
    blacklist_seconds: float = 2.0
    _truths: dict[str, list[Truth]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for spec in self.models:
            row, current = [], spec.truth
            changes = sorted((c for c in self.changes if c.model == spec.name), key=_step)
            for step in range(self.requests):
                while changes and changes[0].step <= step:
                    current = dataclasses.replace(current, **dict(changes.pop(0).updates))
                row.append(current)
            self._truths[spec.name] = row

    # -- truth ----------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def unit(self) -> str:
        return UNITS[self.optimization]

    def spec(self, model: str) -> ModelSpec:
        return next(m for m in self.models if m.name == model)

    def truth(self, model: str, step: int) -> Truth:
        return self._truths[model][min(max(step, 0), self.requests - 1)]

    def down(self, model: str, step: int) -> bool:
        return any(o.model == model and o.start <= step < o.end for o in self.outages)

    def value(self, model: str, step: int) -> float:
        """The criterion's true value, in display units (ms, µ$ per request, quality 0-1)."""
        truth = self.truth(model, step)
        if self.optimization == "speed":
            return truth.latency_ms
        if self.optimization == "cost":
            return self.spec(model).cost(truth) * 1e6
        return truth.quality

    @property
    def lower_is_better(self) -> bool:
        return self.optimization in ("speed", "cost")

    def best(self, step: int) -> str:
        """The oracle's choice: the best model that is not in an outage."""
        healthy = [m for m in self.names if not self.down(m, step)] or self.names
        pick = min if self.lower_is_better else max
        return pick(healthy, key=lambda m: self.value(m, step))

    def worst_value(self, step: int) -> float:
        values = [self.value(m, step) for m in self.names]
        return max(values) if self.lower_is_better else 0.0

    def regret(self, model: str | None, step: int) -> float:
        """What the request lost against the oracle; a failed request gets the worst value."""
        oracle = self.value(self.best(step), step)
        got = self.value(model, step) if model is not None else self.worst_value(step)
        return got - oracle if self.lower_is_better else oracle - got

    def user_rating(self, model: str, step: int, seed: int) -> int | None:
        """The simulated user's 1-5 rating of `model`'s answer to `step`, or None when the
        user does not rate it. Drawn from (seed, step) alone, so the real run and the
        simulation (bench/quality_sim.py) see the same users."""
        if not self.feedback_rate:
            return None
        rng = random.Random(f"{seed}:feedback:{step}")
        if rng.random() >= self.feedback_rate:
            return None
        return rating_for(self.truth(model, step).quality, rng.gauss(0, 0.5))

    def has_healthy(self, step: int) -> bool:
        return any(not self.down(m, step) for m in self.names)

    def boundaries(self) -> list[int]:
        """Steps where the truth changes: phases for per-phase metrics and warm-ups."""
        points = {c.step for c in self.changes}
        for o in self.outages:
            points.update((o.start, o.end))
        return sorted(p for p in points if 0 < p < self.requests)

    # -- the gateway under test -------------------------------------------------------
    def gateway_config(self, upstream_url: str, seed: int) -> dict[str, Any]:
        return {
            "server": {"log_level": "warning"},
            "providers": [
                {
                    "name": "bench",
                    "type": "openai",
                    "base_url": upstream_url,
                    "timeout": 10,
                    "connect_timeout": 2,
                }
            ],
            "models": [
                {
                    "name": m.name,
                    "provider": "bench",
                    "context_window": 32000,
                    "pricing": {
                        "input_per_million": m.input_per_million,
                        "output_per_million": m.output_per_million,
                    },
                }
                for m in self.models
            ],
            "routes": [{"name": "bench", "models": self.names, "optimization": self.optimization}],
            "selection": {
                "exploration_rate": 0.02,
                "seed": seed,
                "score_refresh_seconds": 0,
                "blacklist_base_seconds": self.blacklist_seconds,
                "blacklist_max_seconds": self.blacklist_seconds * 8,
            },
            "storage": {"url": "memory://"},
        }


def _step(change: Change) -> int:
    return change.step


def rating_for(quality: float, gauss: float) -> int:
    """A simulated user's 1-5 rating of an answer of true quality q (gauss ~ N(0, 0.5))."""
    return max(1, min(5, round(1 + 4 * quality + gauss)))


def build_scenarios(quick: bool = False) -> dict[str, Scenario]:
    if quick:
        speed_n, cost_n, acc_n, out_n = 240, 240, 800, 360
    else:
        speed_n, cost_n, acc_n, out_n = 2000, 1600, 4000, 1800
    out_rate = 150.0
    out_seconds = 0.4 * out_n / out_rate
    return {
        "speed": Scenario(
            "speed",
            "latencies 40/10/80/20 ms; the fastest (bravo) slows to 100 ms halfway",
            "speed",
            [
                ModelSpec("alpha", Truth(latency_ms=40)),
                ModelSpec("bravo", Truth(latency_ms=10)),
                ModelSpec("charlie", Truth(latency_ms=80)),
                ModelSpec("delta", Truth(latency_ms=20)),
            ],
            speed_n,
            changes=[Change(speed_n // 2, "bravo", (("latency_ms", 100.0),))],
            warmup=max(50, speed_n // 10),
        ),
        "cost": Scenario(
            "cost",
            "prices x token counts: bravo is cheap per token but verbose; charlie is cheapest "
            "until it turns verbose (150 -> 600 completion tokens) halfway",
            "cost",
            [
                ModelSpec("alpha", Truth(completion_tokens=300), 0.50, 1.50),
                ModelSpec("bravo", Truth(completion_tokens=900), 0.15, 0.60),
                ModelSpec("charlie", Truth(completion_tokens=150), 0.25, 1.00),
                ModelSpec("delta", Truth(completion_tokens=200), 1.00, 4.00),
            ],
            cost_n,
            changes=[Change(cost_n // 2, "charlie", (("completion_tokens", 600),))],
            warmup=max(50, cost_n // 10),
        ),
        "accuracy": Scenario(
            "accuracy",
            "true quality .62/.85/.55/.72, users rate a share of answers; delta improves to "
            ".95 halfway",
            "accuracy",
            [
                ModelSpec("alpha", Truth(quality=0.62)),
                ModelSpec("bravo", Truth(quality=0.85)),
                ModelSpec("charlie", Truth(quality=0.55)),
                ModelSpec("delta", Truth(quality=0.72)),
            ],
            acc_n,
            changes=[Change(acc_n // 2, "delta", (("quality", 0.95),))],
            feedback_rate=0.6 if quick else 0.3,
            warmup=max(50, acc_n // 10),
        ),
        "outage": Scenario(
            "outage",
            f"speed route 20/40/60 ms (charlie fails 5% at random); the best (alpha) returns "
            f"503 for {out_seconds:g} s in the middle; paced at {out_rate:g} req/s",
            "speed",
            [
                ModelSpec("alpha", Truth(latency_ms=20)),
                ModelSpec("bravo", Truth(latency_ms=40)),
                ModelSpec("charlie", Truth(latency_ms=60, fail_rate=0.05)),
            ],
            out_n,
            rate=out_rate,
            outages=[Outage("alpha", int(out_n * 0.3), int(out_n * 0.7))],
            warmup=max(50, out_n // 20),
            # benched 0.4, then 0.8 more: 1.2 x the outage, so the way back is observable
            blacklist_seconds=round(0.4 * out_seconds, 3),
        ),
    }
