"""The SQL of same-prompt pairs and their pairwise verdicts (schema version 5), shared by
the SQLite and PostgreSQL stores: the statements differ only in their placeholders.

A pair is two answers to one prompt (the client's, `a`, and the challenger's shadow
answer, `b`) kept with their text, so that they can be judged blind whatever
`storage.log_payloads` says. A verdict says which of two answers was better; the latest
verdict on an unordered pair of answers replaces the earlier ones (`pair_key`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "PAIR_COLUMNS",
    "VERDICT_COLUMNS",
    "WINNERS",
    "PairSql",
    "pair_key",
    "pair_values",
    "previous_winner",
    "verdict_values",
]

PAIR_COLUMNS = (
    "pair_id", "comparison", "route", "a_response_id", "b_response_id", "model_a", "model_b",
    "prompt", "answer_a", "answer_b", "owner", "ts", "cost_b", "judged_at",
)  # fmt: skip
VERDICT_COLUMNS = (
    "pair_key", "a_response_id", "b_response_id", "model_a", "model_b", "winner", "pair_id",
    "route", "ts",
)  # fmt: skip
WINNERS = ("a", "b", "tie")
_FLIPPED = {"a": "b", "b": "a", "tie": "tie"}


def pair_key(a: str, b: str) -> str:
    """One key for two answers whichever way round they are given."""
    return f"{a}\x1f{b}" if a < b else f"{b}\x1f{a}"


def pair_values(pair: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(pair.get(name) for name in PAIR_COLUMNS)


def verdict_values(verdict: Mapping[str, Any]) -> tuple[Any, ...]:
    if verdict["winner"] not in WINNERS:
        raise ValueError(f"winner must be one of {WINNERS}, got {verdict['winner']!r}")
    key = pair_key(verdict["a_response_id"], verdict["b_response_id"])
    return (key, *(verdict.get(name) for name in VERDICT_COLUMNS[1:]))


def previous_winner(row: Sequence[Any] | None, a_response_id: str) -> str | None:
    """An earlier verdict's winner (its a_response_id, winner), as seen from the new
    verdict's `a`."""
    if row is None:
        return None
    earlier_a, winner = row[0], row[1]
    return str(winner) if earlier_a == a_response_id else _FLIPPED[str(winner)]


class PairSql:
    """The statements, with `placeholder(n)` for the n-th value (1-based)."""

    def __init__(self, placeholder: Callable[[int], str]) -> None:
        ph = placeholder
        cols = ", ".join(PAIR_COLUMNS)
        values = ", ".join(ph(n + 1) for n in range(len(PAIR_COLUMNS)))
        updates = ", ".join(f"{c} = excluded.{c}" for c in PAIR_COLUMNS[1:])
        self.upsert_pair = (
            f"INSERT INTO comparison_pairs ({cols}) VALUES ({values}) "
            f"ON CONFLICT (pair_id) DO UPDATE SET {updates}"
        )
        self.pair_of = (
            f"SELECT {cols} FROM comparison_pairs WHERE "
            f"(a_response_id = {ph(1)} AND b_response_id = {ph(2)}) OR "
            f"(a_response_id = {ph(2)} AND b_response_id = {ph(1)}) LIMIT 1"
        )
        # The newest pair not yet judged; {owner} is filled by `next_pair`.
        self.next_pair = (
            f"SELECT {cols} FROM comparison_pairs "
            "WHERE judged_at IS NULL AND answer_a IS NOT NULL{owner} "
            "ORDER BY ts DESC, pair_id DESC LIMIT {limit} OFFSET {offset}"
        )
        self.placeholder = ph
        vcols = ", ".join(VERDICT_COLUMNS)
        vvalues = ", ".join(ph(n + 1) for n in range(len(VERDICT_COLUMNS)))
        vupdates = ", ".join(f"{c} = excluded.{c}" for c in VERDICT_COLUMNS[1:])
        self.previous_verdict = (
            f"SELECT a_response_id, winner FROM pairwise_verdicts WHERE pair_key = {ph(1)}"
        )
        self.upsert_verdict = (
            f"INSERT INTO pairwise_verdicts ({vcols}) VALUES ({vvalues}) "
            f"ON CONFLICT (pair_key) DO UPDATE SET {vupdates}"
        )
        self.judged = f"UPDATE comparison_pairs SET judged_at = {ph(1)} WHERE pair_id = {ph(2)}"
        self.tallies = (
            "SELECT model_a, model_b, winner, COUNT(*) FROM pairwise_verdicts{route} "
            "GROUP BY model_a, model_b, winner ORDER BY model_a, model_b, winner"
        )
        # With the responses' payloads (prune_payloads): the text goes, the pair stays.
        self.prune_texts = (
            "UPDATE comparison_pairs SET prompt = NULL, answer_a = NULL, answer_b = NULL "
            f"WHERE ts < {ph(1)} AND answer_a IS NOT NULL"
        )
        self.pair_counts = (
            "SELECT comparison, COUNT(*), COUNT(judged_at) FROM comparison_pairs "
            "GROUP BY comparison ORDER BY comparison"
        )

    def next_pair_sql(
        self, owner: str | None, everyone: bool, offset: int
    ) -> tuple[str, list[Any]]:
        """The newest unjudged pair `owner` may see (`everyone`: the admin sees all; a
        pair with no owner was answered while the gateway was open, and is anyone's)."""
        if everyone:
            return self.next_pair.format(owner="", limit=self.placeholder(1),
                                         offset=self.placeholder(2)), [1, offset]  # fmt: skip
        clause = f" AND (owner = {self.placeholder(1)} OR owner IS NULL)"
        sql = self.next_pair.format(
            owner=clause, limit=self.placeholder(2), offset=self.placeholder(3)
        )
        return sql, [owner, 1, offset]

    def tallies_sql(self, route: str | None) -> tuple[str, list[Any]]:
        if route is None:
            return self.tallies.format(route=""), []
        return self.tallies.format(route=f" WHERE route = {self.placeholder(1)}"), [route]
