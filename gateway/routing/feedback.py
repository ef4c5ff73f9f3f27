"""Human ratings of answers, by the response id the gateway returned.

Used by `POST /v1/feedback` and by the dashboard's form alike. A rating is stored
durably before the caller hears 2xx; a second rating of the same answer replaces
the first in the aggregates while both stay in history. Ratings can arrive before
the store has the answer they rate, so the latest answers also wait in memory
(`ResponseIndex`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from gateway.core.errors import InvalidFeedback, NotFound, StoreUnavailable
from gateway.core.keys import Tenant
from gateway.core.types import ResponseRecord
from gateway.routing.experiments import Experiments
from gateway.routing.tracker import FEEDBACK_DIMENSIONS, Tracker
from gateway.storage import Store

if TYPE_CHECKING:  # numpy is loaded only when a route routes per prompt
    from gateway.routing.prompt_router import PromptRouter

__all__ = [
    "MAX_FEEDBACK_BYTES",
    "FeedbackService",
    "ResponseIndex",
    "parse_feedback",
    "unknown_response",
]

log = logging.getLogger("gatewise.feedback")

_FIELDS = frozenset({"response_id", "comment", *FEEDBACK_DIMENSIONS})
_MAX_COMMENT = 4000
# A rating's body: a 4,000-character comment escaped as \uXXXX is 24,000 bytes, and the
# rest is a few short fields. Anything larger is not a rating, and is not read.
MAX_FEEDBACK_BYTES = 64 * 1024


def parse_feedback(payload: Any) -> tuple[str, dict[str, int], str | None]:
    """Validate a feedback body; 422 with a message that names the problem."""
    if not isinstance(payload, dict):
        raise _invalid("The feedback body must be a JSON object.")
    unknown = sorted(set(payload) - _FIELDS)
    if unknown:
        raise _invalid(
            f"Unknown field(s): {', '.join(unknown)}. Allowed: response_id, comment, "
            f"{', '.join(FEEDBACK_DIMENSIONS)}.",
            param=unknown[0],
        )
    response_id = payload.get("response_id")
    if not isinstance(response_id, str) or not response_id.strip():
        raise _invalid(
            "'response_id' is required: the id of the answer you are rating.", param="response_id"
        )
    scores: dict[str, int] = {}
    for dimension in FEEDBACK_DIMENSIONS:
        value = payload.get(dimension)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise _invalid(f"'{dimension}' must be a whole number from 1 to 5.", param=dimension)
        if not 1 <= value <= 5:
            raise _invalid(f"'{dimension}' must be between 1 and 5, got {value}.", param=dimension)
        scores[dimension] = int(value)
    if not scores:
        raise _invalid(f"Give at least one rating: {', '.join(FEEDBACK_DIMENSIONS)} (1-5).")
    comment = payload.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise _invalid("'comment' must be a string.", param="comment")
    if comment is not None and len(comment) > _MAX_COMMENT:
        raise _invalid(f"'comment' is longer than {_MAX_COMMENT} characters.", param="comment")
    return response_id.strip(), scores, comment or None


def unknown_response(response_id: str) -> NotFound:
    return NotFound(
        f"No answer with response id '{response_id}' is known.",
        param="response_id",
        code="response_not_found",
    )


def _invalid(message: str, param: str | None = None) -> InvalidFeedback:
    return InvalidFeedback(message, param=param)


class ResponseIndex:
    """The latest `size` records by response id.

    The ids also wait in a deque, oldest first: finding a dict's oldest key with
    next(iter(d)) walks over every slot deleted before it, ~6 µs per answer once full.
    """

    def __init__(self, size: int = 20_000) -> None:
        self._records: dict[str, ResponseRecord] = {}  # insertion order = age
        self._order: deque[str] = deque()
        self._size = size

    def add(self, record: ResponseRecord) -> None:
        records = self._records
        rid = record.response_id
        if rid not in records:
            self._order.append(rid)
        records[rid] = record
        if len(records) > self._size:
            del records[self._order.popleft()]  # the oldest

    def get(self, response_id: str) -> ResponseRecord | None:
        return self._records.get(response_id)

    def recent(self, limit: int = 20) -> list[ResponseRecord]:
        out: list[ResponseRecord] = []
        for record in reversed(self._records.values()):
            out.append(record)
            if len(out) >= limit:
                break
        return out


class FeedbackService:
    """Looks a rated answer up in this process's index, then in the store.

    `settle()` > 0 when other processes serve the same clients (workers, replicas): an
    answer one of them gave reaches the store within its writer's flush interval, so a
    rating that arrives here first waits up to that many seconds for it, not a 404.
    """

    STEP = 0.1  # seconds between looks while settling
    MAX_SETTLING = 32  # lookups waiting at once; past that, an unknown id is a 404 at once
    RETRY_AFTER = 5.0  # seconds a caller is told to wait while the store is down

    def __init__(
        self,
        index: ResponseIndex,
        store: Store,
        tracker: Tracker,
        clock: Callable[[], float] = time.time,
        settle: Callable[[], float] = lambda: 0.0,
        pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
        experiments: Experiments | None = None,
        prompts: PromptRouter | None = None,
    ) -> None:
        self.index = index
        self.experiments = experiments
        self.prompts = prompts  # per-prompt learners: a rating teaches them too
        self.store = store
        self.tracker = tracker
        self.clock = clock
        self.settle = settle
        self.pause = pause
        # The store decides which earlier rating a new one replaces; the tracker must
        # apply ratings in that same order, or a re-rating applied before the rating it
        # replaces is counted twice. Feedback is not the hot path: one at a time.
        self._ordered = asyncio.Lock()
        self._settling = 0

    async def lookup(self, response_id: str, caller: Tenant | None = None) -> ResponseRecord | None:
        """The answer by its id, if `caller` may see it (None: anyone may; an answer with
        no owner was given while the gateway was open, and is anyone's)."""
        record = self.index.get(response_id)
        if record is None:
            async with self._store_needed():
                record = await self._stored(response_id)
        if record is None or not (caller is None or record.owner in (None, caller.name)):
            return None
        return record

    async def _stored(self, response_id: str) -> ResponseRecord | None:
        row = await self.store.get_response(response_id)
        settle = self.settle()
        if row is None and settle > 0 and self._settling < self.MAX_SETTLING:
            # Bounded: ratings of ids nobody gave (a client's mistake, or a hostile one)
            # must not each hold a request and poll the store for long.
            self._settling += 1
            try:
                waited = 0.0
                while row is None and waited < settle:
                    await self.pause(self.STEP)
                    waited += self.STEP
                    row = await self.store.get_response(response_id)
            finally:
                self._settling -= 1
        if row is None:
            return None
        return ResponseRecord(
            row["response_id"],
            row["request_id"],
            row["model"],
            row["provider"],
            row["conversation_type"],
            row.get("route"),
            row.get("optimization"),
            row["ts"],
            row.get("latency_ms") or 0.0,
            list(row.get("flags") or []),
            row.get("auto_score"),
            row.get("prompt"),
            row.get("answer"),
            owner=row.get("owner"),
            stored=True,
            experiment=row.get("experiment"),
            arm=row.get("arm"),
            cost=row.get("cost"),
        )

    def store_needed(self) -> AbstractAsyncContextManager[None]:
        """A block that needs the store: its outage becomes a 503 with Retry-After
        (for pairwise verdicts as for ratings)."""
        return self._store_needed()

    @asynccontextmanager
    async def _store_needed(self) -> AsyncIterator[None]:
        """A store that is down makes this a 503 with Retry-After, never a traceback: the
        rating is not acknowledged, and the caller can send it again."""
        try:
            yield
        except self.store.OUTAGES as exc:
            log.warning(
                "a rating could not be stored", extra={"fields": {"error": type(exc).__name__}}
            )
            raise StoreUnavailable(
                "Ratings cannot be stored right now; send it again later.",
                retry_after=self.RETRY_AFTER,
            ) from None

    async def submit(self, payload: Any, caller: Tenant | None = None) -> dict[str, Any]:
        """Rate an answer. `caller` is the client key's holder (None: the gateway is open,
        or the admin acts): a key may rate only the answers it received, and any other
        answer is, to it, the same unknown id as one that never existed."""
        response_id, scores, comment = parse_feedback(payload)
        record = await self.lookup(response_id, caller)
        if record is None:
            raise unknown_response(response_id)
        async with self._store_needed():
            return await self._rate(record, response_id, scores, comment)

    async def _rate(
        self, record: ResponseRecord, response_id: str, scores: dict[str, int], comment: str | None
    ) -> dict[str, Any]:
        if not record.stored:
            await self.store.write_responses([record.to_row()])
            record.stored = True
        async with self._ordered:
            previous = await self.store.add_feedback(
                response_id,
                scores,
                comment,
                self.clock(),
                record.model,
                record.provider,
                record.conversation_type,
            )
            self.tracker.add_feedback(
                record.model, record.conversation_type, scores, previous, key=record.owner or ""
            )
            if record.experiment is not None and self.experiments is not None:
                self.experiments.rated(record, scores, previous)
            if self.prompts is not None:
                self.prompts.rate(
                    response_id,
                    record.model,
                    scores,
                    key=record.owner or "",
                    stored=(record.route, record.prompt),
                )
        return {
            "object": "feedback",
            "response_id": response_id,
            "model": record.model,
            "provider": record.provider,
            "conversation_type": record.conversation_type,
            "scores": scores,
            "comment": comment,
            "replaced_previous": previous is not None,
        }
