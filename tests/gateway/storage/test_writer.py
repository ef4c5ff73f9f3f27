"""The store writer: batches off the request path, bounded, never blocking, losing nothing
it has room for."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.core.types import Attempt, ResponseRecord
from gateway.routing.tracker import Tracker
from gateway.storage import Query, SQLiteStore, Store
from gateway.storage.writer import StoreWriter
from tests.gateway.storage.helpers import Harness

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def attempt(i: int = 0, model: str = "alpha", ok: bool = True) -> Attempt:
    return Attempt(
        request_id=f"req-{i}",
        response_id=f"resp-{i}" if ok else None,
        attempt=1,
        model=model,
        provider="up",
        conversation_type="text-to-text",
        route=None,
        optimization=None,
        ok=ok,
        latency_ms=10.0 + i,
        timestamp=T0 + i,
        counts_as_failure=not ok,
    )


async def stored(store: Store) -> list[str]:
    rows = await store.attempts(Query(limit=100_000))
    return sorted(row["request_id"] for row in rows)


def ids(n: int, start: int = 0) -> list[str]:
    return sorted(f"req-{i}" for i in range(start, start + n))


@pytest.fixture
def clock() -> Clock:
    return Clock()


Opened = Callable[[SQLiteStore], Awaitable[SQLiteStore]]


@pytest.fixture
async def opened() -> AsyncIterator[Opened]:
    """Opens a store (SQLite in memory unless it says otherwise), closed after the test."""
    stores: list[SQLiteStore] = []

    async def open_store(store: SQLiteStore) -> SQLiteStore:
        await store.open()
        stores.append(store)
        return store

    yield open_store
    for store in stores:
        await store.close()


class FailingStore(SQLiteStore):
    """Refuses the first `failures` batch writes."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0
        self.written = asyncio.Event()

    async def write_attempts(self, attempts: Sequence[Attempt], batch: str | None = None) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise OSError("disk on fire")
        await super().write_attempts(attempts, batch)
        self.written.set()


