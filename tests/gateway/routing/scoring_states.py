"""Random tracker states for the scoring tests: models with random priors and prices,
changed step by step the ways live traffic changes them (attempts, ratings, automatic
scores, benching and returning, a restore from the store)."""

from __future__ import annotations

import random

from gateway.core.config import ModelConfig, parse_config
from gateway.core.types import Attempt
from gateway.routing.blacklist import Blacklist
from gateway.routing.recorder import learn
from gateway.routing.selection import Selector
from gateway.routing.tracker import FEEDBACK_DIMENSIONS, Stats, Tracker

T0 = 1_700_000_000.0
TT = "text-to-text"
OPTIMIZATIONS = ("accuracy", "cost", "speed", "creativity", "continuity")


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RandomState:
    """A tracker and selector over `models` random models, and random changes to it."""

    def __init__(self, seed: int, models: int = 8) -> None:
        self.rng = rng = random.Random(seed)
        raw = {
            "providers": [{"name": "up", "type": "mock"}],
            "models": [
                {
                    "name": f"m{i}",
                    "provider": "up",
                    "pricing": (
                        {}  # free
                        if rng.random() < 0.2
                        else {
                            "input_per_million": rng.uniform(0.05, 5),
                            "output_per_million": rng.uniform(0.2, 15),
                        }
                    ),
                    "priors": {k: rng.randint(3, 10) for k in ("accuracy", "creativity", "speed")},
                }
                for i in range(models)
            ],
            "routes": [{"name": "auto", "models": [f"m{i}" for i in range(models)]}],
            "selection": {"exploration_rate": 0, "prior_weight": rng.choice([5, 20])},
        }
        self.config = parse_config(raw)
        self.models: list[ModelConfig] = list(self.config.models)
        self.clock = Clock()
        self.blacklist = Blacklist(threshold=3, base_seconds=60, clock=self.clock)
        self.tracker = Tracker(clock=self.clock)
        self.selector = Selector(
            self.tracker, self.blacklist, self.config.selection, clock=self.clock
        )
        self.latency = {m.name: rng.uniform(50, 3000) for m in self.models}

    def step(self) -> None:
        """One random change, mostly an attempt."""
        rng = self.rng
        name = rng.choice(self.models).name
        roll = rng.random()
        self.clock.now += rng.uniform(0, 30)
        if roll < 0.7:
            ok = rng.random() < 0.85
            base = self.latency[name]
            learn(
                self.tracker,
                self.blacklist,
                Attempt(
                    "req", None, 1, name, "up", TT, None, None, ok,
                    latency_ms=base * rng.uniform(0.5, 2),
                    ttft_ms=base * 0.2 if rng.random() < 0.5 else None,
                    prompt_tokens=rng.randint(0, 2000) if ok else 0,
                    completion_tokens=rng.randint(0, 900) if ok else 0,
                    timestamp=self.clock(),
                    counts_as_failure=not ok and rng.random() < 0.9,
                    conversation_id=f"c{rng.randrange(5)}",
                ),
            )  # fmt: skip
        elif roll < 0.85:
            dims = rng.sample(FEEDBACK_DIMENSIONS, rng.randint(1, 3))
            scores = {d: float(rng.randint(1, 5)) for d in dims}
            previous = {d: 3.0 for d in dims} if rng.random() < 0.2 else None
            self.tracker.add_feedback(name, TT, scores, previous)
        elif roll < 0.97:
            self.tracker.add_auto_score(name, TT, rng.random(), ["flag"] * rng.randint(0, 1))
        elif roll < 0.99:
            self.clock.now += 120  # benched models return, with a clean recent record
        else:
            self.restore()

    def restore(self) -> None:
        """What a fleet round does: every view replaced by a new Stats object, here the
        own stats combined with a peer that published a copy of some of them."""
        rng = self.rng
        peers = {
            key: [(Stats.from_dict(stats.to_dict(), self.clock), rng.random())]
            for key, stats in self.tracker.own().items()
            if rng.random() < 0.5
        }
        self.tracker.set_peers(peers)

    def explained(
        self, optimization: str, stream: bool, models: list[ModelConfig] | None = None
    ) -> dict[str, float]:
        """Every model's total (among `models`, all by default), as the admin rankings
        compute and explain it."""
        self.blacklist.active()  # models due back return now, not while being scored
        peers = self.models if models is None else models
        scores = self.selector.rankings(peers, TT, optimization, stream)
        return {s.model: s.total for s in scores}
