"""Moves what the gateway records into the store, in batches, off the request path.

The recorder and the evaluator only append to in-memory lists (bounded: past the
limit rows are dropped and counted, never waited on). A background task writes the
batches at least every `flush_interval` seconds, prunes old rows, and does a last
flush on graceful shutdown. (The live state, stats and benches, is shared and kept by
`gateway.routing.fleet`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from gateway.core.types import Attempt, ResponseRecord
from gateway.storage.base import Store

__all__ = ["StoreWriter"]

log = logging.getLogger("gatewise.store")


class StoreWriter:
    def __init__(
        self,
        store: Store,
        *,
        flush_interval: float = 1.0,
        queue_size: int = 10_000,
        retention_seconds: float = 30 * 86400,
        prune_interval: float = 3600.0,
        chunk: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self.retention_seconds = retention_seconds
        self.prune_interval = prune_interval
        # Rows per write: turning records into rows runs on the event loop (2-5 µs a
        # row), and one flush under load holds ~6,000 of them.
        self.chunk = chunk
        self.clock = clock
        self.close_timeout = 30.0
        self.dropped = 0
        self.refused = 0  # rows the store would never take (Store.REFUSALS), dropped
        self.written = 0
        self._pending: list[Attempt] = []
        self._retry: tuple[str, list[Attempt]] | None = None  # a chunk that failed, named
        self._responses: list[ResponseRecord] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._last_prune = 0.0
        self.flushed_at = clock()  # when a flush last succeeded: the lag operators watch
        self.failing_since: float | None = None  # when writes began to fail (None: they work)
        self.last_error: str | None = None  # the class of the last failure, never its text
        self._dropped_told = 0

    @property
    def degraded(self) -> bool:
        return self.failing_since is not None

    @property
    def queued(self) -> int:
        retry = len(self._retry[1]) if self._retry is not None else 0
        return len(self._pending) + len(self._responses) + retry

    def enqueue(self, attempt: Attempt) -> None:
        if len(self._pending) >= self.queue_size:
            self.dropped += 1
            return
        self._pending.append(attempt)

    def enqueue_response(self, record: ResponseRecord) -> None:
        if len(self._responses) >= self.queue_size:
            self.dropped += 1
            return
        self._responses.append(record)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gatewise-store-writer")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.flush_interval)
            try:
                await self.flush()
                now = self.clock()
                if now - self._last_prune >= self.prune_interval:
                    await self.prune()
            except Exception as exc:
                self._failed(exc)
            else:
                self.flushed_at = self.clock()
                self._recovered()

    def _failed(self, exc: Exception) -> None:
        """Say once that storage is down, then only what is dropped, as it grows."""
        if not isinstance(exc, self.store.OUTAGES):
            log.exception("store write failed; will retry")
        self.last_error = type(exc).__name__
        if self.failing_since is None:
            self.failing_since = self.clock()
            log.warning(
                "storage is unavailable: buffering what to store, routing goes on",
                extra={
                    "fields": {
                        "event": "storage_degraded",
                        "error": self.last_error,
                        "queued": self.queued,
                        "bound": self.queue_size,
                    }
                },
            )
        if self.dropped > self._dropped_told:
            log.warning(
                "storage buffer full: rows dropped",
                extra={"fields": {"event": "storage_dropped", "dropped": self.dropped}},
            )
            self._dropped_told = self.dropped

    def _recovered(self) -> None:
        if self.failing_since is not None:
            log.warning(
                "storage is available again: buffered rows written",
                extra={
                    "fields": {
                        "event": "storage_recovered",
                        "down_seconds": round(self.clock() - self.failing_since, 1),
                        "dropped": self.dropped,
                    }
                },
            )
            self.failing_since = None

    async def flush(self) -> None:
        await self._flush_attempts()
        await self._flush_responses()

    async def _flush_responses(self) -> None:
        if not self._responses:
            return
        batch, self._responses = self._responses, []
        for start in range(0, len(batch), self.chunk):
            chunk = batch[start : start + self.chunk]
            try:
                await self._write_responses(chunk)  # on a failure: what is left of it
            except Exception:
                rest = chunk + batch[start + self.chunk :]
                room = self.queue_size - len(self._responses)
                self.dropped += max(0, len(rest) - room)
                self._responses[:0] = rest[:room]
                raise

    async def _write_responses(self, chunk: list[ResponseRecord]) -> None:
        """One chunk, whole; if the store refuses a record in it, one by one, the refused
        ones dropped (as `_write_attempts`). On a failure `chunk` is left holding what is
        still to write."""
        try:
            await self.store.write_responses([r.to_row() for r in chunk])
        except self.store.REFUSALS:
            pass
        else:
            for record in chunk:
                record.stored = True
            return
        for i, record in enumerate(chunk):
            try:
                await self.store.write_responses([record.to_row()])
            except self.store.REFUSALS as exc:
                self._refused("response", record.response_id, exc)
            except BaseException:
                del chunk[:i]
                raise
            else:
                record.stored = True

    async def _flush_attempts(self) -> None:
        """Each chunk is written under a name of its own, and a chunk whose write failed
        is retried whole under the same name: when the failure was a connection cut
        after the commit, the store has it already and writes nothing (no row twice)."""
        while self._retry is not None:
            name, chunk = self._retry
            self._retry = None
            await self._write_attempts(chunk, name)  # raises: kept for the next try
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        for start in range(0, len(batch), self.chunk):
            chunk = batch[start : start + self.chunk]
            try:
                await self._write_attempts(chunk, uuid.uuid4().hex)
            except Exception:
                # Keep what fits so a store hiccup loses nothing while there is room.
                rest = batch[start + len(chunk) :]
                room = self.queue_size - len(self._pending)
                self.dropped += max(0, len(rest) - room)
                self._pending[:0] = rest[:room]
                raise

    async def _write_attempts(self, chunk: list[Attempt], name: str) -> None:
        """One chunk, whole, or kept as `_retry` when the write fails (and raised). If the
        store refuses a row in it (Store.REFUSALS), the rows go one by one, each under a
        name of its own, and the refused ones are dropped: retried whole, one bad row
        would fail every flush after it, and the rows queued behind it would be lost."""
        try:
            await self.store.write_attempts(chunk, name)
        except self.store.REFUSALS:
            pass
        except BaseException:
            self._retry = (name, chunk)
            raise
        else:
            self.written += len(chunk)
            return
        for i, row in enumerate(chunk):
            single = uuid.uuid4().hex
            try:
                await self.store.write_attempts([row], single)
            except self.store.REFUSALS as exc:
                self._refused("attempt", row.request_id, exc)
            except BaseException:
                self._retry = (single, [row])  # maybe committed: retried under its name
                self._pending[:0] = chunk[i + 1 :]  # never sent
                raise
            else:
                self.written += 1

    def _refused(self, what: str, key: str, exc: BaseException) -> None:
        self.refused += 1
        log.error(
            f"the store refused {what} {key}: dropped",
            extra={"fields": {"event": "storage_refused", "error": type(exc).__name__}},
        )

    async def prune(self) -> None:
        """Roll up attempts past the retention, and clear the prompt and answer texts
        stored with older answers and comparison pairs (`log_payloads`, pairs for blind
        judging): a user's text is not kept longer than the attempts that describe it,
        and the store does not grow with traffic forever."""
        now = self._last_prune = self.clock()
        removed = await self.store.prune(now - self.retention_seconds)
        cleared = await self.store.prune_payloads(now - self.retention_seconds)
        if removed or cleared:
            fields = {"rolled_up": removed, "texts_cleared": cleared}
            log.info("pruned attempts and texts", extra={"fields": fields})

    async def close(self) -> None:
        """Stop the loop (letting a write in progress finish) and write what is left."""
        if self._task is not None:
            self._stopping.set()
            try:
                await asyncio.wait_for(self._task, self.close_timeout)
            except TimeoutError:
                log.error("store writer did not finish within %.0f s", self.close_timeout)
            self._task = None
        try:
            await self.flush()
        except self.store.OUTAGES as exc:
            log.error(
                "storage is unavailable at shutdown: rows not stored",
                extra={"fields": {"error": type(exc).__name__, "lost": self.queued}},
            )
