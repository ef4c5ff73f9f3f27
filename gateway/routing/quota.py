"""Per-key rate limits and budgets, kept in memory and shared by the fleet.

Admission runs on the request path, so it never touches the store: each process counts
its own keys' requests, tokens and spend, publishes them under its origin every
`interval` (`QuotaShare`), and adds up what the other origins published. Rate limits
look at the last 60 seconds in one-second buckets (a sliding window, no burst at a
minute's edge); budgets at the spend of the current UTC day and month, which survives
restarts because an origin's rows stay in the store.

Across the fleet the overshoot is bounded: a process cannot see what the others admitted
since their last publication, so at most the requests in flight plus what the fleet
admits in one interval (plus its own pull's) go past a limit. A budget is checked before
a request, so the answer that crosses it is served and the next one refused; a stream in
progress always finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.core.config import KeyBudget
from gateway.core.errors import QuotaExceeded, RateLimitExceeded, TokenRateLimitExceeded
from gateway.core.keys import Tenant
from gateway.core.tasks import cancel
from gateway.storage.base import Store

__all__ = ["USAGE", "Admission", "Quota", "QuotaShare", "Usage"]

log = logging.getLogger("gatewise.quota")

USAGE = "usage"  # state kind of published usage, keyed origin \x1f key name
WINDOW = 60  # seconds a rate limit looks back
DAYS_KEPT = 92  # days of per-key history in reports
_SEP = "\x1f"


_today: list[Any] = [0.0, 0.0, ""]  # [start, end, "YYYY-MM-DD"] of the last day asked


def _day(now: float) -> str:
    """The UTC day of `now`, formatted once a day: every request asks (strftime costs
    ~2 µs, a comparison nothing). POSIX days are whole multiples of 86,400 s."""
    cached = _today
    if cached[0] <= now < cached[1]:
        day: str = cached[2]
        return day
    start = now - now % 86400
    day = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d")
    cached[:] = [start, start + 86400, day]
    return day


@dataclass(slots=True)
class Usage:
    """One key's counts as one origin saw them: requests and tokens per second of the
    last minute (with their running sums, so a check costs no loop), and spend in the
    current day and month."""

    seconds: dict[int, list[float]] = field(default_factory=dict)  # second -> [req, tok]
    day: str = ""
    spend_day: float = 0.0
    month: str = ""
    spend_month: float = 0.0
    requests_day: int = 0
    tokens_day: int = 0
    errors_day: int = 0
    # The last DAYS_KEPT UTC days, for reports: day -> [spend, requests, tokens, errors].
    days: dict[str, list[float]] = field(default_factory=dict)
    window_requests: float = 0.0  # the sums of `seconds`
    window_tokens: float = 0.0
    _row: list[float] | None = None  # days[day], while it is the current day
    _row_until: float = 0.0  # when the current day ends (until then, _row is the row)
    _expired: int = -1  # the second the window was last trimmed for

    def __post_init__(self) -> None:
        self.window_requests = sum(v[0] for v in self.seconds.values())
        self.window_tokens = sum(v[1] for v in self.seconds.values())

    def add(self, now: float, requests: int = 0, tokens: int = 0, cost: float = 0.0) -> None:
        if requests or tokens:
            second = int(now)
            bucket = self.seconds.get(second)
            if bucket is None:
                bucket = self.seconds[second] = [0.0, 0.0]
                if second != self._expired:
                    self._expire(second)
            bucket[0] += requests
            bucket[1] += tokens
            self.window_requests += requests
            self.window_tokens += tokens
        row = self._roll(now)
        self.requests_day += requests
        self.tokens_day += tokens
        self.spend_day += cost
        self.spend_month += cost
        row[0] += cost
        row[1] += requests
        row[2] += tokens

    def error(self, now: float) -> None:
        row = self._roll(now)
        self.errors_day += 1
        row[3] += 1

    def recent(self, now: float) -> tuple[float, float, int | None]:
        """Requests and tokens in the last WINDOW seconds, and the oldest second counted."""
        second = int(now)
        if second != self._expired:  # at most once a second: nothing leaves in between
            self._expire(second)
        return self.window_requests, self.window_tokens, next(iter(self.seconds), None)

    def _expire(self, second: int) -> None:
        """Drop the seconds that left the window (the oldest first: seconds are added in
        order), taking them out of the sums."""
        self._expired = second
        since = second - WINDOW + 1
        seconds = self.seconds
        while seconds:
            oldest = next(iter(seconds))
            if oldest >= since:
                break
            req, tok = seconds.pop(oldest)
            self.window_requests -= req
            self.window_tokens -= tok

    def _roll(self, now: float) -> list[float]:
        """Start a new day (and month) when `now` is in one; the current day's row."""
        row = self._row
        if row is not None and now < self._row_until:
            return row
        day = _day(now)
        if day == self.day and row is not None:
            self._row_until = _today[1]
            return row
        if day != self.day:
            if day[:7] != self.month:
                self.month, self.spend_month = day[:7], 0.0
            self.day, self.spend_day = day, 0.0
            self.requests_day = self.tokens_day = self.errors_day = 0
        row = self.days.get(day)
        if row is None:
            row = self.days[day] = [0.0, 0.0, 0.0, 0.0]
            for old in sorted(self.days)[:-DAYS_KEPT]:
                del self.days[old]
        self._row = row
        self._row_until = _today[1]
        return row

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": {str(s): v for s, v in self.seconds.items()},
            "day": self.day, "spend_day": self.spend_day,
            "month": self.month, "spend_month": self.spend_month,
            "requests_day": self.requests_day, "tokens_day": self.tokens_day,
            "errors_day": self.errors_day, "days": self.days,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(
            {int(s): list(v) for s, v in (data.get("seconds") or {}).items()},
            data.get("day", ""), float(data.get("spend_day", 0.0)),
            data.get("month", ""), float(data.get("spend_month", 0.0)),
            int(data.get("requests_day", 0)), int(data.get("tokens_day", 0)),
            int(data.get("errors_day", 0)),
            {d: list(v) for d, v in (data.get("days") or {}).items()},
        )  # fmt: skip


