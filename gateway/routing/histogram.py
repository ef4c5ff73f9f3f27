"""Latency histograms for the performance tracker.

Every upstream attempt records its latency on the request hot path, so recording
must be O(1) and allocation-free, and memory must stay bounded no matter how many
requests are served: an unbounded list of samples is out. A log-bucketed
histogram gives mean (exact) and quantiles (within a few percent) from a fixed
number of integer counters, merges by adding counters, and persists as a small
JSON-able dict so the figures survive a restart.

`Histogram` is the plain accumulator; `gateway.routing.windowed.WindowedHistogram` keeps
the recent past.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "DEFAULT_GROWTH",
    "DEFAULT_MAX_VALUE",
    "DEFAULT_MIN_VALUE",
    "Histogram",
]

DEFAULT_MIN_VALUE = 0.1  # ms
DEFAULT_MAX_VALUE = 600_000.0  # ms: 10 minutes
DEFAULT_GROWTH = 1.05  # each bucket is 5% wider than the previous one

_INF = math.inf
_log = math.log


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
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
        return self.min_value * self.growth ** (index + 0.5)

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
