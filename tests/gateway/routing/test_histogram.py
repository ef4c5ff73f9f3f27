import math
import random

import orjson
import pytest

from gateway.routing.histogram import Histogram, WindowedHistogram


def _values(n: int = 10_000, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(5.0, 1.0) for _ in range(n)]


def _exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _filled(values: list[float]) -> Histogram:
    hist = Histogram()
    for value in values:
        hist.record(value)
    return hist


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- Histogram ---------------------------------------------------------------------


def test_empty_histogram() -> None:
    hist = Histogram()
    assert hist.count == 0
    assert hist.mean is None
    assert hist.min is None and hist.max is None
    for q in (0.0, 0.5, 0.99, 1.0):
        assert hist.quantile(q) is None


@pytest.mark.parametrize("q", [0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999])
def test_quantiles_within_five_percent(q: float) -> None:
    values = _values()
    hist = _filled(values)
    exact = _exact_quantile(values, q)
    assert hist.quantile(q) == pytest.approx(exact, rel=0.05)


def test_quantile_extremes_are_exact_min_and_max() -> None:
    values = _values()
    hist = _filled(values)
    assert hist.quantile(0.0) == min(values) == hist.min
    assert hist.quantile(1.0) == max(values) == hist.max


def test_quantile_rejects_out_of_range() -> None:
    hist = _filled([1.0])
    for q in (-0.1, 1.1, math.nan):
        with pytest.raises(ValueError):
            hist.quantile(q)


def test_mean_is_exact() -> None:
    values = _values()
    hist = _filled(values)
    assert hist.count == len(values)
    assert hist.mean == pytest.approx(math.fsum(values) / len(values), rel=1e-12)


def test_single_value_is_returned_exactly() -> None:
    hist = _filled([42.0])
    for q in (0.0, 0.5, 0.99, 1.0):
        assert hist.quantile(q) == 42.0
    assert hist.mean == 42.0


def test_out_of_range_values_are_clamped_to_edge_buckets() -> None:
    hist = _filled([0.0, 0.01, -3.0, 10_000_000.0, 1e12])
    assert hist.counts[0] == 3
    assert hist.counts[-1] == 2
    assert hist.min == -3.0 and hist.max == 1e12
    assert hist.quantile(1.0) == 1e12


def test_non_finite_values_are_ignored() -> None:
    hist = _filled([math.nan, math.inf, -math.inf, 5.0])
    assert hist.count == 1
    assert hist.total == 5.0


def test_bucket_midpoint_is_within_bucket_error_bound() -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        value = math.exp(rng.uniform(math.log(0.1), math.log(600_000.0)))
        hist = Histogram()
        hist.record(value)
        index = hist.counts.index(1)
        assert hist.bucket_value(index) == pytest.approx(value, rel=0.026)  # sqrt(1.05) - 1


def test_merge_equals_recording_both_sets() -> None:
    a_values, b_values = _values(5_000, seed=2), _values(7_000, seed=3)
    merged = _filled(a_values)
    merged.merge(_filled(b_values))
    both = _filled(a_values + b_values)
    assert merged.counts == both.counts
    assert merged.count == both.count
    assert merged.min == both.min and merged.max == both.max
    assert merged.total == pytest.approx(both.total, rel=1e-12)
    for q in (0.5, 0.95, 0.99):
        assert merged.quantile(q) == both.quantile(q)


def test_merge_with_empty_and_into_empty() -> None:
    values = _values(100)
    hist = _filled(values)
    hist.merge(Histogram())
    assert hist == _filled(values)
    empty = Histogram()
    empty.merge(hist)
    assert empty == hist


def test_merge_rejects_other_parameters() -> None:
    with pytest.raises(ValueError):
        Histogram().merge(Histogram(growth=1.1))


def test_clear() -> None:
    hist = _filled(_values(100))
    hist.clear()
    assert hist == Histogram()
    assert hist.quantile(0.5) is None


def test_round_trip() -> None:
    hist = _filled(_values())
    data = hist.to_dict()
    assert Histogram.from_dict(data) == hist
    assert Histogram.from_dict(orjson.loads(orjson.dumps(data))) == hist
    assert Histogram.from_dict(Histogram().to_dict()) == Histogram()


def test_to_dict_is_sparse_and_small() -> None:
    hist = _filled([10.0] * 1_000 + [20.0] * 1_000)
    data = hist.to_dict()
    assert len(data["buckets"]) == 2
    assert len(orjson.dumps(data)) < 250