Header = tuple[bytes, bytes]
Headers = tuple[Header, ...]


@dataclass(frozen=True, slots=True)
class Admission:
    """A request let through: the route to serve it instead (its budget is spent and the
    key says where to go), and the x-ratelimit-* headers for its answer."""

    route: str | None = None
    headers: Headers = ()


_FREE = Admission()
_RESETS: dict[int, bytes] = {}  # whole seconds -> its x-ratelimit-reset-* value
_LIMITS: dict[tuple[int | None, int | None], tuple[Header, Header]] = {}


def _duration(seconds: float) -> str:
    """OpenAI's reset format: "1s", "6m0s"."""
    whole = max(1, math.ceil(seconds))
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


_RESETS.update({n: _duration(n).encode() for n in range(1, WINDOW + 1)})


class Quota:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.own: dict[str, Usage] = {}  # key name -> what this process counted
        self.peers: dict[str, dict[str, Usage]] = {}  # origin -> key name -> theirs
        self.changed: set[str] = set()  # keys counted since the last publication

    # -- the request path ---------------------------------------------------------------
    def admit(self, tenant: Tenant) -> Admission:
        """Let a request of `tenant` through, counted, or raise why not."""
        if not tenant.limited:
            return _FREE
        now = self.clock()
        name = tenant.name
        usage = self.own.get(name) or self._usage(name)
        route = None
        budget = tenant.budget
        if budget is not None:
            if self.peers:
                spent_day, spent_month = self._spent(name, now)
            else:  # a lone process: its own counts are all there is
                day = _day(now)
                spent_day = usage.spend_day if usage.day == day else 0.0
                spent_month = usage.spend_month if usage.month == day[:7] else 0.0
            daily, monthly = budget.daily_usd, budget.monthly_usd
            if (daily is not None and spent_day >= daily) or (
                monthly is not None and spent_month >= monthly
            ):
                route = _exhausted(budget, daily is not None and spent_day >= daily, now)
        headers: Headers = ()
        limit = tenant.rate_limit
        if limit is not None:
            if self.peers:
                requests, tokens, oldest = self._recent(name, now)
            else:
                requests, tokens, oldest = usage.recent(now)
            reset = (oldest + WINDOW - now) if oldest is not None else 0.0
            rpm, tpm = limit.requests_per_minute, limit.tokens_per_minute
            if rpm is not None and requests >= rpm:
                raise RateLimitExceeded(
                    f"Rate limit reached for this API key: {rpm} requests per minute. "
                    f"Try again in {_duration(reset)}.",
                    retry_after=max(1, math.ceil(reset)),
                )
            if tpm is not None and tokens >= tpm:
                raise TokenRateLimitExceeded(
                    f"Rate limit reached for this API key: {tpm} tokens per minute. "
                    f"Try again in {_duration(reset)}.",
                    retry_after=max(1, math.ceil(reset)),
                )
            resets = _RESETS[min(WINDOW, max(1, math.ceil(reset or WINDOW)))]
            limits = _LIMITS.get((rpm, tpm)) or _limits(rpm, tpm)
            if rpm is not None:
                headers = (
                    limits[0],
                    (b"x-ratelimit-remaining-requests", b"%d" % max(0, rpm - requests - 1)),
                    (b"x-ratelimit-reset-requests", resets),
                )
            if tpm is not None:
                headers += (
                    limits[1],
                    (b"x-ratelimit-remaining-tokens", b"%d" % max(0, tpm - tokens)),
                    (b"x-ratelimit-reset-tokens", resets),
                )
        usage.add(now, requests=1)
        self.changed.add(name)
        return Admission(route, headers) if route is not None or headers else _FREE

    def record(self, owner: str, tokens: int, cost: float) -> None:
        """What an attempt for `owner`'s key used (from the recorder: streams included,
        counted when they close)."""
        now = self.clock()
        (self.own.get(owner) or self._usage(owner)).add(now, tokens=tokens, cost=cost)
        self.changed.add(owner)

    def failed(self, name: str) -> None:
        """A request of this key ended in an error (for its daily report)."""
        self._usage(name).error(self.clock())
        self.changed.add(name)

    # -- reading ------------------------------------------------------------------------
    def report(self, name: str) -> dict[str, Any]:
        """The fleet's figures for one key today and this month, and the last minute's."""
        now = self.clock()
        requests, tokens, _ = self._recent(name, now)
        day, month = _day(now), _day(now)[:7]
        spend_day = spend_month = 0.0
        requests_day = tokens_day = errors_day = 0
        for usage in self._all(name):
            if usage.day == day:
                spend_day += usage.spend_day
                requests_day += usage.requests_day
                tokens_day += usage.tokens_day
                errors_day += usage.errors_day
            if usage.month == month:
                spend_month += usage.spend_month
        days: dict[str, list[float]] = {}
        for usage in self._all(name):
            for when, row in usage.days.items():
                mine = days.setdefault(when, [0.0, 0.0, 0.0, 0.0])
                for i, value in enumerate(row):
                    mine[i] += value
        history = [
            {"day": when, "spend": round(row[0], 6), "requests": int(row[1]),
             "tokens": int(row[2]), "errors": int(row[3])}
            for when, row in sorted(days.items(), reverse=True)
        ]  # fmt: skip
        out: dict[str, Any] = {
            "day": day, "month": month,
            "spend_day": round(spend_day, 6), "spend_month": round(spend_month, 6),
            "requests_day": requests_day, "tokens_day": tokens_day, "errors_day": errors_day,
            "requests_last_minute": int(requests), "tokens_last_minute": int(tokens),
            "days": history,
        }  # fmt: skip
        return out

    def _usage(self, name: str) -> Usage:
        usage = self.own.get(name)
        if usage is None:
            usage = self.own[name] = Usage()
        return usage

    def _all(self, name: str) -> Iterable[Usage]:
        mine = self.own.get(name)
        if mine is not None:
            yield mine
        for keys in self.peers.values():
            theirs = keys.get(name)
            if theirs is not None:
                yield theirs

    def _recent(self, name: str, now: float) -> tuple[float, float, int | None]:
        mine = self.own.get(name)
        requests, tokens, oldest = mine.recent(now) if mine is not None else (0.0, 0.0, None)
        if self.peers:  # a fleet: theirs too (a lone process skips the loop)
            for keys in self.peers.values():
                theirs = keys.get(name)
                if theirs is not None:
                    r, t, o = theirs.recent(now)
                    requests += r
                    tokens += t
                    if o is not None:
                        oldest = o if oldest is None else min(oldest, o)
        return requests, tokens, oldest

    def _spent(self, name: str, now: float) -> tuple[float, float]:
        day = _day(now)
        month = day[:7]
        spent_day = spent_month = 0.0
        mine = self.own.get(name)
        usages = [mine] if mine is not None else []
        if self.peers:
            usages += [k[name] for k in self.peers.values() if name in k]
        for usage in usages:
            if usage.day == day:
                spent_day += usage.spend_day
            if usage.month == month:
                spent_month += usage.spend_month
        return spent_day, spent_month