class SlowStore(SQLiteStore):
    """Each attempt batch waits for the test to open the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.written = asyncio.Event()

    async def write_attempts(self, attempts: Sequence[Attempt], batch: str | None = None) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().write_attempts(attempts, batch)
        self.written.set()


async def test_enqueued_attempts_are_written_on_flush(opened: Opened) -> None:
    store = await opened(SQLiteStore())
    writer = StoreWriter(store)
    for i in range(5):
        writer.enqueue(attempt(i))
    assert await stored(store) == []  # nothing is written on the request path
    await writer.flush()
    assert await stored(store) == ids(5)
    assert writer.written == 5
    await writer.flush()  # nothing pending: nothing written twice
    assert writer.written == 5
    assert len(await stored(store)) == 5


@pytest.mark.parametrize("kind", ["file", "memory"])
async def test_close_flushes_everything(clock: Clock, kind: str, tmp_path: Path) -> None:
    store: Store = SQLiteStore(tmp_path / "gw.db" if kind == "file" else ":memory:")
    await store.open()
    try:
        writer = StoreWriter(store)
        for a in [attempt(i) for i in range(3)] + [
            attempt(i, model="beta", ok=False) for i in range(3, 6)
        ]:
            writer.enqueue(a)
        await writer.close()
        assert await stored(store) == ids(6)
    finally:
        await store.close()


async def test_queue_is_bounded_and_counts_drops(opened: Opened) -> None:
    store = await opened(SQLiteStore())
    writer = StoreWriter(store, queue_size=3)
    for i in range(5):
        writer.enqueue(attempt(i))
    assert writer.dropped == 2
    await writer.flush()
    assert await stored(store) == ids(3)  # the first three; the overflow was dropped
    writer.enqueue(attempt(9))  # room again after the flush
    assert writer.dropped == 2
    await writer.flush()
    assert len(await stored(store)) == 4


async def test_a_failing_store_keeps_the_batch_for_the_next_flush(opened: Opened) -> None:
    store = await opened(FailingStore(failures=2))
    writer = StoreWriter(store, queue_size=100)
    for i in range(10):
        writer.enqueue(attempt(i))
    with pytest.raises(OSError):
        await writer.flush()
    for i in range(10, 15):  # traffic continues while the store is down
        writer.enqueue(attempt(i))
    with pytest.raises(OSError):
        await writer.flush()
    assert await stored(store) == []
    await writer.flush()
    assert await stored(store) == ids(15)
    # The failed batch is retried whole (3rd call), then what came meanwhile (4th).
    assert (writer.written, writer.dropped, store.calls) == (15, 0, 4)


async def test_a_failing_store_drops_only_what_does_not_fit(opened: Opened) -> None:
    store = await opened(FailingStore(failures=1))
    writer = StoreWriter(store, queue_size=4)
    for i in range(4):
        writer.enqueue(attempt(i))
    with pytest.raises(OSError):
        await writer.flush()
    await writer.flush()
    assert await stored(store) == ids(4)
    assert writer.dropped == 0


async def test_a_slow_store_does_not_block_enqueue_or_record(clock: Clock, opened: Opened) -> None:
    store = await opened(SlowStore())
    tracker = Tracker(clock=clock)
    writer = StoreWriter(store)

    def record(a: Attempt) -> None:  # what the recorder does on the request path
        tracker.record(a)
        writer.enqueue(a)

    record(attempt(0))
    flushing = asyncio.create_task(writer.flush())
    await store.entered.wait()  # the flush is now stuck inside the store
    for i in range(1, 1001):  # synchronous: returns without yielding to the stuck flush
        record(attempt(i))
    assert not flushing.done()
    assert tracker.stats("alpha", "text-to-text").requests == 1001
    assert writer.dropped == 0
    assert await stored(store) == []
    store.gate.set()
    await flushing
    assert await stored(store) == ["req-0"]
    await writer.close()
    assert await stored(store) == ids(1001)
    assert writer.written == 1001


async def test_the_background_loop_flushes_without_being_asked(
    clock: Clock, opened: Opened
) -> None:
    store = await opened(SlowStore())
    store.gate.set()
    # The fake clock keeps the loop's pruning from rolling up these 2023 timestamps.
    writer = StoreWriter(store, flush_interval=0.001, clock=clock)
    writer.start()
    try:
        writer.enqueue(attempt(1))
        await asyncio.wait_for(store.written.wait(), timeout=10)
        assert await stored(store) == ["req-1"]
    finally:
        await writer.close()


async def test_the_background_loop_survives_a_store_failure(clock: Clock, opened: Opened) -> None:
    store = await opened(FailingStore(failures=1))
    writer = StoreWriter(store, flush_interval=0.001, clock=clock)
    writer.enqueue(attempt(1))
    writer.start()
    try:
        await asyncio.wait_for(store.written.wait(), timeout=10)
        assert store.calls == 2
        assert await stored(store) == ["req-1"]
    finally:
        await writer.close()


async def test_an_outage_is_reported_once_with_what_is_dropped_and_its_end(
    clock: Clock, opened: Opened, caplog: pytest.LogCaptureFixture
) -> None:
    store = await opened(FailingStore(failures=2))
    writer = StoreWriter(store, queue_size=2, clock=clock)
    for i in range(3):
        writer.enqueue(attempt(i))  # the third does not fit
    for _ in range(2):
        with pytest.raises(OSError):
            await writer.flush()
        writer._failed(OSError("down"))  # what the background loop does with it
    assert writer.degraded and writer.last_error == "OSError"
    assert writer.queued == 2 and writer.dropped == 1
    events = [r.__dict__.get("fields", {}).get("event") for r in caplog.records]
    assert events.count("storage_degraded") == 1  # said once, not every second
    assert events.count("storage_dropped") == 1
    await writer.flush()
    writer._recovered()
    assert not writer.degraded
    assert await stored(store) == ids(2)
    assert [r.__dict__["fields"]["event"] for r in caplog.records][-1] == "storage_recovered"


async def test_prune_uses_the_retention_and_the_clock(clock: Clock, opened: Opened) -> None:
    store = await opened(SQLiteStore())
    writer = StoreWriter(store, retention_seconds=100, clock=clock)
    for i in (0, 50, 150):
        writer.enqueue(attempt(i))
    await writer.flush()
    clock.now = T0 + 200  # keep ts >= T0 + 100
    await writer.prune()
    assert await stored(store) == ["req-150"]
    assert (await store.counts())["attempt_hourly"] >= 1


async def test_prune_clears_the_texts_of_answers_past_the_retention(
    clock: Clock, opened: Opened
) -> None:
    store = await opened(SQLiteStore())
    writer = StoreWriter(store, retention_seconds=100, clock=clock)
    for i in (0, 150):
        writer.enqueue_response(
            ResponseRecord(f"r{i}", f"q{i}", "alpha", "up", "text-to-text", None, None,
                           T0 + i, 1.0, prompt=f"secret {i}", answer=f"answer {i}")
        )  # fmt: skip
    await writer.flush()
    clock.now = T0 + 200  # keep ts >= T0 + 100
    await writer.prune()
    old, recent = await store.get_response("r0"), await store.get_response("r150")
    assert old is not None and recent is not None
    assert (old["prompt"], old["answer"]) == (None, None)  # the answer itself is kept
    assert (recent["prompt"], recent["answer"]) == ("secret 150", "answer 150")


class ChunkStore(FailingStore):
    """Records the size of every attempt and response write; `failures` as FailingStore."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__(failures)
        self.sizes: list[int] = []

    async def write_attempts(self, attempts: Sequence[Attempt], batch: str | None = None) -> None:
        self.sizes.append(len(attempts))
        await super().write_attempts(attempts, batch)