def _corrupt(**changes: object) -> dict:
    data = _filled([1.0, 2.0, 3.0]).to_dict()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "histogram",
        {},
        _corrupt(growth=1.1),
        _corrupt(min_value=1.0),
        _corrupt(max_value=None),
        _corrupt(count=4),
        _corrupt(count=-1),
        _corrupt(count="3"),
        _corrupt(count=True),
        _corrupt(total="6"),
        _corrupt(total=math.nan),
        _corrupt(buckets=None),
        _corrupt(buckets=[[0, 1, 2]]),
        _corrupt(buckets=[[10_000, 3]]),
        _corrupt(buckets=[[-1, 3]]),
        _corrupt(buckets=[[5, 0]]),
        _corrupt(buckets=[[5, 1.5]]),
        _corrupt(buckets=[[5, 1], [5, 2]]),
        _corrupt(buckets=["ab"]),
        _corrupt(min=None),
        _corrupt(min=5.0),  # min > max
        _corrupt(max=math.inf),
        {**Histogram().to_dict(), "min": 1.0},
        {**Histogram().to_dict(), "total": 3.0},
    ],
)
def test_from_dict_rejects_malformed(data: object) -> None:
    with pytest.raises(ValueError):
        Histogram.from_dict(data)


def test_from_dict_rejects_other_expected_parameters() -> None:
    data = _filled([1.0]).to_dict()
    with pytest.raises(ValueError):
        Histogram.from_dict(data, growth=1.1)


def test_memory_is_bounded() -> None:
    hist = Histogram()
    buckets = hist.buckets
    assert len(hist.counts) == buckets < 400
    rng = random.Random(5)
    for _ in range(100_000):  # also a smoke test that recording many values runs
        hist.record(rng.lognormvariate(7.0, 3.0))
    hist.record(1e-9)
    hist.record(1e15)
    assert hist.count == 100_002
    assert len(hist.counts) == buckets
    assert len(hist.to_dict()["buckets"]) <= buckets


# -- WindowedHistogram -------------------------------------------------------------


def test_windowed_empty() -> None:
    window = WindowedHistogram(clock=FakeClock())
    assert window.count == 0
    assert window.mean is None
    assert window.quantile(0.5) is None
    assert window.snapshot() == Histogram()


def test_windowed_records_and_summarises() -> None:
    clock = FakeClock()
    window = WindowedHistogram(clock=clock)
    values = _values()
    for i, value in enumerate(values):
        clock.now += 3_000 / len(values) * (i > 0)  # spread across ~5 slots of the hour
        window.record(value)
    assert window.count == len(values)
    assert window.mean == pytest.approx(math.fsum(values) / len(values), rel=1e-12)
    assert window.snapshot().counts == _filled(values).counts
    assert window.quantile(0.95) == pytest.approx(_exact_quantile(values, 0.95), rel=0.05)


def test_windowed_values_older_than_window_disappear() -> None:
    clock = FakeClock(6_000.0)  # the start of a slot (epoch 10)
    window = WindowedHistogram(slots=6, slot_seconds=600, clock=clock)
    window.record(100.0)
    clock.now += 3_599  # still within the hour
    assert window.count == 1
    clock.now += 1  # exactly an hour later: that slot has expired
    assert window.count == 0
    assert window.mean is None
    assert window.quantile(0.5) is None


def test_windowed_partial_expiry() -> None:
    clock = FakeClock(0.0)
    window = WindowedHistogram(slots=6, slot_seconds=600, clock=clock)
    for slot in range(6):  # one value per slot: 10, 20, ..., 60
        clock.now = slot * 600 + 1
        window.record(10.0 * (slot + 1))
    assert window.count == 6
    assert window.snapshot().min == 10.0
    clock.now = 6 * 600 + 1  # the first slot expires
    assert window.count == 5
    assert window.snapshot().min == 20.0
    clock.now = 8 * 600 + 1  # two more expire
    assert window.count == 3
    assert window.snapshot().min == 40.0
    window.record(1.0)  # rotation reuses the expired slots
    assert window.count == 4
    assert window.snapshot().min == 1.0
    assert window.snapshot().max == 60.0
    assert sum(h is not None for h in window._hists) <= 6


def test_windowed_jump_past_window_clears_everything() -> None:
    clock = FakeClock(0.0)
    window = WindowedHistogram(slots=6, slot_seconds=600, clock=clock)
    for i in range(60):
        clock.now = i * 60.0
        window.record(50.0)
    assert window.count == 60
    clock.now += 10 * 3_600 + 123  # ten hours later
    assert window.count == 0
    window.record(7.0)
    assert window.count == 1
    assert window.snapshot().max == 7.0
    assert sum(h is not None for h in window._hists) == 1


