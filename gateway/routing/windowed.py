"""Latency over the recent past: a ring of per-slot histograms (by default 6 x 10
minutes), rotated lazily from an injected clock on write and read."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from gateway.routing.histogram import (
    DEFAULT_GROWTH,
    DEFAULT_MAX_VALUE,
    DEFAULT_MIN_VALUE,
    Histogram,
    is_int,
    is_number,
)

__all__ = ["WindowedHistogram"]


class WindowedHistogram:
    """A histogram of the last ``slots * slot_seconds`` seconds (default: one hour).

    A ring of ``slots`` sub-histograms, each holding the values recorded during
    one ``slot_seconds``-long epoch of ``clock()``. Expired slots are dropped
    lazily when a write crosses into a new epoch and ignored by reads. The clock
    is assumed to be mostly monotonic: a step back of less than a window keeps
    writing into the newest slot; a larger jump either way starts afresh.
    """

    __slots__ = (
        "_clock",
        "_current",
        "_epoch",
        "_epochs",
        "_hists",
        "_params",
        "slot_seconds",
        "slots",
    )

    def __init__(
        self,
        slots: int = 6,
        slot_seconds: float = 600.0,
        *,
        clock: Callable[[], float] = time.time,
        min_value: float = DEFAULT_MIN_VALUE,
        max_value: float = DEFAULT_MAX_VALUE,
        growth: float = DEFAULT_GROWTH,
    ) -> None:
        if not is_int(slots) or slots < 1:
            raise ValueError("slots must be a positive integer")
        if not (is_number(slot_seconds) and 0 < slot_seconds < math.inf):
            raise ValueError("slot_seconds must be positive")
        Histogram(min_value, max_value, growth)  # validates the parameters
        self.slots = slots
        self.slot_seconds = float(slot_seconds)
        self._clock = clock
        self._params = (float(min_value), float(max_value), float(growth))
        self._hists: list[Histogram | None] = [None] * slots  # allocated on first use
        self._epochs: list[int | None] = [None] * slots
        self._epoch: float | None = None  # the epoch `_current` belongs to
        self._current: Histogram | None = None

    @property
    def window_seconds(self) -> float:
        return self.slots * self.slot_seconds

    # -- hot path ---------------------------------------------------------------

    def record(self, value: float) -> None:
        epoch = self._clock() // self.slot_seconds
        if epoch != self._epoch:
            self._rotate(epoch)
        self._current.record(value)  # type: ignore[union-attr]  # set by _rotate

    def _rotate(self, epoch: float) -> None:
        e = int(epoch)
        n = self.slots
        current = self._epoch
        if self._current is not None and current is not None and current - n < e < current:
            return  # the clock stepped back a little: keep filling the newest slot
        hists, epochs = self._hists, self._epochs
        for k in range(n):
            slot_epoch = epochs[k]
            if slot_epoch is not None and not (e - n < slot_epoch <= e):
                hists[k] = None
                epochs[k] = None
        k = e % n
        hist = hists[k]
        if hist is None:  # else it already holds epoch e (e.g. restored from disk)
            hist = hists[k] = Histogram(*self._params)
            epochs[k] = e
        self._epoch = epoch
        self._current = hist

    # -- reads ------------------------------------------------------------------

    def _live(self) -> list[tuple[int, Histogram]]:
        now = int(self._clock() // self.slot_seconds)
        n = self.slots
        return sorted(
            (e, h)
            for e, h in zip(self._epochs, self._hists, strict=True)
            if h is not None and e is not None and now - n < e < now + n
        )

    def snapshot(self) -> Histogram:
        """A new Histogram of every value recorded within the window."""
        out = Histogram(*self._params)
        for _, hist in self._live():
            out.merge(hist)
        return out

    @property
    def count(self) -> int:
        return sum(h.count for _, h in self._live())

    @property
    def mean(self) -> float | None:
        live = self._live()
        count = sum(h.count for _, h in live)
        return sum(h.total for _, h in live) / count if count else None

    def quantile(self, q: float) -> float | None:
        return self.snapshot().quantile(q)

    def __repr__(self) -> str:
        return (
            f"WindowedHistogram(slots={self.slots}, slot_seconds={self.slot_seconds}, "
            f"live={self.snapshot()!r})"
        )

    # -- persistence ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "slot_seconds": self.slot_seconds,
            "windows": [[e, h.to_dict()] for e, h in self._live() if h.count],
        }

    @classmethod
    def from_dict(
        cls,
        d: Any,
        *,
        clock: Callable[[], float] = time.time,
        slots: int | None = None,
        slot_seconds: float | None = None,
        min_value: float = DEFAULT_MIN_VALUE,
        max_value: float = DEFAULT_MAX_VALUE,
        growth: float = DEFAULT_GROWTH,
    ) -> WindowedHistogram:
        """Rebuild from `to_dict()`, dropping slots that have expired since.

        ``slots``/``slot_seconds`` default to the stored layout; when given, a
        different stored layout is a ValueError, as is any malformed input.
        """
        if not isinstance(d, dict):
            raise ValueError("windowed histogram: expected a dict")
        stored_slots, stored_seconds = d.get("slots"), d.get("slot_seconds")
        if not is_int(stored_slots) or stored_slots < 1:
            raise ValueError("windowed histogram: bad slots")
        if not (is_number(stored_seconds) and 0 < stored_seconds < math.inf):
            raise ValueError("windowed histogram: bad slot_seconds")
        if (slots is not None and slots != stored_slots) or (
            slot_seconds is not None and slot_seconds != stored_seconds
        ):
            raise ValueError("windowed histogram: stored slot layout does not match")
        out = cls(
            stored_slots,
            stored_seconds,
            clock=clock,
            min_value=min_value,
            max_value=max_value,
            growth=growth,
        )
        windows = d.get("windows")
        if not isinstance(windows, list):
            raise ValueError("windowed histogram: bad windows")
        parsed: dict[int, Histogram] = {}
        for entry in windows:
            if not (isinstance(entry, list | tuple) and len(entry) == 2 and is_int(entry[0])):
                raise ValueError("windowed histogram: bad window entry")
            epoch, data = entry
            if epoch in parsed:
                raise ValueError("windowed histogram: duplicate window")
            parsed[epoch] = Histogram.from_dict(
                data, min_value=min_value, max_value=max_value, growth=growth
            )
        now = int(clock() // out.slot_seconds)
        for epoch, hist in parsed.items():
            if now - out.slots < epoch <= now and hist.count:
                k = epoch % out.slots
                out._hists[k] = hist
                out._epochs[k] = epoch
        return out
