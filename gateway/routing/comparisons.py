"""Same-prompt comparisons: a sampled share of a route's answers is also put to a
challenger model, off the client's path, so that the two answers can be judged side by
side (blind, on the feedback page or by `POST /v1/feedback/pairwise`).

Nothing here is on the client's way. The dispatcher offers an answer once it has reached
its client whole (`Shadows.offer`, O(1): a dict lookup, a random draw, two comparisons);
a sampled one starts a task of its own that sends the same request, not streamed, to
the challenger through a dispatcher of its own (one attempt, no fallback), so its
outcome is recorded once, through the same recorder, flagged `shadow`: routing learns
from it (it is a real observation of the challenger), the evaluator judges it, its
attempt and cost are stored, but no client key pays for it and it is no client's
request in the Prometheus counts. The two answers and the prompt are then kept as a pair
(`Store.write_pairs`), whatever `storage.log_payloads` says: judging needs the text.

Bounds: at most `max_concurrent` shadow calls per process (a sampled answer past it is
dropped, and counted), and `max_daily_usd` per comparison per UTC day across the fleet:
each process publishes its own spend as a state row every `interval` seconds and adds
up everyone's, so the fleet stops sampling once the day's spend reaches the cap. It can
pass it by what is in flight (at most `max_concurrent` answers per process) plus what
the other processes spent since their last publication. Shadow calls are cancelled at
shutdown (recorded as `client_gone`, blaming nobody).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.core.config import ComparisonConfig, ModelConfig
from gateway.core.errors import GatewayError
from gateway.core.ids import new_id
from gateway.core.tasks import cancel
from gateway.routing.answers import Answer
from gateway.routing.blacklist import Blacklist
from gateway.routing.catalog import Catalog, Target
from gateway.routing.dispatch import Dispatcher, Job, Outcome, ReplyJob, Sink
from gateway.routing.evaluation import said
from gateway.routing.origins import SEP, STOPPED, Fold, fold_own, stopped_among
from gateway.storage.base import Store
from providers.base import Endpoint

__all__ = ["SPEND", "STOPPED", "Comparisons", "Spend", "merge_spend", "prompt_text"]

log = logging.getLogger("gatewise.comparisons")

SPEND = "comparison_spend"  # state kind: origin \x1f comparison -> that origin's Spend
_TEXT = frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES, Endpoint.MESSAGES})
MAX_TEXT = 20_000  # characters of a prompt or an answer kept in a pair
MAX_UNSAVED = 1_000  # pairs kept for the next try while the store is down
DAYS_KEPT = 31  # days of spend history per comparison


def _day(now: float) -> int:
    return int(now // 86400)


@dataclass(slots=True)
class Spend:
    """One origin's counts for one comparison on one UTC day (a day number), and its
    spend and shadow calls on each of the last DAYS_KEPT days."""

    day: int = 0
    spent: float = 0.0  # USD of the challenger's answers
    shadows: int = 0  # shadow calls answered
    failed: int = 0  # shadow calls the challenger did not answer
    dropped: int = 0  # sampled but not sent: max_concurrent calls already in flight
    capped: int = 0  # sampled but not sent: the day's cap was reached
    days: dict[int, list[float]] = field(default_factory=dict)  # day -> [spent, shadows]

    def today(self, now: float) -> Spend:
        """This, or a fresh count when `now` is a later day."""
        day = _day(now)
        if day != self.day:
            self.day, self.spent, self.shadows = day, 0.0, 0
            self.failed = self.dropped = self.capped = 0
        return self

    def answered(self, now: float, cost: float) -> None:
        self.today(now)
        self.spent += cost
        self.shadows += 1
        row = self.days.get(self.day)
        if row is None:
            row = self.days[self.day] = [0.0, 0.0]
            for old in sorted(self.days)[:-DAYS_KEPT]:
                del self.days[old]
        row[0] += cost
        row[1] += 1

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day, "spent": self.spent, "shadows": self.shadows,
                "failed": self.failed, "dropped": self.dropped, "capped": self.capped,
                "days": {str(d): row for d, row in self.days.items()}}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Spend:
        days = {int(d): [float(v) for v in row] for d, row in (data.get("days") or {}).items()}
        return cls(int(data.get("day", 0)), float(data.get("spent", 0.0)),
                   int(data.get("shadows", 0)), int(data.get("failed", 0)),
                   int(data.get("dropped", 0)), int(data.get("capped", 0)), days)  # fmt: skip


def merge_spend(into: dict[str, Any] | None, part: dict[str, Any]) -> dict[str, Any]:
    """A stopped process's spend on a comparison added into all stopped ones' (as
    stored): each day's history adds up; the current day's counts are those of the
    latest day either has, added where both have it."""
    if into is None:
        return part
    spends = [Spend.from_dict(into), Spend.from_dict(part)]
    out = Spend(day=max(s.day for s in spends))
    for spend in spends:
        if spend.day == out.day:
            out.spent += spend.spent
            out.shadows += spend.shadows
            out.failed += spend.failed
            out.dropped += spend.dropped
            out.capped += spend.capped
        for day, row in spend.days.items():
            mine = out.days.setdefault(day, [0.0, 0.0])
            mine[0] += row[0]
            mine[1] += row[1]
    for old in sorted(out.days)[:-DAYS_KEPT]:
        del out.days[old]
    return out.to_dict()


class _AsGiven:
    """The ranker of shadow jobs: the challenger, and nothing else."""

    def rank(self, job: Job[Any, Any]) -> Sequence[ModelConfig]:
        return job.target.candidates


@dataclass(slots=True)
class _Comparison:
    config: ComparisonConfig
    target: Target
    own: Spend
    in_flight: int = 0


class Comparisons:
    def __init__(
        self,
        configs: Sequence[ComparisonConfig],
        catalog: Catalog,
        recorder: Sink,
        blacklist: Blacklist,
        store: Store,
        origin: str,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.origin = origin
        self.interval = interval
        self.clock = clock
        self._rng = rng or random.Random()
        self._blacklist = blacklist
        self._catalog = catalog
        self.comparisons: dict[str, _Comparison] = {}
        self._by_route: dict[str, list[_Comparison]] = {}
        for config in configs:
            model = catalog.models[config.challenger]
            target = Target(model.name, None, None, (model,))
            comparison = _Comparison(config, target, Spend())
            self.comparisons[config.key] = comparison
            self._by_route.setdefault(config.route, []).append(comparison)
        # The challenger's calls: one attempt each, recorded by the same recorder.
        self._dispatcher = Dispatcher(catalog, _AsGiven(), recorder, max_attempts=1, wall=clock)
        self.peers: dict[str, dict[str, Spend]] = {}  # origin -> comparison -> theirs
        self.changed: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsaved: list[dict[str, Any]] = []
        self.lost = 0  # pairs dropped while the store was down (past MAX_UNSAVED)
        self._pulled: float | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the request path (called by the dispatcher once the client has its answer) ----
    def offer(self, outcome: Outcome) -> None:
        job = outcome.job
        route = job.target.route
        if route is None or job.shadow or job.endpoint not in _TEXT:
            return
        running = self._by_route.get(route)
        if running is None:
            return
        for comparison in running:
            config = comparison.config
            if outcome.model.name == config.challenger:
                continue  # the route chose the challenger itself: nothing to compare
            if self._rng.random() >= config.sample:
                continue
            now = self.clock()
            own = comparison.own.today(now)
            if self.spent_today(config.key, now)[0] >= config.max_daily_usd:
                own.capped += 1
            elif comparison.in_flight >= config.max_concurrent:
                own.dropped += 1
            elif self._blacklist.is_blacklisted(config.challenger):
                continue
            else:
                comparison.in_flight += 1
                task = asyncio.get_running_loop().create_task(self._shadow(comparison, outcome))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self.changed.add(config.key)

    def spent_today(self, key: str, now: float) -> tuple[float, int]:
        """The fleet's spend and shadow calls for comparison `key` on `now`'s UTC day."""
        day = _day(now)
        own = self.comparisons[key].own
        spent, shadows = (own.spent, own.shadows) if own.day == day else (0.0, 0)
        for theirs in self.peers.values():
            spend = theirs.get(key)
            if spend is not None and spend.day == day:
                spent += spend.spent
                shadows += spend.shadows
        return spent, shadows

    # -- off the client's path ------------------------------------------------------------
    async def _shadow(self, comparison: _Comparison, outcome: Outcome) -> None:
        config = comparison.config
        job = outcome.job
        body = {**job.body, "stream": False}
        body.pop("stream_options", None)
        shadow = ReplyJob(
            f"{job.request_id}-shadow",
            job.endpoint,
            comparison.target,
            body,
            job.optimization,
            owner=job.owner,  # the pair is the key's to judge, and nobody else's
            headers=job.headers,
            shadow=True,
        )
        try:
            try:
                exchange = await self._dispatcher.run(shadow)
            except GatewayError as exc:
                comparison.own.today(self.clock()).failed += 1
                log.info("the challenger %s did not answer: %s", config.challenger, exc.message)
                return
            theirs = exchange.close()  # recorded once, as the shadow it is
            comparison.own.answered(self.clock(), theirs.cost)
            pair = self._pair(config, outcome, theirs)
            if pair is not None:
                await self._save([pair])
        except Exception:
            log.exception("a shadow call of comparison %s failed", config.key)
        finally:
            comparison.in_flight -= 1
            self.changed.add(config.key)

    def _pair(
        self, config: ComparisonConfig, ours: Outcome, theirs: Outcome
    ) -> dict[str, Any] | None:
        a, b = said(ours), said(theirs)
        if a is None or b is None:
            return None
        job = ours.job
        return {
            "pair_id": new_id("pair_"), "comparison": config.key, "route": config.route,
            "a_response_id": job.response_id, "b_response_id": theirs.job.response_id,
            "model_a": ours.model.name, "model_b": theirs.model.name,
            "prompt": prompt_text(job.body), "answer_a": _answer_text(a),
            "answer_b": _answer_text(b), "owner": job.owner, "ts": theirs.at,
            "cost_b": theirs.cost, "judged_at": None,
        }  # fmt: skip

    async def _save(self, pairs: list[dict[str, Any]]) -> None:
        try:
            await self.store.write_pairs(pairs)
        except self.store.OUTAGES as exc:
            log.warning("a pair could not be stored yet: %s", type(exc).__name__)
            self._unsaved.extend(pairs)
            over = len(self._unsaved) - MAX_UNSAVED
            if over > 0:
                del self._unsaved[:over]
                self.lost += over

    # -- sharing the spend ------------------------------------------------------------------
    async def round(self) -> None:
        """Publish this origin's changed counts, take in everyone else's, and store the
        pairs that waited for the store."""
        changed, self.changed = self.changed, set()
        began = self.clock()
        try:
            if changed:
                await self.store.save_states(
                    [(SPEND, f"{self.origin}{SEP}{key}",
                      self.comparisons[key].own.to_dict()) for key in changed]
                )  # fmt: skip
            since = None if self._pulled is None else self._pulled - 10.0
            rows = await self.store.load_states(SPEND, changed_since=since)
            if since is not None and stopped_among(rows):
                # A process stopped and folded its rows: all again, none counted twice.
                rows = await self.store.load_states(SPEND)
                self.peers = {}
        except BaseException:
            self.changed |= changed
            raise
        self._pulled = began
        for key, data in rows.items():
            origin, _, name = key.partition(SEP)
            if origin != self.origin and name in self.comparisons:
                self.peers.setdefault(origin, {})[name] = Spend.from_dict(data)
        if self._unsaved:
            waiting, self._unsaved = self._unsaved, []
            await self._save(waiting)

    def start(self) -> None:
        if self.comparisons:
            self._task = asyncio.create_task(self._run(), name="gatewise-comparisons")

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
            except self.store.OUTAGES as exc:
                log.warning("comparison spend could not be shared: %s", type(exc).__name__)
            await asyncio.sleep(self.interval)

    @property
    def folds(self) -> list[Fold]:
        """What a dead process left of this kind, and how to fold it (`Origins`)."""
        return [(SPEND, merge_spend)]

    async def stop(self) -> None:
        """Cancel the shadow calls in flight and the sharing task; publish the last counts."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._task is not None:
            await cancel(self._task)
            self._task = None
            with contextlib.suppress(*self.store.OUTAGES):
                await self.round()
        # This origin's rows join the stopped processes' (a restart is a new origin: they
        # would pile up, each read at every start and at every sampled answer).
        with contextlib.suppress(*self.store.OUTAGES):
            await fold_own(self.store, self.origin, SPEND, self.comparisons, merge_spend)

    # -- reading ------------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """Each comparison as configured, with the fleet's counts for today (UTC)."""
        now = self.clock()
        day = _day(now)
        out = []
        for key, comparison in self.comparisons.items():
            config = comparison.config
            spends = [comparison.own] + [p[key] for p in self.peers.values() if key in p]
            today = [s for s in spends if s.day == day]
            spent = sum(s.spent for s in today)
            out.append({
                "name": key, "route": config.route, "challenger": config.challenger,
                "sample": config.sample, "max_daily_usd": config.max_daily_usd,
                "max_concurrent": config.max_concurrent,
                "day": datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d"),
                "spent_usd": round(spent, 6),
                "shadows": sum(s.shadows for s in today),
                "failed": sum(s.failed for s in today),
                "dropped": sum(s.dropped for s in today),
                "capped": sum(s.capped for s in today),
                "cap_reached": spent >= config.max_daily_usd,
                "in_flight": comparison.in_flight,
                "history": _history(spends),
            })  # fmt: skip
        return out


