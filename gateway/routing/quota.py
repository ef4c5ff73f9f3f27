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

A key's answers in flight (`max_concurrent`) are counted from admission to the answer's
end (`leave`). Each origin publishes its own count with the time it did, every round
while it has any; another origin's count is believed while it is that fresh
(`stale_after`), so a crashed process's answers stop counting by themselves.
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
from gateway.core.errors import (
    ConcurrencyLimitExceeded,
    QuotaExceeded,
    RateLimitExceeded,
    TokenRateLimitExceeded,
)
from gateway.core.headers import header_pairs, render_headers
from gateway.core.keys import Tenant
from gateway.core.tasks import cancel
from gateway.routing.origins import SEP, STOPPED, Fold, fold_own, stopped_among
from gateway.storage.base import Store

__all__ = ["STOPPED", "USAGE", "Admission", "Quota", "QuotaShare", "Usage", "merge_usage"]

log = logging.getLogger("gatewise.quota")

USAGE = "usage"  # state kind of published usage, keyed origin \x1f key name
WINDOW = 60  # seconds a rate limit looks back
DAYS_KEPT = 92  # days of per-key history in reports


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
    in_flight: int = 0  # answers admitted and not yet ended
    at: float = 0.0  # when its origin published it (another origin's: `Quota.stale_after`)
    _row: list[float] | None = None  # days[day], while it is the current day
    _row_until: float = 0.0  # when the current day ends (until then, _row is the row)
    _expired: int = -1  # the second the window was last trimmed for

    def __post_init__(self) -> None:
        self.window_requests = sum(v[0] for v in self.seconds.values())
        self.window_tokens = sum(v[1] for v in self.seconds.values())

    def add(self, now: float, requests: int = 0, tokens: int = 0, cost: float = 0.0) -> None:
        if requests or tokens:
            bucket = self.bucket(int(now))
            bucket[0] += requests
            bucket[1] += tokens
            self.window_requests += requests
            self.window_tokens += tokens
        row = self.row(now)
        self.requests_day += requests
        self.tokens_day += tokens
        self.spend_day += cost
        self.spend_month += cost
        row[0] += cost
        row[1] += requests
        row[2] += tokens

    def bucket(self, second: int) -> list[float]:
        """The [requests, tokens] of `second` (the latest second: seconds come in order)."""
        bucket = self.seconds.get(second)
        if bucket is None:
            bucket = self.seconds[second] = [0.0, 0.0]
            if second != self._expired:
                self._expire(second)
        return bucket

    def admitted(
        self, second: int, bucket: list[float], day: str, row: list[float], n: int
    ) -> None:
        """`n` requests let through in `second` (whose bucket, day and day's row these
        are), counted afterwards: a second that has left the window meanwhile only counts
        in its day."""
        if self.seconds.get(second) is bucket:
            bucket[0] += n
            self.window_requests += n
        if self.day == day:
            self.requests_day += n
        row[1] += n

    def error(self, now: float) -> None:
        row = self.row(now)
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

    def row(self, now: float) -> list[float]:
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
            "in_flight": self.in_flight, "at": self.at,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        usage = cls(
            {int(s): list(v) for s, v in (data.get("seconds") or {}).items()},
            data.get("day", ""), float(data.get("spend_day", 0.0)),
            data.get("month", ""), float(data.get("spend_month", 0.0)),
            int(data.get("requests_day", 0)), int(data.get("tokens_day", 0)),
            int(data.get("errors_day", 0)),
            {d: list(v) for d, v in (data.get("days") or {}).items()},
        )  # fmt: skip
        usage.in_flight = int(data.get("in_flight", 0))
        usage.at = float(data.get("at", 0.0))
        return usage


# A request let through: the route to serve it instead (its key's budget is spent and the
# key says where to go; None: as asked), and the x-ratelimit-* header lines for its answer
# (gateway.core.headers).
Admission = tuple[str | None, bytes]