async def test_a_large_flush_is_written_in_chunks(opened: Opened) -> None:
    store = await opened(ChunkStore())
    writer = StoreWriter(store, chunk=4)
    for i in range(10):
        writer.enqueue(attempt(i))
    await writer.flush()
    assert store.sizes == [4, 4, 2]  # the event loop runs between the chunks
    assert await stored(store) == ids(10)
    assert writer.written == 10


async def test_a_chunk_that_fails_keeps_itself_and_the_rest_only(opened: Opened) -> None:
    store = await opened(ChunkStore())
    writer = StoreWriter(store, chunk=4)
    for i in range(10):
        writer.enqueue(attempt(i))

    async def fail_second(attempts: Sequence[Attempt], batch: str | None = None) -> None:
        store.sizes.append(len(attempts))
        if len(store.sizes) == 2:
            raise OSError("disk on fire")
        await SQLiteStore.write_attempts(store, attempts, batch)

    store.write_attempts = fail_second  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await writer.flush()
    assert await stored(store) == ids(4)  # the first chunk is in
    writer.enqueue(attempt(10))
    await writer.flush()
    assert await stored(store) == ids(11)  # nothing lost, nothing written twice
    assert (writer.written, writer.dropped) == (11, 0)


async def test_response_records_are_written_in_chunks_and_marked_stored(opened: Opened) -> None:
    sizes: list[int] = []

    class Store(SQLiteStore):
        async def write_responses(self, records: Sequence[dict]) -> None:
            sizes.append(len(records))
            await super().write_responses(records)

    store = await opened(Store())
    writer = StoreWriter(store, chunk=3)
    records = [
        ResponseRecord(f"r{i}", f"q{i}", "alpha", "up", "text-to-text", None, None, T0, 1.0)
        for i in range(7)
    ]
    for record in records:
        writer.enqueue_response(record)
    await writer.flush()
    assert sizes == [3, 3, 1]
    assert all(record.stored for record in records)
    assert await store.get_response("r6") is not None