def _exhausted(budget: KeyBudget, daily: bool, now: float) -> str:
    """The route a key whose budget is spent goes to, or the 429 that says when it renews."""
    if isinstance(budget.when_exhausted, str):
        period = "daily" if daily else "monthly"
        cap = budget.daily_usd if daily else budget.monthly_usd
        wait = _seconds_to_next_day(now) if daily else _seconds_to_next_month(now)
        raise QuotaExceeded(
            f"This API key has spent its {period} budget of ${cap:g}; "
            "it renews at the start of the next "
            f"{'day' if daily else 'month'} (UTC).",
            retry_after=math.ceil(wait),
        )
    return budget.when_exhausted.route


def _limits(rpm: int | None, tpm: int | None) -> tuple[Header, Header]:
    """The x-ratelimit-limit-* headers of a key's limits, formatted once per pair (as
    many pairs as keys with limits, at most; runtime keys may come and go, hence a cap)."""
    if len(_LIMITS) >= 4096:
        _LIMITS.clear()
    found = _LIMITS[(rpm, tpm)] = (
        (b"x-ratelimit-limit-requests", b"%d" % (rpm or 0)),
        (b"x-ratelimit-limit-tokens", b"%d" % (tpm or 0)),
    )
    return found


def _seconds_to_next_day(now: float) -> float:
    return 86400 - now % 86400