_FREE: Admission = (None, b"")
_RESETS: dict[int, bytes] = {}  # whole seconds -> its x-ratelimit-reset-* value
_REQUESTS, _TOKENS = 1, 2  # the limits a gate's header lines count down


def _duration(seconds: float) -> str:
    """OpenAI's reset format: "1s", "6m0s"."""
    whole = max(1, math.ceil(seconds))
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


_RESETS.update({n: _duration(n).encode() for n in range(1, WINDOW + 1)})


@dataclass(slots=True, eq=False)
class _Gate:
    """One limited key's admission during one second: the fleet's counts as they were
    when the second's first request came, and what passed since.

    Nothing a request is checked against moves within a second but this process's own
    counts: seconds leave the window and days end on second boundaries, the fleet's
    counts change when a share round brings them (it closes every gate), and tokens and
    spend come from `record`, which closes the gate when they cross a limit. So a
    request in an open gate is one comparison and one addition; it is counted in its
    key's `Usage` when the gate closes. The full check over the key's `Usage` costs ~14 µs
    on a busy worker (cache-cold), 4 % of a proxied request; the gate's, ~1 µs.
    """

    tenant: Tenant
    usage: Usage
    second: int
    bucket: list[float]  # usage's [requests, tokens] of `second`
    day: str
    row: list[float]  # usage's row of `day`
    route: str | None
    room: float  # requests that may pass before the rate limit is reached (inf: none)
    tokens_room: float  # tokens until the token limit is (inf: none)
    spend_room: float  # USD until the budget may be spent (inf: none or spent already)
    lines: bytes  # its answers' x-ratelimit-* header lines: `_limit_lines`
    counts: int  # which of them: _REQUESTS | _TOKENS
    passed: int = 0  # let through since it opened, not yet in `usage`

    def close(self) -> bool:
        """Count what passed in `usage`; whether anything did."""
        passed = self.passed
        if not passed:
            return False
        self.passed = 0
        self.room -= passed
        self.usage.admitted(self.second, self.bucket, self.day, self.row, passed)
        return True


def merge_usage(into: dict[str, Any] | None, part: dict[str, Any]) -> dict[str, Any]:
    """A stopped process's usage of a key added into the usage of all stopped ones (as
    stored: `Usage.to_dict`): seconds and days add up; the current day's and month's
    figures are those of the latest day and month either has, added where both do."""
    if into is None:
        return {**part, "in_flight": 0}  # a stopped process has no answer in flight
    usages = [Usage.from_dict(into), Usage.from_dict(part)]
    out = Usage()
    for usage in usages:
        for second, (requests, tokens) in usage.seconds.items():
            bucket = out.seconds.setdefault(second, [0.0, 0.0])
            bucket[0] += requests
            bucket[1] += tokens
        for day, row in usage.days.items():
            mine = out.days.setdefault(day, [0.0, 0.0, 0.0, 0.0])
            for i, value in enumerate(row):
                mine[i] += value
    out.seconds = dict(sorted(out.seconds.items()))
    for old in sorted(out.days)[:-DAYS_KEPT]:
        del out.days[old]
    out.day = max(u.day for u in usages)
    out.month = max(u.month for u in usages)
    for usage in usages:
        if usage.day == out.day:
            out.spend_day += usage.spend_day
            out.requests_day += usage.requests_day
            out.tokens_day += usage.tokens_day
            out.errors_day += usage.errors_day
        if usage.month == out.month:
            out.spend_month += usage.spend_month
    return out.to_dict()


