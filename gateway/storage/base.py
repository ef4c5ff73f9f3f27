"""The storage interface: what the gateway keeps durably, whatever the database.

Everything above this layer talks to a ``Store`` and nothing else, so the SQLite store
(sqlite.py) and the PostgreSQL store (postgres.py) are interchangeable. The semantics every
implementation shares:

* Timestamps are float unix seconds. ``since`` is inclusive and ``until`` exclusive.
* Every read takes a ``Query`` (gateway/storage/query.py). Its ``limit``/``offset`` page
  the listings (``attempts``, ``responses``, ``feedback``); aggregates, time series and
  trends ignore them and count every selected row. ``response_id`` selects ratings: only
  ``feedback()`` takes it, the other reads raise ``ValueError``. A negative ``limit`` or
  ``offset`` is a ``ValueError`` when the ``Query`` is made, a ``bucket_seconds`` that is
  not positive one when the read is called.
* ``attempts()`` returns dicts of the ``attempts`` columns (``ATTEMPT_COLUMNS`` plus the
  autoincrement ``id``), newest first (``ts`` then ``id`` descending); ``ok``, ``stream``
  and ``counts_as_failure`` come back as ``bool`` whatever the column type.
* ``prune()`` folds raw rows older than the cut-off into hourly rollups keyed by
  (model, provider, conversation_type, hour start) and deletes them, atomically; a rollup
  that already exists is added to, so pruning again (or pruning part of an hour first and
  the rest later) keeps the totals exact.
* ``timeseries()`` buckets are aligned to the unix epoch (start = ts truncated to a
  multiple of ``bucket_seconds``). Raw rows and rollups are combined: a rollup counts
  wholly in the bucket holding its hour start (for buckets shorter than an hour that is
  the bucket starting at the hour), and ``since``/``until`` select rollups by hour start.
  ``latency_ms`` is the mean over every attempt in the bucket, failures included.
  ``failures`` counts attempts with ``counts_as_failure``; ``requests`` counts attempts.
* State is opaque JSON per (kind, key); ``save_states`` upserts, last write wins (within
  one batch too), and stamps every item with the store's clock (``updated_at``).
  ``load_states(kind, changed_since=t)`` returns only the states with ``updated_at >= t``,
  for replicas that poll shared state cheaply. The stamp is the saving process's clock at
  the save, before its commit: a poller should overlap its windows by its clocks' skew
  plus a write's duration.
* A batch write (``write_attempts``, ``save_states``, ``write_responses``) lands completely
  or not at all.
* ``responses`` holds one row per answer, keyed by ``response_id``; writing the same id
  again replaces every column (last write wins). ``flags`` is a list of strings.
  Listings are newest first (``ts`` then ``response_id`` descending) and each row carries
  ``feedback``: the latest rating of that response (``FEEDBACK_SCORES`` + ``comment`` +
  ``ts``) or ``None``.
* ``feedback`` keeps every rating. The *latest* rating of a response is the one inserted
  last (highest ``id``), whatever the ``ts`` given; aggregates and trends count only the
  latest rating of each response, so a re-rating replaces the first one there.
  ``add_feedback`` reads the previous latest rating and inserts the new one atomically.
  Feedback listings are newest first (``ts`` then ``id`` descending).
* Filters (``model``, ``conversation_type``, ``since``, ``until``) apply to the rows
  being counted: for feedback aggregates and trends that is the latest rating of each
  response (its ``ts`` decides the window and the bucket).
* ``comparison_pairs`` (schema version 5) holds same-prompt pairs by ``pair_id``
  (``PAIR_COLUMNS``, storage/pairs.py); writing one again replaces it. A verdict
  (``add_verdict``) replaces the earlier verdict on the same two answers, whichever way
  round they were given, and marks its pair judged; ``verdict_tallies`` counts the
  latest verdicts by (model_a, model_b, winner).
* ``prune()`` never deletes responses, feedback, pairs or verdicts; ``prune_payloads()``
  clears the stored ``prompt``/``answer`` text of responses older than the cut-off, and
  the text of pairs older than it (such a pair is no longer offered by ``next_pair``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Self

from gateway.core.types import Attempt
from gateway.storage.query import Query
from gateway.storage.rows import Row

__all__ = ["Merge", "Store", "StoreError"]

# How a folded row joins the row it is folded into (None: there is none yet).
Merge = Callable[[dict[str, Any] | None, dict[str, Any]], dict[str, Any]]


class StoreError(Exception):
    """The store cannot be configured, opened or used as asked."""


class Store(ABC):
    """Durable storage for attempts, their rollups and component state."""

    # What a database that is down or unreachable makes this store raise (refused or
    # dropped connections, timeouts): callers that must answer now say "try again
    # later" for these, and the background writers keep their rows for the next try.
    OUTAGES: ClassVar[tuple[type[BaseException], ...]] = (StoreError, OSError, TimeoutError)
    # What this store raises for a row it will never take (a value no column holds): a
    # write that failed so is not retried whole, or one bad row would stop every write
    # after it; its rows are written one by one and the refused ones dropped.
    REFUSALS: ClassVar[tuple[type[BaseException], ...]] = (OverflowError, ValueError, TypeError)

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    @abstractmethod
    async def close(self) -> None: ...

    def preflight(self) -> str | None:
        """What would certainly stop `open()`, found without opening anything (for
        `gatewise check`, and to refuse to serve with a clear message). None: nothing
        known; a database that is merely down is not a problem here (the gateway serves
        degraded until it is back)."""
        return None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abstractmethod
    async def write_attempts(self, attempts: Sequence[Attempt], batch: str | None = None) -> None:
        """Insert every attempt, in one transaction. With a `batch` name, at most once:
        a write whose commit went through but whose answer was lost (the connection cut
        at that moment) is retried under the same name, and then writes nothing."""

    @abstractmethod
    async def save_states(self, items: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Upsert (kind, key) -> JSON-serialisable data, in one transaction."""

    @abstractmethod
    async def load_states(
        self, kind: str, *, changed_since: float | None = None
    ) -> dict[str, dict[str, Any]]:
        """key -> data of ``kind``'s states; with ``changed_since``, only those saved at or
        after it."""

    @abstractmethod
    async def delete_state(self, kind: str, key: str) -> None: ...

    @abstractmethod
    async def fold_states(self, kind: str, moves: Mapping[str, str], merge: Merge) -> int:
        """Fold rows of `kind` into others, in one transaction that no other fold of this
        store runs beside: for each `key -> into` of `moves`, the row of `key`, if it is
        still there, is merged into the row of `into` (`merge(into's data or None,
        key's data)`) and deleted. Returns how many were folded. State kept per process
        (under its origin) would otherwise pile up with every restart: a stopped
        process's rows join one row for all the stopped ones."""

    @abstractmethod
    async def prune(self, older_than: float) -> int:
        """Roll raw attempts with ts < older_than into hourly rows; return rows removed.

        Responses and feedback are kept (see ``prune_payloads``)."""

    @abstractmethod
    async def attempts(self, query: Query) -> list[Row]:
        """Attempts newest first (``id`` + ``ATTEMPT_COLUMNS``)."""

    @abstractmethod
    async def timeseries(self, query: Query, bucket_seconds: int = 60) -> list[Row]:
        """Epoch-aligned buckets, ascending: requests, successes, failures, mean latency,
        latency_p50_ms/latency_p95_ms (successful raw attempts), cost and tokens."""

    @abstractmethod
    async def counts(self) -> dict[str, int]:
        """Rows per table: attempts, attempt_hourly, state, responses, feedback."""

    @abstractmethod
    async def schema_version(self) -> int: ...

    # ---- answers and their ratings (schema version 2) ----

    @abstractmethod
    async def write_responses(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Upsert response records (``RESPONSE_COLUMNS``) by response_id, in one transaction;
        a later write of an id replaces all of its columns."""

    @abstractmethod
    async def get_response(self, response_id: str) -> Row | None:
        """The stored response (``RESPONSE_COLUMNS``, flags as a list) or ``None``."""

    @abstractmethod
    async def responses(self, query: Query) -> list[Row]:
        """Responses newest first, each with ``feedback``: its latest rating or ``None``."""

    @abstractmethod
    async def add_feedback(
        self,
        response_id: str,
        scores: Mapping[str, int],
        comment: str | None,
        ts: float,
        model: str,
        provider: str,
        conversation_type: str,
    ) -> dict[str, int] | None:
        """Record a rating; return the previous latest rating's scores (its non-null
        dimensions) or ``None`` when this is the first. Read and insert are one atomic step,
        so concurrent ratings of one response each see exactly one predecessor."""

    @abstractmethod
    async def feedback(self, query: Query) -> list[Row]:
        """Every rating (``id`` + ``FEEDBACK_COLUMNS``), newest first; the one read that
        takes ``query.response_id``."""

    @abstractmethod
    async def feedback_aggregates(self, query: Query) -> list[Row]:
        """Per (model, conversation_type), over the latest rating of each response:
        ``count`` of rated responses, the mean of each dimension (``None`` when no rating
        has it) and ``samples`` {dimension: ratings with a value}."""

    @abstractmethod
    async def evaluation_aggregates(self, query: Query) -> list[Row]:
        """Per (model, conversation_type) over responses: ``count``, ``scored`` (with an
        auto score), mean ``auto_score`` (or ``None``), ``flagged`` (with any flag) and
        ``flags`` {flag: responses having it}."""

    @abstractmethod
    async def evaluation_trend(self, query: Query, bucket_seconds: int = 3600) -> list[Row]:
        """Epoch-aligned buckets, ascending: ``ts`` (bucket start), ``responses``, mean
        ``auto_score``, ``flagged``, and ``feedback``/mean ``overall`` over the latest
        rating of each response, bucketed by that rating's ``ts``."""

    # ---- same-prompt pairs and pairwise verdicts (schema version 5) ----

    @abstractmethod
    async def write_pairs(self, pairs: Sequence[Mapping[str, Any]]) -> None:
        """Upsert pairs (``PAIR_COLUMNS``) by pair_id, in one transaction."""

    @abstractmethod
    async def pair_of(self, a_response_id: str, b_response_id: str) -> Row | None:
        """The pair of these two answers, in either order, or ``None``."""

    @abstractmethod
    async def next_pair(self, owner: str | None, *, everyone: bool, offset: int = 0) -> Row | None:
        """The newest pair not yet judged that ``owner`` may see (``everyone``: any pair;
        else the owner's and those with no owner), skipping ``offset`` of them."""

    @abstractmethod
    async def add_verdict(self, verdict: Mapping[str, Any]) -> str | None:
        """Record a verdict (``VERDICT_COLUMNS`` but ``pair_key``) and mark its pair (if
        ``pair_id``) judged at its ``ts``; return the replaced verdict's winner, as seen
        from this verdict's ``a``, or ``None``. One atomic step."""

    @abstractmethod
    async def verdict_tallies(self, route: str | None = None) -> list[Row]:
        """``model_a``, ``model_b``, ``winner``, ``count`` over the latest verdicts."""

    @abstractmethod
    async def pair_counts(self) -> list[Row]:
        """Per comparison: ``pairs`` kept and how many are ``judged``."""

    @abstractmethod
    async def prune_payloads(self, older_than: float) -> int:
        """Null ``prompt``/``answer`` of responses with ts < older_than; return rows changed
        (those that still had a payload)."""
