"""Takes models that keep failing out of rotation, for longer each time they relapse.

A model is benched when its consecutive failures reach the threshold: for the base
duration the first time, doubling with each relapse in the same failure streak,
capped. It returns by itself when the time is up; one success ends the streak.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
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
    changed_at: float = 0.0  # when it was last benched, let back or cleared: newest wins

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
        self.version = 0  # bumps on every change
        self._entries: dict[str, Entry] = {}
        self._benched: dict[str, float] = {}  # model -> until, for the hot path
        self._unshared: set[str] = set()  # models whose bench changed here since shared

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
        self._changed_here(entry, now)
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
        lifted = entry.level > 0
        entry.consecutive_failures = 0
        entry.level = 0
        entry.since = entry.until = None
        self._benched.pop(model, None)
        self.version += 1
        if lifted:
            self._changed_here(entry, self.clock())

    def clear(self, model: str) -> bool:
        """An admin lets a model back in early; its streak starts over. Returns whether
        it was benched."""
        was = self.is_blacklisted(model)
        entry = self._entries.get(model)
        if entry is None:
            entry = self._entries[model] = Entry(model)
        entry.consecutive_failures = entry.level = 0
        entry.since = entry.until = None
        self._benched.pop(model, None)
        self.version += 1
        self._changed_here(entry, self.clock())
        return was

    def _changed_here(self, entry: Entry, now: float) -> None:
        entry.changed_at = max(now, entry.changed_at + 1e-6)  # newer than what it replaces
        self._unshared.add(entry.model)

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

    # -- the fleet -----------------------------------------------------------------
    def unshared(self) -> dict[str, dict[str, Any]]:
        """The entries whose bench changed here since `shared()` was last told of them."""
        return {m: self._entries[m].to_dict() for m in self._unshared if m in self._entries}

    def shared(self, stored: Mapping[str, Mapping[str, Any]]) -> None:
        """These entries (as `unshared()` gave them) are stored. One that changed again
        while they were being written stays unshared: what the store has is older."""
        entries = self._entries
        for model, fields in stored.items():
            entry = entries.get(model)
            if entry is None or entry.changed_at == fields.get("changed_at"):
                self._unshared.discard(model)

    def adopt(self, data: Mapping[str, dict[str, Any]]) -> list[str]:
        """Take in entries the fleet stored: each replaces the local one when it changed
        later. Returns the models whose bench began or ended by it."""
        now = self.clock()
        moved = []
        for model, fields in data.items():
            try:
                theirs = Entry(**fields)
            except TypeError:
                continue  # written by a release that knew other fields
            mine = self._entries.get(model)
            if mine is not None and mine.changed_at >= theirs.changed_at:
                continue
            was = self.is_blacklisted(model)
            if mine is not None:
                theirs.consecutive_failures = mine.consecutive_failures
                theirs.last_error = theirs.last_error or mine.last_error
            self._entries[model] = theirs
            self._unshared.discard(model)
            if theirs.until is not None and theirs.until > now:
                self._benched[model] = theirs.until
            else:
                self._benched.pop(model, None)
            if was != self.is_blacklisted(model):
                moved.append(model)
        if data:
            self.version += 1
        return moved

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {m: e.to_dict() for m, e in self._entries.items()}