@dataclass(slots=True, eq=False)
class _Others:
    """The other origins' usage of one key, grouped for admission: those with requests
    or tokens in the window, read at every check, and the rest (stopped processes, and
    live ones idle for a minute) reduced to their spend per day and month. The store
    keeps the rows of every process that ever counted a key (a restart is a new origin),
    so a check that read them all grew with every restart: 0.57 ms a second per key with
    1,000 of them, on the request path."""

    active: dict[str, Usage] = field(default_factory=dict)  # origin -> its usage
    idle: dict[str, Usage] = field(default_factory=dict)  # origin -> its usage
    day: dict[str, float] = field(default_factory=dict)  # UTC day -> the idle's spend
    month: dict[str, float] = field(default_factory=dict)  # month -> the idle's spend
    checked: int = -1  # the second `active` was last sorted

    def rest(self, origin: str, usage: Usage) -> None:
        self.idle[origin] = usage
        self.day[usage.day] = self.day.get(usage.day, 0.0) + usage.spend_day
        self.month[usage.month] = self.month.get(usage.month, 0.0) + usage.spend_month
        if len(self.day) > 3:  # only today's and this month's are ever read
            for old in sorted(self.day)[:-2]:
                del self.day[old]
            for old in sorted(self.month)[:-2]:
                del self.month[old]

    def wake(self, origin: str, usage: Usage) -> None:
        """`origin` counted the key again: its new usage replaces what it had."""
        old = self.idle.pop(origin, None)
        if old is not None:
            if old.day in self.day:
                self.day[old.day] -= old.spend_day
            if old.month in self.month:
                self.month[old.month] -= old.spend_month
        self.active[origin] = usage

    def sort(self, now: float) -> None:
        """At most once a second: the active whose window has emptied go idle."""
        second = int(now)
        if second == self.checked:
            return
        self.checked = second
        gone = [o for o, u in self.active.items() if u.recent(now)[2] is None]
        for origin in gone:
            self.rest(origin, self.active.pop(origin))