class LostAnswerStore(SQLiteStore):
    """The first write commits, then fails as a connection cut right after would."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = True
        self.batches: list[str | None] = []

    async def write_attempts(self, attempts: Sequence[Attempt], batch: str | None = None) -> None:
        self.batches.append(batch)
        await super().write_attempts(attempts, batch)
        if self.cut:
            self.cut = False
            raise OSError("connection reset after the commit")


async def test_a_batch_whose_commit_answer_was_lost_is_not_written_twice(
    opened: Opened,
) -> None:
    store = await opened(LostAnswerStore())
    writer = StoreWriter(store, chunk=3)
    for i in range(5):
        writer.enqueue(attempt(i))
    with pytest.raises(OSError):
        await writer.flush()
    assert writer.queued == 5  # the failed chunk kept whole, the rest as it was
    writer.enqueue(attempt(5))
    await writer.flush()
    assert await stored(store) == ids(6)  # every attempt once
    assert writer.written == 6
    first, retried, *_ = store.batches
    assert first is not None and retried == first  # retried under its own name


async def test_a_row_the_store_will_never_take_is_dropped_alone(harness: Harness) -> None:
    """Found by a misbehaving upstream: a token count past 64 bits (in SQLite also a NaN
    cost, stored as NULL) made the store refuse its whole batch, and the writer retried
    that batch at every flush: no attempt after it was ever stored."""
    store = harness.store
    writer = StoreWriter(store, chunk=4)
    for i in range(10):
        writer.enqueue(replace(attempt(i), prompt_tokens=2**64 - 1) if i in (3, 8) else attempt(i))
    await writer.flush()  # no error: the store is not down
    assert await stored(store) == sorted(set(ids(10)) - {"req-3", "req-8"})
    assert (writer.written, writer.refused, writer.dropped, writer.queued) == (8, 2, 0, 0)
    writer.enqueue(attempt(10))
    await writer.flush()
    assert "req-10" in await stored(store)

    good = [
        ResponseRecord(f"r{i}", f"q{i}", "alpha", "up", "text-to-text", None, None, T0, 1.0)
        for i in range(3)
    ]
    bad = replace(good[1], response_id="bad", cost=10**400)  # no float holds it
    for record in (good[0], bad, good[1], good[2]):
        writer.enqueue_response(record)
    await writer.flush()
    assert [await store.get_response(r.response_id) is not None for r in good] == [True] * 3
    assert await store.get_response("bad") is None
    assert writer.refused == 3 and all(r.stored for r in good) and not bad.stored


async def test_a_nan_cost_is_refused_by_sqlite_and_dropped_alone(opened: Opened) -> None:
    store = await opened(SQLiteStore())
    writer = StoreWriter(store)
    writer.enqueue(replace(attempt(0), cost=math.nan))  # NOT NULL: NaN is stored as NULL
    writer.enqueue(attempt(1))
    await writer.flush()
    assert await stored(store) == ["req-1"]
    assert writer.refused == 1 and not writer.degraded


async def test_an_outage_while_going_row_by_row_keeps_the_rest_for_the_next_flush(
    opened: Opened,
) -> None:
    class Store(SQLiteStore):
        """Refuses a chunk with a bad row in it; down once, at the second row alone."""

        def __init__(self) -> None:
            super().__init__()
            self.singles = 0

        async def write_attempts(
            self, attempts: Sequence[Attempt], batch: str | None = None
        ) -> None:
            if len(attempts) == 1:
                self.singles += 1
                if self.singles == 2:
                    raise OSError("down for a moment")
            await super().write_attempts(attempts, batch)

    store = await opened(Store())
    writer = StoreWriter(store)
    for i in range(5):
        writer.enqueue(replace(attempt(i), prompt_tokens=2**64 - 1) if i == 0 else attempt(i))
    with pytest.raises(OSError):
        await writer.flush()
    assert await stored(store) == []  # req-0 refused, req-1 met the outage
    assert writer.queued == 4 and writer.refused == 1
    await writer.flush()
    assert await stored(store) == ids(4, start=1)
    assert (writer.written, writer.queued, writer.dropped) == (4, 0, 0)
