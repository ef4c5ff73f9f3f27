"""Live performance of every model per conversation type, kept in memory.

`record()` runs on the request path: O(1), no I/O, no locks (one event loop owns
it). Durable copies go to the store through the background writer.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.core.types import Attempt
from gateway.routing.histogram import WindowedHistogram

__all__ = [
    "AGING",
    "FEEDBACK_DIMENSIONS",
    "QUALITY_GROUPS",
    "RATING_AGING",
    "Stats",
    "Tracker",
    "aged",
    "combined",
    "rated",
]

log = logging.getLogger("gatewise.tracker")

FEEDBACK_DIMENSIONS = ("relevance", "accuracy", "helpfulness", "creativity", "overall")
_DECAY = 0.97  # recent success rate: an effective memory of ~33 attempts
_EWMA = 0.1
_TOKENS_EWMA = 0.05  # token counts vary more per request than latency does
# Evidence ages by attempts recorded, all models together (Tracker.seq): a model that
# has not served for a while is uncertain again. Halves in ~140 attempts.
AGING = 0.995
# What a quality optimization learns from: one rating is one observation of each group,
# the mean of the group's dimensions it fills (1-5 mapped to 0-1).
QUALITY_GROUPS = {
    "accuracy": ("accuracy", "overall", "relevance", "helpfulness"),
    "creativity": ("creativity",),
}
# Ratings fade by this per attempt recorded (all models): an effective memory of 1,000
# attempts (half of a rating's weight is left after ~700), so what a model was like
# long ago counts less, and a model that has not been rated for a while is uncertain
# again and gets re-tested; but the estimate rests on every rating of that window, not
# on the last ten (issue 22: a short unlucky run froze the best model out).
RATING_AGING = 0.999


@dataclass(slots=True)
class Stats:
    """One model serving one conversation type."""

    requests: int = 0
    successes: int = 0
    failures: int = 0
    client_errors: int = 0
    fallbacks: int = 0  # answers this model gave after another model had failed
    last_seq: int = 0  # the tracker's attempt count when this model last served
    # Requests served, each fading by AGING per attempt since (as of last_seq): how much
    # of the model has been seen lately, the evidence of the quality exploration bonus.
    served_recent: float = 0.0
    latency: WindowedHistogram = field(default_factory=WindowedHistogram)
    ttft: WindowedHistogram = field(default_factory=WindowedHistogram)
    latency_ewma: float | None = None
    ttft_ewma: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_count: int = 0
    # Recent tokens per answer, for the expected cost: a model that turns verbose must
    # get dearer within tens of answers, not after as many as it has ever given.
    prompt_ewma: float | None = None
    completion_ewma: float | None = None
    cost: float = 0.0
    recent_ok: float = 0.0
    recent_n: float = 0.0
    feedback: dict[str, list[float]] = field(default_factory=dict)  # dim -> [sum, count]
    # What the quality estimates rest on, per client key the rated answers belong to
    # ("" for answers with no owner, so scoring can keep any one key from outweighing the
    # others) and quality group: key -> group -> [weight, sum, sum of squares, seq, prior],
    # the ratings (0-1) fading by RATING_AGING per attempt, as of Tracker.seq `seq`, and
    # what is left of the prior, which fades alike from the first rating on.
    feedback_keys: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    auto_score_sum: float = 0.0
    auto_score_count: int = 0
    flags: dict[str, int] = field(default_factory=dict)  # evaluator flag -> answers flagged
    last_error: str | None = None
    last_error_class: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    changes: int = 0  # bumped on every change, so cached score parts know to refresh

    @property
    def success_rate(self) -> float | None:
        judged = self.successes + self.failures
        return self.successes / judged if judged else None

    @property
    def recent_success_rate(self) -> float | None:
        return self.recent_ok / self.recent_n if self.recent_n else None

    @property
    def mean_prompt_tokens(self) -> float | None:
        return self.prompt_tokens / self.usage_count if self.usage_count else None

    @property
    def mean_completion_tokens(self) -> float | None:
        return self.completion_tokens / self.usage_count if self.usage_count else None

    def feedback_mean(self, dimension: str) -> float | None:
        pair = self.feedback.get(dimension)
        return pair[0] / pair[1] if pair and pair[1] else None

    @property
    def auto_score(self) -> float | None:
        return self.auto_score_sum / self.auto_score_count if self.auto_score_count else None

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__}
        out["latency"] = self.latency.to_dict()
        out["ttft"] = self.ttft.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], clock: Callable[[], float]) -> Stats:
        fields = {k: v for k, v in data.items() if k in cls.__slots__}
        fields["latency"] = WindowedHistogram.from_dict(data["latency"], clock=clock)
        fields["ttft"] = WindowedHistogram.from_dict(data["ttft"], clock=clock)
        n = fields.get("usage_count") or 0
        if n and fields.get("completion_ewma") is None:  # saved before there were EWMAs
            fields["prompt_ewma"] = fields.get("prompt_tokens", 0) / n
            fields["completion_ewma"] = fields.get("completion_tokens", 0) / n
        if "served_recent" not in fields:  # saved before it existed: all served, aged since
            fields["served_recent"] = float(fields.get("requests", 0))
        keys = fields.get("feedback_keys")
        if any(isinstance(tallies, list) for tallies in (keys or {}).values()) or (
            keys is None and fields.get("feedback")
        ):
            # Saved before the quality tallies (issue 22): what the all-time means say,
            # as one anonymous key's ratings, each at its dimension's mean.
            fields["feedback_keys"] = {
                "": _from_means(fields["feedback"], fields.get("last_seq", 0))
            }
        return cls(**fields)


class Tracker:
    """Every model's live stats per conversation type, as routing sees them: what this
    process observed (its own) combined with what its peers in the fleet published
    (`Fleet` hands them in). Only `record()`, the feedback methods and `set_peers()`
    change them, and each change bumps `version` (scores refresh on it).

    Without peers for a model, the view is the process's own Stats object: one process
    pays for nothing it does not use."""

    def __init__(
        self, *, clock: Callable[[], float] = time.time, conversations: int = 50_000
    ) -> None:
        self.clock = clock
        self.version = 0  # bumps on every change, so scores know when to refresh
        self.own_version = 0  # bumps when this process's own observations change
        self.seq = 0  # attempts recorded, all models: the clock that ages evidence
        self.generation = 0  # bumps when Stats objects are created or replaced
        self.changes = 0  # Stats changes so far; the latest are in `changed`, newest last,
        self.changed: deque[Stats] = deque(maxlen=64)  # so caches refresh only those
        self._own: dict[tuple[str, str], Stats] = {}  # this process's observations
        self._stats: dict[tuple[str, str], Stats] = {}  # the view: own + peers
        self._peers: dict[tuple[str, str], list[tuple[Stats, float]]] = {}
        self._conversations: OrderedDict[str, str] = OrderedDict()
        self._conversation_limit = conversations

    def reset_recent(self, model: str) -> None:
        """Forget a model's recent successes and failures (it was just benched, or let
        back): the failures that benched it must not keep it from being tried again."""
        for table in (self._own, self._stats):
            for (name, _), stats in table.items():
                if name == model:
                    stats.recent_ok = stats.recent_n = 0.0
                    self._changed(stats)
        for (name, _), peers in self._peers.items():
            if name == model:
                for peer, _ in peers:
                    peer.recent_ok = peer.recent_n = 0.0
        self._bump()

    def _changed(self, stats: Stats) -> None:
        stats.changes += 1
        self.changes += 1
        self.changed.append(stats)

    def _bump(self) -> None:
        self.version += 1
        self.own_version += 1

    def stats(self, model: str, ctype: str) -> Stats | None:
        return self._stats.get((model, ctype))

    def items(self) -> Iterator[tuple[tuple[str, str], Stats]]:
        return iter(self._stats.items())

    def _targets(self, model: str, ctype: str) -> tuple[Stats, ...]:
        """The Stats a change applies to: the own one, and the view when it is apart."""
        key = (model, ctype)
        own = self._own.get(key)
        if own is None:
            own = self._own[key] = self._new()
            if key not in self._stats:
                self._stats[key] = own
            self.generation += 1
        view = self._stats[key]
        return (own,) if view is own else (own, view)

    def _new(self) -> Stats:
        return Stats(
            latency=WindowedHistogram(clock=self.clock), ttft=WindowedHistogram(clock=self.clock)
        )

    def record(self, attempt: Attempt) -> None:
        self.seq += 1
        for stats in self._targets(attempt.model, attempt.conversation_type):
            self._count(stats, attempt)
        if attempt.ok and attempt.conversation_id:
            self.remember(attempt.conversation_id, attempt.model)
        self._bump()

    def _count(self, stats: Stats, attempt: Attempt) -> None:
        stats.requests += 1
        self._changed(stats)
        stats.served_recent = aged(stats.served_recent, stats.last_seq, self.seq) + 1
        stats.last_seq = self.seq
        if attempt.ok:
            self._success(stats, attempt)
        elif attempt.counts_as_failure:
            stats.failures += 1
            stats.recent_ok *= _DECAY
            stats.recent_n = stats.recent_n * _DECAY + 1
            stats.last_error = attempt.error_message
            stats.last_error_class = attempt.error_class
            stats.last_error_at = attempt.timestamp
        else:
            stats.client_errors += 1

    def _success(self, stats: Stats, attempt: Attempt) -> None:
        stats.successes += 1
        if attempt.attempt > 1:
            stats.fallbacks += 1
        stats.recent_ok = stats.recent_ok * _DECAY + 1
        stats.recent_n = stats.recent_n * _DECAY + 1
        stats.last_success_at = attempt.timestamp
        latency = attempt.latency_ms
        stats.latency.record(latency)
        stats.latency_ewma = _ewma(stats.latency_ewma, latency)
        if attempt.ttft_ms is not None:
            stats.ttft.record(attempt.ttft_ms)
            stats.ttft_ewma = _ewma(stats.ttft_ewma, attempt.ttft_ms)
        if attempt.prompt_tokens or attempt.completion_tokens:
            stats.prompt_ewma = _ewma(stats.prompt_ewma, attempt.prompt_tokens, _TOKENS_EWMA)
            stats.completion_ewma = _ewma(
                stats.completion_ewma, attempt.completion_tokens, _TOKENS_EWMA
            )
            stats.prompt_tokens += attempt.prompt_tokens
            stats.completion_tokens += attempt.completion_tokens
            stats.usage_count += 1
        stats.cost += attempt.cost

    def remember(self, conversation: str, model: str) -> None:
        conversations = self._conversations
        conversations[conversation] = model
        conversations.move_to_end(conversation)
        if len(conversations) > self._conversation_limit:
            conversations.popitem(last=False)

    def last_model(self, conversation: str) -> str | None:
        return self._conversations.get(conversation)

    def add_feedback(
        self,
        model: str,
        ctype: str,
        scores: Mapping[str, float],
        previous: Mapping[str, float] | None = None,
        key: str = "",
    ) -> None:
        """Fold 1-5 ratings into the aggregates; a re-rating replaces its earlier scores.
        `key` is the client key the rated answer belongs to ("" for none)."""
        for stats in self._targets(model, ctype):
            _fold(stats.feedback, scores, previous)
            _observe(stats.feedback_keys.setdefault(key, {}), scores, previous, self.seq)
            self._changed(stats)
        self._bump()

    def add_auto_score(
        self, model: str, ctype: str, score: float, flags: Iterable[str] = ()
    ) -> None:
        for stats in self._targets(model, ctype):
            stats.auto_score_sum += score
            stats.auto_score_count += 1
            for flag in flags:
                stats.flags[flag] = stats.flags.get(flag, 0) + 1
            self._changed(stats)
        self._bump()

    # -- the fleet ---------------------------------------------------------------
    def own(self) -> dict[tuple[str, str], Stats]:
        """This process's own observations, by (model, conversation type)."""
        return dict(self._own)

    def set_peers(self, peers: Mapping[tuple[str, str], Sequence[tuple[Stats, float]]]) -> None:
        """Take in what the rest of the fleet observed: per (model, conversation type),
        each peer's Stats with how fresh it is (1.0: just published; its recent
        figures count that much). Replaces the peers given before."""
        if not self._peers and not any(peers.values()):
            return  # alone, and still alone: the views are the own stats already
        self._peers = {key: list(parts) for key, parts in peers.items() if parts}
        for key in set(self._stats) | set(self._peers):
            own = self._own.get(key)
            parts = self._peers.get(key)
            if not parts:
                if own is not None:
                    self._stats[key] = own
                else:
                    self._stats.pop(key, None)
                continue
            self._stats[key] = combined(own, parts, self.seq, self.clock)
        self.generation += 1
        self.version += 1


