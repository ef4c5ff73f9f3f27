"""Live performance of every model per conversation type, kept in memory.

`record()` runs on the request path: O(1), no I/O, no locks (one event loop owns
it). Durable copies go to the store through the background writer.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.types import Attempt
from gateway.routing.histogram import WindowedHistogram

__all__ = ["AGING", "FEEDBACK_DIMENSIONS", "Stats", "Tracker", "aged"]

log = logging.getLogger("gatewise.tracker")

FEEDBACK_DIMENSIONS = ("relevance", "accuracy", "helpfulness", "creativity", "overall")
_DECAY = 0.97  # recent success rate: an effective memory of ~33 attempts
_EWMA = 0.1
_TOKENS_EWMA = 0.05  # token counts vary more per request than latency does
# Evidence ages by attempts recorded, all models together (Tracker.seq): a model that
# has not served for a while is uncertain again. Halves in ~140 attempts.
AGING = 0.995
# Recent feedback fades per rating (an effective memory of ~10 ratings per dimension) and,
# like evidence, with the attempts since the model was last rated: a model rated again
# after hundreds of attempts away is judged mostly by its new ratings, so a model that
# got better is noticed from the few ratings its exploration brings in.
_FEEDBACK_DECAY = 0.9


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
    # The same ratings with older ones fading, so a model that changes is noticed:
    # dim -> [weighted sum, weight, Tracker.seq at the last rating].
    feedback_recent: dict[str, list[float]] = field(default_factory=dict)
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
        for recent in (fields.get("feedback_recent") or {}).values():
            if len(recent) == 2:  # saved before ratings aged: as if last rated last served
                recent.append(fields.get("last_seq", 0))
        return cls(**fields)


class Tracker:
    """Every model's live stats per conversation type; only `record()` and the feedback
    methods change them, and each change bumps `version` (scores refresh on it)."""

    kind = "stats"  # what its snapshots are stored as

    def __init__(
        self, *, clock: Callable[[], float] = time.time, conversations: int = 50_000
    ) -> None:
        self.clock = clock
        self.version = 0  # bumps on every change, so scores know when to refresh
        self.seq = 0  # attempts recorded, all models: the clock that ages evidence
        self.generation = 0  # bumps when Stats objects are created or replaced
        self.changes = 0  # Stats changes so far; the latest are in `changed`, newest last,
        self.changed: deque[Stats] = deque(maxlen=64)  # so caches refresh only those
        self._stats: dict[tuple[str, str], Stats] = {}
        self._conversations: OrderedDict[str, str] = OrderedDict()
        self._conversation_limit = conversations

    def reset_recent(self, model: str) -> None:
        """Forget a model's recent successes and failures (it was just benched, or let
        back): the failures that benched it must not keep it from being tried again."""
        for (name, _), stats in self._stats.items():
            if name == model:
                stats.recent_ok = stats.recent_n = 0.0
                self._changed(stats)
        self.version += 1

    def _changed(self, stats: Stats) -> None:
        stats.changes += 1
        self.changes += 1
        self.changed.append(stats)

    def stats(self, model: str, ctype: str) -> Stats | None:
        return self._stats.get((model, ctype))

    def items(self) -> Iterator[tuple[tuple[str, str], Stats]]:
        return iter(self._stats.items())

    def _get(self, model: str, ctype: str) -> Stats:
        stats = self._stats.get((model, ctype))
        if stats is None:
            stats = self._stats[(model, ctype)] = Stats(
                latency=WindowedHistogram(clock=self.clock),
                ttft=WindowedHistogram(clock=self.clock),
            )
            self.generation += 1
        return stats

    def record(self, attempt: Attempt) -> None:
        stats = self._get(attempt.model, attempt.conversation_type)
        stats.requests += 1
        self._changed(stats)
        self.seq += 1
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
        self.version += 1

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
        if attempt.conversation_id:
            self.remember(attempt.conversation_id, attempt.model)

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
    ) -> None:
        """Fold 1-5 ratings into the aggregates; a re-rating replaces its earlier scores."""
        stats = self._get(model, ctype)
        seq = self.seq
        for dimension, value in (previous or {}).items():
            pair = stats.feedback.get(dimension)
            if pair and pair[1] > 0:
                pair[0] -= value
                pair[1] -= 1
            recent = stats.feedback_recent.get(dimension)
            if recent and recent[1] > 0:
                # The earlier rating has faded by an unknown amount: take out what it can
                # still weigh and keep the rest a mean of 1-5 ratings.
                weight = min(1.0, recent[1])
                recent[0] -= value * weight
                recent[1] -= weight
                recent[0] = min(max(recent[0], recent[1]), 5 * recent[1])
        for dimension, value in scores.items():
            pair = stats.feedback.setdefault(dimension, [0.0, 0])
            pair[0] += value
            pair[1] += 1
            recent = stats.feedback_recent.setdefault(dimension, [0.0, 0.0, seq])
            fade = min(_FEEDBACK_DECAY, AGING ** (seq - recent[2]))
            recent[0] = recent[0] * fade + value
            recent[1] = recent[1] * fade + 1
            recent[2] = seq
        self._changed(stats)
        self.version += 1

    def add_auto_score(
        self, model: str, ctype: str, score: float, flags: Iterable[str] = ()
    ) -> None:
        stats = self._get(model, ctype)
        stats.auto_score_sum += score
        stats.auto_score_count += 1
        for flag in flags:
            stats.flags[flag] = stats.flags.get(flag, 0) + 1
        self._changed(stats)
        self.version += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {f"{m}\x1f{t}": s.to_dict() for (m, t), s in self._stats.items()}

    def restore(self, stats: dict[str, dict[str, Any]]) -> None:
        for key, data in stats.items():
            model, _, ctype = key.partition("\x1f")
            try:
                self._stats[(model, ctype)] = Stats.from_dict(data, self.clock)
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring unreadable stored stats", extra={"fields": {"key": key}})
        # Evidence ages by attempts since a model last served: continue that count
        # where it stopped, or restored evidence would look fresher than it is.
        self.seq = max([self.seq, *(s.last_seq for s in self._stats.values())])
        self.generation += 1
        self.version += 1


def aged(n: float, last_seq: int, seq: int) -> float:
    """A model's evidence `n`, fading while the others serve and it does not
    (discounted UCB): what was true of it hundreds of requests ago may no longer be."""
    return n * AGING ** (seq - last_seq) if n else n


def _ewma(previous: float | None, value: float, alpha: float = _EWMA) -> float:
    return value if previous is None else previous + alpha * (value - previous)
