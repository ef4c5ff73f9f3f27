"""Real recorded answers of a strong and a weak model, as the replay benchmark uses them.

The data (../shared/data/routellm/, from RouteLLM) holds, per prompt, what GPT-4 ("strong")
and Mixtral ("weak") answered and how good each answer was: right or wrong on GSM8K, a
GPT-4 judge score from 1 to 10 on MT-Bench. A run replays a seeded shuffle of the
prompts; which answers the simulated users rate is drawn from (seed, position) alone,
whichever model served, so every strategy sees the same users.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import orjson

__all__ = [
    "DATA_DIR",
    "MODELS",
    "PRICES",
    "Prompt",
    "load",
    "rated",
    "run_prompts",
]

DATA_DIR = Path(os.environ.get("GATEWISE_ROUTELLM_DATA", "/work/shared/data/routellm"))
MODELS = ("weak", "strong")  # route order: the weak model listed first
# USD per million tokens (input, output), as at the time of the recordings.
PRICES = {"strong": (10.0, 30.0), "weak": (0.6, 0.6)}
DATASETS = ("gsm8k", "mt_bench")


@dataclass(frozen=True, slots=True)
class Prompt:
    """One recorded prompt: what to send, and per model its answer, its quality on the
    data set's own scale (GSM8K 0/1 correct, MT-Bench judge 1-10) and the 1-5 rating
    a user gives it (accuracy = overall)."""

    id: str
    messages: tuple[tuple[str, str], ...]  # (role, content)
    answers: dict[str, str]
    quality: dict[str, float]
    rating: dict[str, int]

    def tokens(self, model: str) -> tuple[int, int]:
        """Prompt and completion tokens (about 4 characters each)."""
        prompt = sum(len(content) for _, content in self.messages)
        return max(1, prompt // 4), max(1, len(self.answers[model]) // 4)

    def cost(self, model: str) -> float:
        prompt, completion = self.tokens(model)
        inp, out = PRICES[model]
        return (prompt * inp + completion * out) / 1e6


def _judge_rating(score: float) -> int:
    """A 1-10 judge score on the 1-5 rating scale."""
    return max(1, min(5, round(1 + (score - 1) * 4 / 9)))


def load(name: str, directory: Path = DATA_DIR) -> list[Prompt]:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}: expected one of {', '.join(DATASETS)}")
    rows = [orjson.loads(line) for line in (directory / f"{name}.jsonl").read_bytes().splitlines()]
    out = []
    for row in rows:
        answers = {m: row[f"{m}_answer"] for m in MODELS}
        if name == "gsm8k":
            quality = {m: float(bool(row[f"{m}_correct"])) for m in MODELS}
            rating = {m: 5 if quality[m] else 1 for m in MODELS}
            messages: tuple[tuple[str, str], ...] = (("user", row["prompt"]),)
        else:
            quality = {m: float(row[f"{m}_score"]) for m in MODELS}
            rating = {m: _judge_rating(quality[m]) for m in MODELS}
            messages = tuple(("user", turn) for turn in row["user_turns"])
        out.append(Prompt(str(row["id"]), messages, answers, quality, rating))
    return out


def run_prompts(prompts: list[Prompt], seed: int, count: int | None) -> list[Prompt]:
    """The prompts of one run: a seeded shuffle, the first `count` (all when None)."""
    order = list(prompts)
    random.Random(f"replay:{seed}").shuffle(order)
    return order[:count] if count else order


def rated(seed: int, position: int, share: float) -> bool:
    """Whether the user rates the answer to the run's `position`-th prompt."""
    return random.Random(f"replay:{seed}:rated:{position}").random() < share