def test_windowed_exact_ring_multiple_jump_does_not_reuse_stale_slot() -> None:
    clock = FakeClock(0.0)
    window = WindowedHistogram(slots=6, slot_seconds=600, clock=clock)
    window.record(1.0)
    clock.now = 6 * 600.0  # same ring position, one full window later
    window.record(2.0)
    assert window.count == 1
    assert window.snapshot().min == 2.0


def test_windowed_small_clock_step_back_keeps_data() -> None:
    clock = FakeClock(6_000.0)
    window = WindowedHistogram(slots=6, slot_seconds=600, clock=clock)
    window.record(1.0)
    clock.now -= 30  # into the previous slot
    window.record(2.0)
    assert window.count == 2
    clock.now += 30
    window.record(3.0)
    assert window.count == 3


def test_windowed_round_trip_within_window() -> None:
    clock = FakeClock(0.0)
    window = WindowedHistogram(clock=clock)
    values = _values(600)
    for i, value in enumerate(values):
        clock.now = i * 5.0  # 50 minutes of traffic
        window.record(value)
    data = orjson.loads(orjson.dumps(window.to_dict()))
    clock.now += 60  # a quick restart
    restored = WindowedHistogram.from_dict(data, clock=clock)
    assert restored.to_dict() == window.to_dict()
    assert restored.snapshot() == window.snapshot()
    restored.record(5.0)  # continues writing into the restored current slot
    window.record(5.0)
    assert restored.snapshot() == window.snapshot()


def test_windowed_round_trip_drops_expired_slots() -> None:
    clock = FakeClock(0.0)
    window = WindowedHistogram(slots=6, slot_seconds=600, clock=clock)
    for slot in range(6):
        clock.now = slot * 600 + 1
        window.record(10.0 * (slot + 1))
    data = window.to_dict()
    assert len(data["windows"]) == 6
    clock.now = 8 * 600 + 1  # restarted 40 minutes later: three slots have expired
    restored = WindowedHistogram.from_dict(data, clock=clock)
    assert restored.count == 3
    assert restored.snapshot().min == 40.0
    assert len(restored.to_dict()["windows"]) == 3
    clock.now = 100 * 600
    assert WindowedHistogram.from_dict(data, clock=clock).count == 0


def test_windowed_to_dict_omits_expired_and_empty_slots() -> None:
    clock = FakeClock(0.0)
    window = WindowedHistogram(slots=6, slot_seconds=600, clock=clock)
    assert window.to_dict()["windows"] == []
    window.record(1.0)
    clock.now = 7 * 600
    window.record(2.0)
    assert [e for e, _ in window.to_dict()["windows"]] == [7]


@pytest.mark.parametrize(
    "data",
    [
        None,
        {},
        {"slots": 0, "slot_seconds": 600.0, "windows": []},
        {"slots": 6, "slot_seconds": -1, "windows": []},
        {"slots": 6, "slot_seconds": 600.0},
        {"slots": 6, "slot_seconds": 600.0, "windows": [[1]]},
        {"slots": 6, "slot_seconds": 600.0, "windows": [["1", Histogram().to_dict()]]},
        {"slots": 6, "slot_seconds": 600.0, "windows": [[1, {"count": 1}]]},
        {
            "slots": 6,
            "slot_seconds": 600.0,
            "windows": [[1, Histogram().to_dict()], [1, Histogram().to_dict()]],
        },
    ],
)
def test_windowed_from_dict_rejects_malformed(data: object) -> None:
    with pytest.raises(ValueError):
        WindowedHistogram.from_dict(data, clock=FakeClock(0.0))


def test_windowed_from_dict_rejects_other_layout_when_asked() -> None:
    data = WindowedHistogram(clock=FakeClock()).to_dict()
    with pytest.raises(ValueError):
        WindowedHistogram.from_dict(data, clock=FakeClock(), slots=12)
    restored = WindowedHistogram.from_dict(data, clock=FakeClock(), slots=6, slot_seconds=600)
    assert restored.slots == 6


def test_windowed_memory_is_bounded() -> None:
    clock = FakeClock(0.0)
    window = WindowedHistogram(slots=6, slot_seconds=600, clock=clock)
    for i in range(100_000):
        clock.now = i * 0.5  # ~14 hours of traffic
        window.record(float(i % 5_000) + 0.5)
    live = [h for h in window._hists if h is not None]
    assert len(live) <= 6
    assert all(len(h.counts) == Histogram().buckets for h in live)
    assert window.count <= 3_600 * 2