class Quota:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.own: dict[str, Usage] = {}  # key name -> what this process counted
        self.peers: dict[str, dict[str, Usage]] = {}  # origin -> key name -> theirs
        self._others: dict[str, _Others] = {}  # key name -> its peers, for admission
        self.changed: set[str] = set()  # keys counted since the last publication
        self._gates: dict[str, _Gate] = {}  # key name -> its gate of the current second
        # key name -> [second, tokens, cost, first time] of its answers in that second,
        # not yet in its Usage (`record`)
        self._tallies: dict[str, list[float]] = {}
        # (key name, reason) -> requests this process refused (`_reason`), for /metrics
        self.refusals: dict[tuple[str, str], int] = {}
        # key name -> origin -> its usage, for the other origins with answers in flight
        self._flying: dict[str, dict[str, Usage]] = {}
        # Another origin's answers in flight count while its count is this fresh: a live
        # one publishes every round while it has any (QuotaShare sets it by its interval).
        self.stale_after = 10.0

    # -- the request path ---------------------------------------------------------------
    def admit(self, tenant: Tenant) -> Admission:
        """Let a request of `tenant` through, counted, or raise why not. A key with
        `max_concurrent` has its answer counted in flight until `leave`."""
        if not tenant.limited:
            return _FREE
        try:
            now = self.clock()
            cap = tenant.concurrency
            if cap is None:
                return self._pass(tenant, now)
            flying = self.in_flight(tenant.name, now)
            if flying >= cap:
                raise ConcurrencyLimitExceeded(
                    f"Concurrency limit reached for this API key: {cap} answers in flight at "
                    "once. Try again when one has ended.",
                    retry_after=1,
                )
            admission = self._pass(tenant, now)
        except (RateLimitExceeded, QuotaExceeded) as refused:
            cause = (tenant.name, _reason(refused))
            self.refusals[cause] = self.refusals.get(cause, 0) + 1
            raise
        self._usage(tenant.name).in_flight += 1
        self.changed.add(tenant.name)
        return admission

    def leave(self, name: str) -> None:
        """An answer counted in flight (`admit`) has ended, however it ended."""
        usage = self.own.get(name)
        if usage is not None and usage.in_flight > 0:
            usage.in_flight -= 1
            self.changed.add(name)

    def in_flight(self, name: str, now: float) -> int:
        """The fleet's answers in flight for a key: this origin's, and the others' whose
        count is fresh."""
        mine = self.own.get(name)
        count = mine.in_flight if mine is not None else 0
        theirs = self._flying.get(name)
        if theirs:
            fresh = now - self.stale_after
            count += sum(u.in_flight for u in theirs.values() if u.at >= fresh)
        return count

    def _pass(self, tenant: Tenant, now: float) -> Admission:
        """The rate limits and budget: the second's gate, or the full check."""
        gate = self._gates.get(tenant.name)
        if (
            gate is None
            or now >= gate.second + 1
            or gate.passed >= gate.room
            or (gate.tenant is not tenant and gate.tenant != tenant)
        ):
            gate = self._open(tenant, now)
        passed = gate.passed = gate.passed + 1
        counts = gate.counts
        if counts == _REQUESTS | _TOKENS:  # both limits, the usual case
            return gate.route, gate.lines % (gate.room - passed, max(0, gate.tokens_room))
        if counts == _REQUESTS:
            return gate.route, gate.lines % (gate.room - passed)
        if counts == _TOKENS:
            return gate.route, gate.lines % max(0, gate.tokens_room)
        return gate.route, b""

    def record(self, owner: str, tokens: int, cost: float) -> None:
        """What an attempt for `owner`'s key used (from the recorder: streams included,
        counted when they close). Every keyed answer comes here, so it is summed per
        second and counted in the key's `Usage` when the second is over (`_fold`): two
        additions an answer instead of a dozen."""
        now = self.clock()
        tally = self._tallies.get(owner)
        if tally is None or now >= tally[0] + 1:
            if tally is not None:
                self._fold(owner, tally)
            tally = self._tallies[owner] = [float(int(now)), 0.0, 0.0, now]
        tally[1] += tokens
        tally[2] += cost
        gate = self._gates.get(owner)
        if gate is not None:
            before = gate.tokens_room, gate.spend_room
            gate.tokens_room -= tokens
            gate.spend_room -= cost
            if before[0] > 0 >= gate.tokens_room or before[1] > 0 >= gate.spend_room:
                gate.room = 0  # a limit may be reached: the next request checks all

    def failed(self, name: str) -> None:
        """A request of this key ended in an error (for its daily report)."""
        tally = self._tallies.pop(name, None)
        if tally is not None:
            self._fold(name, tally)
        self._usage(name).error(self.clock())
        self.changed.add(name)

    def take(self, origin: str, name: str, usage: Usage) -> None:
        """Another origin's latest count of a key (from the store: `QuotaShare`)."""
        self.peers.setdefault(origin, {})[name] = usage
        others = self._others.get(name)
        if others is not None:
            others.wake(origin, usage)
        if usage.in_flight:
            self._flying.setdefault(name, {})[origin] = usage
        else:
            flying = self._flying.get(name)
            if flying is not None:
                flying.pop(origin, None)

    def forget_peers(self) -> None:
        """Drop every other origin's counts (before they are all read again)."""
        self.peers = {}
        self._others = {}
        self._flying = {}

    def settle(self) -> None:
        """Count in every key's `Usage` what its gate let through and its answers used;
        close the gates, so the next requests see what changed (the fleet's counts, a
        key's limits)."""
        for name, gate in self._gates.items():
            if gate.close():
                self.changed.add(name)
        self._gates.clear()
        tallies, self._tallies = self._tallies, {}
        for name, tally in tallies.items():
            self._fold(name, tally)

    def _fold(self, name: str, tally: list[float]) -> None:
        """A second's answers into the key's `Usage`, at that second. Called before
        anything else of the key's `Usage` moves on to a later second (a gate opening,
        an error, a report), so its seconds and days still come in order."""
        usage = self.own.get(name) or self._usage(name)
        usage.add(tally[3], tokens=int(tally[1]), cost=tally[2])
        self.changed.add(name)

    def _open(self, tenant: Tenant, now: float) -> _Gate:
        """The full check, at a key's first request in a second (or when something
        changed): raises if the request may not pass, else opens the second's gate."""
        name = tenant.name
        old = self._gates.pop(name, None)
        if old is not None and old.close():
            self.changed.add(name)
        tally = self._tallies.pop(name, None)
        if tally is not None:
            self._fold(name, tally)
        usage = self.own.get(name) or self._usage(name)
        route = None
        spend_room = math.inf
        budget = tenant.budget
        if budget is not None:
            spent_day, spent_month = self._spent(name, now)
            daily, monthly = budget.daily_usd, budget.monthly_usd
            if (daily is not None and spent_day >= daily) or (
                monthly is not None and spent_month >= monthly
            ):
                route = _exhausted(budget, daily is not None and spent_day >= daily, now)
            else:  # what is left, less a margin for rounding: `record` looks again then
                for cap, spent in ((daily, spent_day), (monthly, spent_month)):
                    if cap is not None:
                        spend_room = min(spend_room, cap - spent - cap * 1e-9)
        room = tokens_room = math.inf
        lines, counts = b"", 0
        limit = tenant.rate_limit
        if limit is not None:
            requests, tokens, oldest = self._recent(name, now)
            reset = (oldest + WINDOW - now) if oldest is not None else 0.0
            rpm, tpm = limit.requests_per_minute, limit.tokens_per_minute
            resets = _RESETS[min(WINDOW, max(1, math.ceil(reset or WINDOW)))]
            lines, counts = _limit_lines(rpm, tpm, resets)
            if rpm is not None:
                room = int(rpm - requests)
            if tpm is not None:
                tokens_room = int(tpm - tokens)
            refused: RateLimitExceeded | None = None
            if rpm is not None and requests >= rpm:
                refused = RateLimitExceeded(
                    f"Rate limit reached for this API key: {rpm} requests per minute. "
                    f"Try again in {_duration(reset)}.",
                    retry_after=max(1, math.ceil(reset)),
                )
            elif tpm is not None and tokens >= tpm:
                refused = TokenRateLimitExceeded(
                    f"Rate limit reached for this API key: {tpm} tokens per minute. "
                    f"Try again in {_duration(reset)}.",
                    retry_after=max(1, math.ceil(reset)),
                )
            if refused is not None:  # the refusal carries the headers too, as OpenAI's
                left = tuple(
                    max(0, int(cap - used))
                    for cap, used in ((rpm, requests), (tpm, tokens))
                    if cap is not None
                )
                refused.headers = tuple(
                    (k.decode(), v.decode()) for k, v in header_pairs(lines % left)
                )
                raise refused
        second = int(now)
        bucket = usage.bucket(second)
        row = usage.row(now)
        gate = _Gate(
            tenant, usage, second, bucket, usage.day, row, route,
            room, tokens_room, spend_room, lines, counts,
        )  # fmt: skip
        self._gates[name] = gate
        return gate

    # -- reading ------------------------------------------------------------------------
    def report(self, name: str) -> dict[str, Any]:
        """The fleet's figures for one key today and this month, and the last minute's."""
        self.settle()
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
            "in_flight": self.in_flight(name, now), "days": history,
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

    def _peers_of(self, name: str, now: float) -> _Others:
        others = self._others.get(name)
        if others is None:
            others = self._others[name] = _Others()
            for origin, keys in self.peers.items():
                theirs = keys.get(name)
                if theirs is not None:
                    others.active[origin] = theirs
        others.sort(now)
        return others

    def _recent(self, name: str, now: float) -> tuple[float, float, int | None]:
        mine = self.own.get(name)
        requests, tokens, oldest = mine.recent(now) if mine is not None else (0.0, 0.0, None)
        if self.peers:  # a fleet: theirs too (a lone process skips the loop)
            for theirs in self._peers_of(name, now).active.values():
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
            others = self._peers_of(name, now)
            usages += others.active.values()
            spent_day += others.day.get(day, 0.0)
            spent_month += others.month.get(month, 0.0)
        for usage in usages:
            if usage.day == day:
                spent_day += usage.spend_day
            if usage.month == month:
                spent_month += usage.spend_month
        return spent_day, spent_month