def _fold(
    feedback: dict[str, list[float]],
    scores: Mapping[str, float],
    previous: Mapping[str, float] | None,
) -> None:
    """One rating into the all-time tally (dim -> [sum, count]); a re-rating replaces."""
    for dimension, value in (previous or {}).items():
        pair = feedback.get(dimension)
        if pair and pair[1] > 0:
            pair[0] -= value
            pair[1] -= 1
    for dimension, value in scores.items():
        pair = feedback.setdefault(dimension, [0.0, 0])
        pair[0] += value
        pair[1] += 1


def _group_value(scores: Mapping[str, float], dims: Sequence[str]) -> float | None:
    """A rating's one observation of a quality group: its dimensions' mean, 0-1."""
    values = [scores[d] for d in dims if d in scores]
    return (sum(values) / len(values) - 1) / 4 if values else None


def _observe(
    groups: dict[str, list[float]],
    scores: Mapping[str, float],
    previous: Mapping[str, float] | None,
    seq: int,
) -> None:
    """One rating into one key's quality tallies: one observation per group it fills."""
    for group, dims in QUALITY_GROUPS.items():
        new = _group_value(scores, dims)
        old = _group_value(previous, dims) if previous else None
        if new is None and old is None:
            continue
        tally = groups.setdefault(group, [0.0, 0.0, 0.0, seq, 1.0])
        rated(tally, seq)
        if old is not None and tally[0] > 0:
            # The earlier rating has faded by an unknown amount: take out what it can
            # still weigh, keeping the tally one of 0-1 values.
            w = min(1.0, tally[0])
            tally[0] -= w
            tally[1] = min(max(tally[1] - w * old, 0.0), tally[0])
            tally[2] = min(max(tally[2] - w * old * old, 0.0), tally[1])
        if new is not None:
            tally[0] += 1
            tally[1] += new
            tally[2] += new * new


