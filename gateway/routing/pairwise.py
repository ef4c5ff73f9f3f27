"""Pairwise judgements: which of two answers to one prompt is better, and what they
add up to.

Used by `POST /v1/feedback/pairwise` (a client key judges its own answers), by the
feedback page through the admin API (the admin judges any pair), and by
`GET /comparisons` for the results. A verdict is stored durably before the caller hears
2xx; a later verdict on the same two answers replaces the earlier one. Pending pairs
are handed out blind: the two answers in a random order, without their models.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from gateway.core.errors import InvalidFeedback, NotFound
from gateway.core.keys import Tenant
from gateway.routing.feedback import FeedbackService
from gateway.routing.pairstats import Tally, bradley_terry, wilson, z_of
from gateway.storage.pairs import WINNERS

__all__ = ["MAX_PAIRWISE_BYTES", "PairwiseService", "no_pending_pair", "parse_verdict", "results"]

MAX_PAIRWISE_BYTES = 4 * 1024  # two ids and a word
_FIELDS = ("a", "b", "winner")
_MAX_ID = 256


def no_pending_pair() -> NotFound:
    return NotFound("No pair of answers is waiting to be judged.", code="no_pending_pair")


def parse_verdict(payload: Any) -> tuple[str, str, str]:
    """Validate a verdict body; 422 with a message that names the field."""
    if not isinstance(payload, dict):
        raise InvalidFeedback("The pairwise feedback body must be a JSON object.")
    unknown = sorted(set(payload) - set(_FIELDS))
    if unknown:
        raise InvalidFeedback(
            f"Unknown field(s): {', '.join(unknown)}. Allowed: a, b, winner.", param=unknown[0]
        )
    ids = []
    for name in ("a", "b"):
        value = payload.get(name)
        if not isinstance(value, str) or not value.strip() or len(value) > _MAX_ID:
            raise InvalidFeedback(
                f"'{name}' is required: the response id of one of the two answers compared.",
                param=name,
            )
        ids.append(value.strip())
    winner = payload.get("winner")
    if winner not in WINNERS:
        raise InvalidFeedback(
            f'\'winner\' must be one of "a", "b" or "tie", got {_shown(winner)}.',
            param="winner",
        )
    if ids[0] == ids[1]:
        raise InvalidFeedback(
            "'a' and 'b' are the same answer; a pairwise judgement compares two answers.",
            param="b",
        )
    return ids[0], ids[1], str(winner)


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value[:40]}"'
    return "nothing" if value is None else text


class PairwiseService:
    def __init__(
        self,
        feedback: FeedbackService,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.feedback = feedback
        self.store = feedback.store
        self.clock = clock
        self._rng = rng or random.Random()

    async def submit(self, payload: Any, caller: Tenant | None = None) -> dict[str, Any]:
        """Record a verdict. `caller` None: the admin (or an open gateway); a key may
        judge only answers it received (any other is, to it, an unknown id)."""
        a, b, winner = parse_verdict(payload)
        records = []
        for name, response_id in (("a", a), ("b", b)):
            record = await self.feedback.lookup(response_id, caller)
            if record is None:
                raise NotFound(
                    f"No answer with response id '{response_id}' is known.",
                    param=name,
                    code="response_not_found",
                )
            records.append(record)
        first, second = records
        if first.model == second.model:
            raise InvalidFeedback(
                f"Both answers came from '{first.model}'; a pairwise judgement compares "
                "two models.",
                param="b",
            )
        async with self.feedback.store_needed():
            pair = await self.store.pair_of(a, b)
            previous = await self.store.add_verdict({
                "a_response_id": a, "b_response_id": b, "model_a": first.model,
                "model_b": second.model, "winner": winner,
                "pair_id": pair["pair_id"] if pair is not None else None,
                "route": pair["route"] if pair is not None else first.route,
                "ts": self.clock(),
            })  # fmt: skip
        return {
            "object": "pairwise_feedback",
            "a": a,
            "b": b,
            "winner": winner,
            "model_a": first.model,
            "model_b": second.model,
            "pair_id": pair["pair_id"] if pair is not None else None,
            "replaced_previous": previous is not None,
        }

    async def next_pair(
        self, caller: Tenant | None = None, offset: int = 0
    ) -> dict[str, Any] | None:
        """The newest pair not yet judged that `caller` may see, blind: the two answers
        in a random order, named only by their response ids (None: none is waiting)."""
        async with self.feedback.store_needed():
            everyone = caller is None
            pair = await self.store.next_pair(
                None if everyone else caller.name,  # type: ignore[union-attr]
                everyone=everyone,
                offset=offset,
            )
        if pair is None:
            return None
        sides = [
            {"response_id": pair["a_response_id"], "answer": pair["answer_a"]},
            {"response_id": pair["b_response_id"], "answer": pair["answer_b"]},
        ]
        self._rng.shuffle(sides)
        return {
            "object": "pair",
            "pair_id": pair["pair_id"],
            "prompt": pair["prompt"],
            "first": sides[0],
            "second": sides[1],
            "ts": pair["ts"],
        }


def results(tallies: list[dict[str, Any]], confidence: float = 0.95) -> dict[str, Any]:
    """Win rates per pair of models (ties apart; Wilson intervals) and a Bradley-Terry
    rating per model (Elo scale; intervals from the Fisher information), from the
    store's verdict tallies (`Store.verdict_tallies`)."""
    by_pair: dict[tuple[str, str], list[int]] = {}
    for row in tallies:
        a, b, winner, count = row["model_a"], row["model_b"], row["winner"], int(row["count"])
        if a > b:  # one entry per unordered pair of models, named in order
            a, b = b, a
            winner = {"a": "b", "b": "a"}.get(winner, winner)
        cell = by_pair.setdefault((a, b), [0, 0, 0])
        cell[{"a": 0, "b": 1, "tie": 2}[winner]] += count
    counted = [Tally(a, b, *cell) for (a, b), cell in sorted(by_pair.items())]
    pairs = []
    for t in counted:
        decisive = t.a_wins + t.b_wins
        interval = wilson(t.a_wins, decisive, confidence)
        pairs.append({
            "model_a": t.a, "model_b": t.b, "judgements": t.n, "a_wins": t.a_wins,
            "b_wins": t.b_wins, "ties": t.ties,
            "a_win_rate": round(t.a_wins / decisive, 4) if decisive else None,
            "a_win_rate_ci": [round(v, 4) for v in interval] if interval else None,
        })  # fmt: skip
    ratings = []
    order_decided = False
    if counted:
        fit = bradley_terry(counted)
        z = z_of(confidence)
        for rank, r in enumerate(fit.ratings, 1):
            ratings.append({
                "model": r.model, "rank": rank, "rating": round(r.elo(), 1),
                "rating_ci": [round(r.elo(-z), 1), round(r.elo(z), 1)],
                "strength": round(r.theta, 4), "strength_se": round(r.se, 4),
                "judgements": r.judgements,
            })  # fmt: skip
        order_decided = fit.separated(confidence)
    return {
        "confidence": confidence,
        "pairs": pairs,
        "ratings": ratings,
        "order_decided": order_decided,
        "method": (
            "win rates leave ties out, with Wilson score intervals; Bradley-Terry "
            "strengths by maximum likelihood (ties count half a win each, a N(0, 1) "
            "prior), shown on the Elo scale (1000 + 400·θ/ln 10) with Fisher-information "
            "intervals; order_decided: every model's lead over the next one down is "
            "outside its interval"
        ),
    }