def _limit_lines(rpm: int | None, tpm: int | None, resets: bytes) -> tuple[bytes, int]:
    """The x-ratelimit-* header lines of a key's answers, with a `%d` for each of what
    is left (requests, then tokens), and which limits they count down. Made once per
    key and second, filled in per answer: one format operation."""
    lines, counts = [], 0
    if rpm is not None:
        lines += [(b"x-ratelimit-limit-requests", b"%d" % rpm),
                  (b"x-ratelimit-remaining-requests", b"%d"),
                  (b"x-ratelimit-reset-requests", resets)]  # fmt: skip
        counts |= _REQUESTS
    if tpm is not None:
        lines += [(b"x-ratelimit-limit-tokens", b"%d" % tpm),
                  (b"x-ratelimit-remaining-tokens", b"%d"),
                  (b"x-ratelimit-reset-tokens", resets)]  # fmt: skip
        counts |= _TOKENS
    return render_headers(lines), counts


def _reason(refused: RateLimitExceeded | QuotaExceeded) -> str:
    """Which of a key's limits refused a request, as /metrics labels it."""
    if isinstance(refused, ConcurrencyLimitExceeded):
        return "concurrency"
    if isinstance(refused, TokenRateLimitExceeded):
        return "tokens"
    if isinstance(refused, QuotaExceeded):
        return "budget"
    return "requests"


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
        # Three rounds missed (plus the store's own delays) before a live origin's
        # answers in flight stop counting elsewhere.
        quota.stale_after = 3 * interval + 5.0

    async def round(self) -> None:
        quota = self.quota
        quota.settle()
        changed, quota.changed = quota.changed, set()
        # Answers in flight are published every round while there are any: their time is
        # what tells the others this origin is still alive.
        changed.update(name for name, usage in quota.own.items() if usage.in_flight)
        now = quota.clock()
        for name in changed:
            quota.own[name].at = now
        try:
            if changed:
                await self.store.save_states(
                    [(USAGE, f"{self.origin}{SEP}{name}", quota.own[name].to_dict())
                     for name in changed]
                )  # fmt: skip
            began = quota.clock()
            # At first this month's rows (and last month's end), then what changed since
            # the previous pull, with a margin for clocks and commits in flight.
            first = began - 40 * 86400
            since = first if self._pulled is None else self._pulled - 10.0
            rows = await self.store.load_states(USAGE, changed_since=since)
            if since != first and stopped_among(rows):
                # A process stopped and its rows went into the stopped ones': all again,
                # or its counts would be here twice (its old row and the stopped row).
                rows = await self.store.load_states(USAGE, changed_since=first)
                quota.forget_peers()
        except BaseException:
            quota.changed |= changed  # published next round
            raise
        self._pulled = began
        for key, data in rows.items():
            origin, _, name = key.partition(SEP)
            if origin != self.origin:
                quota.take(origin, name, Usage.from_dict(data))
        if rows:
            quota.settle()  # the next requests see what the others counted

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gatewise-quota")

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
            except self.store.OUTAGES as exc:
                log.warning("usage could not be shared: %s", type(exc).__name__)
            await asyncio.sleep(self.interval)

    @property
    def folds(self) -> list[Fold]:
        """What a dead process left of this kind, and how to fold it (`Origins`)."""
        return [(USAGE, merge_usage)]

    async def stop(self) -> None:
        await cancel(self._task)
        with contextlib.suppress(*self.store.OUTAGES):
            await self.round()  # what was counted last is kept for the next start
            # This origin's rows join the stopped processes' (a restart is a new origin,
            # so they would pile up, each read at every start and by every check).
            await fold_own(self.store, self.origin, USAGE, self.quota.own, merge_usage)