def _history(spends: list[Spend]) -> list[dict[str, Any]]:
    """The fleet's spend and shadow calls per UTC day, newest first."""
    days: dict[int, list[float]] = {}
    for spend in spends:
        for day, row in spend.days.items():
            total = days.setdefault(day, [0.0, 0.0])
            total[0] += row[0]
            total[1] += row[1]
    return [
        {"day": datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d"),
         "spent_usd": round(row[0], 6), "shadows": int(row[1])}
        for day, row in sorted(days.items(), reverse=True)
    ]  # fmt: skip


def _answer_text(answer: Answer) -> str:
    text = answer.text or ""
    if not text and answer.tool_arguments:
        text = "\n".join(f"(tool call) {args}" for args in answer.tool_arguments)
    if not text and answer.refusal:
        text = f"(refusal) {answer.refusal}"
    return text[:MAX_TEXT]


def prompt_text(body: dict[str, Any]) -> str:
    """The prompt as a judge reads it: each message as "role: text" (the system prompt
    first), or the completion's prompt / the response's input as given."""
    lines: list[str] = []
    system = body.get("system")
    if system is not None:
        lines.append(f"system: {_content_text(system)}")
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                lines.append(f"{message.get('role', '?')}: {_content_text(message.get('content'))}")
    else:
        for key in ("prompt", "input"):
            if key in body:
                value = body[key]
                lines.append(value if isinstance(value, str) else _content_text(value))
                break
    return "\n".join(lines)[:MAX_TEXT]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                text = part.get("text") or part.get("content")
                parts.append(text if isinstance(text, str) else f"[{part.get('type', 'part')}]")
        return " ".join(parts)
    return "" if content is None else str(content)