def rated(tally: list[float], seq: int) -> list[float]:
    """A quality tally ([weight, sum, sum of squares, seq, prior]) aged to `seq`, in place."""
    gap = seq - tally[3]
    if gap > 0:
        f = RATING_AGING**gap
        tally[0] *= f
        tally[1] *= f
        tally[2] *= f
        tally[4] *= f
        tally[3] = seq
    return tally


def _from_means(feedback: Mapping[str, Sequence[float]], seq: int) -> dict[str, list[float]]:
    groups: dict[str, list[float]] = {}
    for group, dims in QUALITY_GROUPS.items():
        pairs = [feedback[d] for d in dims if d in feedback and feedback[d][1]]
        if pairs:
            n = max(p[1] for p in pairs)
            mean = sum((p[0] / p[1] - 1) / 4 for p in pairs) / len(pairs)
            groups[group] = [float(n), n * mean, n * mean * mean, seq, 1.0]
    return groups


def combined(
    own: Stats | None,
    peers: Sequence[tuple[Stats, float]],
    seq: int,
    clock: Callable[[], float],
) -> Stats:
    """One model's Stats across the fleet: this process's own (its evidence aged to `seq`,
    its attempt count) and its peers' (each aged to its own count when published). Counts
    and sums add up; what is recent (success record, evidence, rating tallies) counts by
    how fresh each part is, and the moving averages are weighted by it; latency windows
    merge slot by slot."""
    parts = [*([] if own is None else [(own, 1.0)]), *peers]
    out = Stats(
        latency=WindowedHistogram.combined([p.latency for p, _ in parts], clock=clock),
        ttft=WindowedHistogram.combined([p.ttft for p, _ in parts], clock=clock),
    )
    weights: list[float] = []
    for part, fresh in parts:
        out.requests += part.requests
        out.successes += part.successes
        out.failures += part.failures
        out.client_errors += part.client_errors
        out.fallbacks += part.fallbacks
        out.prompt_tokens += part.prompt_tokens
        out.completion_tokens += part.completion_tokens
        out.usage_count += part.usage_count
        out.cost += part.cost
        out.auto_score_sum += part.auto_score_sum
        out.auto_score_count += part.auto_score_count
        out.recent_ok += fresh * part.recent_ok
        out.recent_n += fresh * part.recent_n
        served = part.served_recent
        out.served_recent += fresh * (aged(served, part.last_seq, seq) if part is own else served)
        for flag, n in part.flags.items():
            out.flags[flag] = out.flags.get(flag, 0) + n
        for dim, (total, count) in part.feedback.items():
            pair = out.feedback.setdefault(dim, [0.0, 0.0])
            pair[0] += total
            pair[1] += count
        for key, groups in part.feedback_keys.items():
            mine = out.feedback_keys.setdefault(key, {})
            for group, tally in groups.items():
                # Own tallies age to now; a peer's were aged to its own count.
                w, s1, s2, _, prior = rated(list(tally), seq) if part is own else tally
                into = mine.setdefault(group, [0.0, 0.0, 0.0, seq, 0.0])
                into[0] += fresh * w
                into[1] += fresh * s1
                into[2] += fresh * s2
                into[4] = max(into[4], prior)
        if part.last_error_at is not None and (
            out.last_error_at is None or part.last_error_at > out.last_error_at
        ):
            out.last_error = part.last_error
            out.last_error_class = part.last_error_class
            out.last_error_at = part.last_error_at
        if part.last_success_at is not None:
            out.last_success_at = max(out.last_success_at or 0.0, part.last_success_at)
        weights.append(fresh * max(part.recent_n, 1e-9))
    if out.requests:
        out.last_seq = seq
    for name in ("latency_ewma", "ttft_ewma", "prompt_ewma", "completion_ewma"):
        setattr(out, name, _weighted([getattr(p, name) for p, _ in parts], weights))
    return out


def _weighted(values: Sequence[float | None], weights: Sequence[float]) -> float | None:
    known = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None]
    if not known:
        return None
    total = sum(w for _, w in known)
    if total <= 0:  # only parts too old to weigh: none is better than another
        return sum(v for v, _ in known) / len(known)
    return sum(v * w for v, w in known) / total


def aged(n: float, last_seq: int, seq: int) -> float:
    """A model's evidence `n`, fading while the others serve and it does not
    (discounted UCB): what was true of it hundreds of requests ago may no longer be."""
    return n * AGING ** (seq - last_seq) if n else n


def _ewma(previous: float | None, value: float, alpha: float = _EWMA) -> float:
    return value if previous is None else previous + alpha * (value - previous)
