"""Takes models that keep failing out of rotation, for longer each time they relapse.

A model is benched when its consecutive failures reach the threshold: for the base
duration the first time, doubling with each relapse in the same failure streak,
capped. It returns by itself when the time is up; one success ends the streak.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

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

    def to_dict(self) -> dict:
        return asdict(self)


class Blacklist:
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
        self._entries: dict[str, Entry] = {}
        self._benched: dict[str, float] = {}  # model -> until, for the hot path
        self.on_return: Callable[[str], None] | None = None

    def failure(self, model: str, error: str | None = None) -> Entry | None:
        """Count a failure; returns the entry when this failure benched the model."""
        now = self.clock()
        entry = self._entries.get(model)
        if entry is None:
            entry = self._entries[model] = Entry(model)
        entry.consecutive_failures += 1
        entry.last_error = error
        entry.last_error_at = now
        if entry.consecutive_failures < self.threshold or self._active(model, now):
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

    def any_benched(self) -> bool:
        """Cheap check for the common case: nothing is benched, nothing to filter."""
        return bool(self._benched)

    def is_blacklisted(self, model: str) -> bool:
        return bool(self._benched) and self._active(model, self.clock())

    def _active(self, model: str, now: float) -> bool:
        until = self._benched.get(model)
        if until is None:
            return False
        if now < until:
            return True
        del self._benched[model]  # back by itself
        if self.on_return is not None:
            self.on_return(model)
        return False

    def until(self, model: str) -> float | None:
        return self._benched.get(model) if self.is_blacklisted(model) else None

    def clear(self, model: str) -> bool:
        """An admin lets a model back in early; its streak starts over."""
        entry = self._entries.get(model)
        was = self.is_blacklisted(model)
        if entry is not None:
            entry.consecutive_failures = entry.level = 0
            entry.since = entry.until = None
        self._benched.pop(model, None)
        return was

    def entry(self, model: str) -> Entry | None:
        return self._entries.get(model)

    def active(self) -> list[Entry]:
        now = self.clock()
        return [self._entries[m] for m in list(self._benched) if self._active(m, now)]

    def consecutive_failures(self, model: str) -> int:
        entry = self._entries.get(model)
        return entry.consecutive_failures if entry else 0

    def snapshot(self) -> dict[str, dict]:
        return {m: e.to_dict() for m, e in self._entries.items()}

    def restore(self, data: dict[str, dict]) -> None:
        now = self.clock()
        for model, fields in data.items():
            try:
                entry = Entry(**fields)
            except TypeError:
                continue
            self._entries[model] = entry
            if entry.until is not None and entry.until > now:
                self._benched[model] = entry.until
