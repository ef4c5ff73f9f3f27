"""Latency histograms for the performance tracker.

Every upstream attempt records its latency on the request hot path, so recording
must be O(1) and allocation-free, and memory must stay bounded no matter how many
requests are served: an unbounded list of samples is out. A log-bucketed
histogram gives mean (exact) and quantiles (within a few percent) from a fixed
number of integer counters, merges by adding counters, and persists as a small
JSON-able dict so the figures survive a restart.

`Histogram` is the plain accumulator; `WindowedHistogram` keeps the recent past: a
ring of per-slot histograms (by default 6 x 10 minutes), rotated lazily from an
injected clock on write and read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

__all__ = [
    "DEFAULT_GROWTH",
    "DEFAULT_MAX_VALUE",
    "DEFAULT_MIN_VALUE",
    "Histogram",
    "WindowedHistogram",
]

DEFAULT_MIN_VALUE = 0.1  # ms
DEFAULT_MAX_VALUE = 600_000.0  # ms: 10 minutes
DEFAULT_GROWTH = 1.05  # each bucket is 5% wider than the previous one

_INF = math.inf
_log = math.log


def is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


class Histogram:
    """Counts of values in logarithmic buckets, plus exact count, sum, min and max.

    Bucket ``i`` covers ``[min_value * growth**i, min_value * growth**(i + 1))``;
    values at or below ``min_value`` go to bucket 0 and values beyond the last
    bucket to the last one. Non-finite values (NaN, ±inf) are ignored.
    """

    __slots__ = (
        "_hi",
        "_inv_log_growth",
        "_inv_min",
        "_last",
        "_lo",
        "count",
        "counts",
        "growth",
        "max_value",
        "min_value",
        "total",
    )

    def __init__(
        self,
        min_value: float = DEFAULT_MIN_VALUE,
        max_value: float = DEFAULT_MAX_VALUE,
        growth: float = DEFAULT_GROWTH,
    ) -> None:
        if not (0 < min_value < max_value < _INF) or not (1 < growth < _INF):
            raise ValueError("need 0 < min_value < max_value and growth > 1")
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        self.growth = float(growth)
        self._inv_min = 1.0 / self.min_value
        self._inv_log_growth = 1.0 / _log(self.growth)
        self._last = int(_log(self.max_value / self.min_value) * self._inv_log_growth)
        self.counts: list[int] = [0] * (self._last + 1)
        self.count = 0
        self.total = 0.0
        self._lo = _INF
        self._hi = -_INF

    # -- hot path ---------------------------------------------------------------

    def record(self, value: float) -> None:
        if not -_INF < value < _INF:  # NaN and infinities would poison total
            return
        if value > self.min_value:
            i = int(_log(value * self._inv_min) * self._inv_log_growth)
            if i > self._last:
                i = self._last
            self.counts[i] += 1
        else:
            self.counts[0] += 1
        self.count += 1
        self.total += value
        if value < self._lo:
            self._lo = value
        if value > self._hi:
            self._hi = value

    # -- reads ------------------------------------------------------------------

    @property
    def params(self) -> tuple[float, float, float]:
        return (self.min_value, self.max_value, self.growth)

    @property
    def buckets(self) -> int:
        """The fixed number of buckets (the memory bound)."""
        return self._last + 1

    @property
    def min(self) -> float | None:
        return self._lo if self.count else None

    @property
    def max(self) -> float | None:
        return self._hi if self.count else None

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def bucket_value(self, index: int) -> float:
        """The geometric midpoint of a bucket (at most ~2.5% from any value in it)."""
        return self.min_value * float(self.growth ** (index + 0.5))

    def quantile(self, q: float) -> float | None:
        """The value below which a fraction ``q`` of the recorded values lie."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q!r}")
        if not self.count:
            return None
        if q == 0.0:
            return self._lo
        if q == 1.0:
            return self._hi
        rank = q * self.count
        seen = 0
        index = self._last
        for i, n in enumerate(self.counts):
            seen += n
            if n and seen >= rank:
                index = i
                break
        return min(max(self.bucket_value(index), self._lo), self._hi)

    # -- combination ------------------------------------------------------------

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s values to this histogram, in place."""
        if other.params != self.params:
            raise ValueError("cannot merge histograms with different bucket parameters")
        if not other.count:
            return
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.count += other.count
        self.total += other.total
        if other._lo < self._lo:
            self._lo = other._lo
        if other._hi > self._hi:
            self._hi = other._hi

    def clear(self) -> None:
        self.counts = [0] * (self._last + 1)
        self.count = 0
        self.total = 0.0
        self._lo = _INF
        self._hi = -_INF

    def copy(self) -> Histogram:
        out = Histogram(*self.params)
        out.merge(self)
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self.params == other.params
            and self.count == other.count
            and self.total == other.total
            and self.min == other.min
            and self.max == other.max
            and self.counts == other.counts
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Histogram(count={self.count}, mean={self.mean}, min={self.min}, max={self.max})"

    # -- persistence ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_value": self.min_value,
            "max_value": self.max_value,
            "growth": self.growth,
            "buckets": [[i, n] for i, n in enumerate(self.counts) if n],
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_dict(
        cls,
        d: Any,
        *,
        min_value: float = DEFAULT_MIN_VALUE,
        max_value: float = DEFAULT_MAX_VALUE,
        growth: float = DEFAULT_GROWTH,
    ) -> Histogram:
        """Rebuild a histogram; ValueError if ``d`` is malformed or was bucketed differently."""
        if not isinstance(d, dict):
            raise ValueError("histogram: expected a dict")
        params = (d.get("min_value"), d.get("max_value"), d.get("growth"))
        if params != (min_value, max_value, growth):
            raise ValueError(f"histogram: bucket parameters {params!r} do not match")
        out = cls(min_value, max_value, growth)
        count, total, lo, hi = d.get("count"), d.get("total"), d.get("min"), d.get("max")
        if not is_int(count) or count < 0:
            raise ValueError("histogram: bad count")
        if not is_number(total) or not math.isfinite(total):
            raise ValueError("histogram: bad total")
        buckets = d.get("buckets")
        if not isinstance(buckets, list):
            raise ValueError("histogram: bad buckets")
        counts = out.counts
        for pair in buckets:
            if not (isinstance(pair, list | tuple) and len(pair) == 2):
                raise ValueError("histogram: bad bucket entry")
            i, n = pair
            if not (is_int(i) and 0 <= i < len(counts) and is_int(n) and n > 0):
                raise ValueError("histogram: bad bucket entry")
            if counts[i]:
                raise ValueError("histogram: duplicate bucket")
            counts[i] = n
        if sum(counts) != count:
            raise ValueError("histogram: bucket counts do not add up to count")
        if count:
            if not (is_number(lo) and is_number(hi) and math.isfinite(lo) and lo <= hi):
                raise ValueError("histogram: bad min/max")
            if not math.isfinite(hi):
                raise ValueError("histogram: bad min/max")
            out._lo, out._hi = float(lo), float(hi)
        elif lo is not None or hi is not None or total != 0:
            raise ValueError("histogram: an empty histogram has no min/max/total")
        out.count = count
        out.total = float(total)
        return out


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

    @classmethod
    def combined(
        cls, parts: Sequence[WindowedHistogram], *, clock: Callable[[], float] = time.time
    ) -> WindowedHistogram:
        """A new windowed histogram holding every value the parts hold in the window
        (the parts share one layout, and clocks that agree on the epoch)."""
        first = parts[0]
        out = cls(first.slots, first.slot_seconds, clock=clock)
        out._params = first._params
        hists, epochs = out._hists, out._epochs
        for part in parts:
            if (part.slots, part.slot_seconds, part._params) != (
                out.slots,
                out.slot_seconds,
                out._params,
            ):
                raise ValueError("cannot combine windowed histograms of different layouts")
            for epoch, hist in part._live():
                k = epoch % out.slots
                held = epochs[k]
                if held == epoch:
                    hists[k].merge(hist)  # type: ignore[union-attr]  # set with its epoch
                elif held is None or held < epoch:
                    hists[k] = hist.copy()
                    epochs[k] = epoch
        return out

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