def _seconds_to_next_month(now: float) -> float:
    today = datetime.fromtimestamp(now, UTC)
    first = (
        today.replace(year=today.year + 1, month=1, day=1)
        if today.month == 12
        else today.replace(month=today.month + 1, day=1)
    ).replace(hour=0, minute=0, second=0, microsecond=0)
    return first.timestamp() - now


class QuotaShare:
    """The background half: publish this origin's usage, take in everyone else's."""

    def __init__(self, origin: str, quota: Quota, store: Store, *, interval: float = 1.0) -> None:
        self.origin = origin
        self.quota = quota
        self.store = store
        self.interval = interval
        self._pulled: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def round(self) -> None:
        quota = self.quota
        changed, quota.changed = quota.changed, set()
        try:
            if changed:
                await self.store.save_states(
                    [(USAGE, f"{self.origin}{_SEP}{name}", quota.own[name].to_dict())
                     for name in changed]
                )  # fmt: skip
            began = quota.clock()
            # At first this month's rows (and last month's end), then what changed since
            # the previous pull, with a margin for clocks and commits in flight.
            since = began - 40 * 86400 if self._pulled is None else self._pulled - 10.0
            rows = await self.store.load_states(USAGE, changed_since=since)
        except BaseException:
            quota.changed |= changed  # published next round
            raise
        self._pulled = began
        for key, data in rows.items():
            origin, _, name = key.partition(_SEP)
            if origin != self.origin:
                quota.peers.setdefault(origin, {})[name] = Usage.from_dict(data)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gatewise-quota")

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
            except self.store.OUTAGES as exc:
                log.warning("usage could not be shared: %s", type(exc).__name__)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        await cancel(self._task)
        with contextlib.suppress(*self.store.OUTAGES):
            await self.round()  # what was counted last is kept for the next start
