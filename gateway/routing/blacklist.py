"""Takes models that keep failing out of rotation, for longer each time they relapse.

A model is benched when its consecutive failures reach the threshold: for the base
duration the first time, doubling with each relapse in the same failure streak,
capped. It returns by itself when the time is up; one success ends the streak.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Blacklist", "Entry"]


@dataclass(slots=True)
class Entry:
    model: str
    consecutive_failures: int = 0
    level: int = 0  # times benched in the current streak
    since: float | None = None
    until: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Blacklist:
    """The failure streaks and benched models. Reads never change it: a bench that has
    run out is simply not active any more, and is dropped at the next write."""

    kind = "blacklist"  # what its snapshots are stored as

    def __init__(
        self,
        threshold: int = 3,
        base_seconds: float = 3600.0,
        max_seconds: float = 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.threshold = threshold
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self.clock = clock
        self.version = 0  # bumps on every change, so snapshots know when to save
        self._entries: dict[str, Entry] = {}
        self._benched: dict[str, float] = {}  # model -> until, for the hot path

    def failure(self, model: str, error: str | None = None) -> Entry | None:
        """Count a failure; returns the entry when this failure benched the model."""
        now = self.clock()
        self._drop_expired(now)
        entry = self._entries.get(model)
        if entry is None:
            entry = self._entries[model] = Entry(model)
        entry.consecutive_failures += 1
        entry.last_error = error
        entry.last_error_at = now
        self.version += 1
        if entry.consecutive_failures < self.threshold or model in self._benched:
            return None
        duration = min(self.base_seconds * 2**entry.level, self.max_seconds)
        entry.level += 1
        entry.since = now
        entry.until = now + duration
        self._benched[model] = entry.until
        return entry

    def success(self, model: str, started: float | None = None) -> None:
        """End the failure streak, unless this request began before the streak's last
        failure: answers already in flight when a model goes down say nothing about
        whether it is back, and letting them reset the count wasted attempts."""
        entry = self._entries.get(model)
        if entry is None or not (entry.consecutive_failures or entry.level):
            return
        last_failure = entry.last_error_at
        if started is not None and last_failure is not None and started < last_failure:
            return
        entry.consecutive_failures = 0
        entry.level = 0
        entry.since = entry.until = None
        self._benched.pop(model, None)
        self.version += 1

    def clear(self, model: str) -> bool:
        """An admin lets a model back in early; its streak starts over. Returns whether
        it was benched."""
        was = self.is_blacklisted(model)
        entry = self._entries.get(model)
        if entry is not None:
            entry.consecutive_failures = entry.level = 0
            entry.since = entry.until = None
        self._benched.pop(model, None)
        self.version += 1
        return was

    def _drop_expired(self, now: float) -> None:
        benched = self._benched
        if benched:
            for model in [m for m, until in benched.items() if until <= now]:
                del benched[model]  # back by itself

    # -- reads ---------------------------------------------------------------------
    def any_benched(self) -> bool:
        """Cheap check for the common case: nothing is (or was lately) benched."""
        return bool(self._benched)

    def is_blacklisted(self, model: str) -> bool:
        until = self._benched.get(model)
        return until is not None and self.clock() < until

    def until(self, model: str) -> float | None:
        until = self._benched.get(model)
        return until if until is not None and self.clock() < until else None

    def entry(self, model: str) -> Entry | None:
        return self._entries.get(model)

    def active(self) -> list[Entry]:
        now = self.clock()
        return [self._entries[m] for m, until in self._benched.items() if now < until]

    def consecutive_failures(self, model: str) -> int:
        entry = self._entries.get(model)
        return entry.consecutive_failures if entry else 0

    # -- persistence ---------------------------------------------------------------
    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {m: e.to_dict() for m, e in self._entries.items()}

    def restore(self, data: dict[str, dict[str, Any]]) -> None:
        now = self.clock()
        for model, fields in data.items():
            try:
                entry = Entry(**fields)
            except TypeError:
                continue
            self._entries[model] = entry
            if entry.until is not None and entry.until > now:
                self._benched[model] = entry.until
        self.version += 1
