"""The recording chain: an outcome reaches the tracker, the blacklist, the evaluator and the
writer once, in that order; what routing learns from a failure that benches a model."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from gateway.core.config import parse_config
from gateway.core.logs import EventLog, JsonFormatter
from gateway.routing.blacklist import Blacklist
from gateway.routing.catalog import Catalog
from gateway.routing.dispatch import Outcome, ReplyJob, Timings
from gateway.routing.evaluation import Evaluator
from gateway.routing.feedback import ResponseIndex
from gateway.routing.recorder import Recorder
from gateway.routing.tracker import Tracker
from gateway.storage import SQLiteStore
from gateway.storage.writer import StoreWriter
from providers.base import Endpoint, Usage
from providers.errors import BadRequest, ProviderError, UpstreamServerError

TT = "text-to-text"
T0 = 1_700_000_000.0
CONFIG = parse_config(
    {
        "providers": [{"name": "p", "type": "mock"}],
        "models": [
            {"name": "m", "provider": "p", "pricing": {"input_per_million": 1}},
            {"name": "n", "provider": "p"},
        ],
        "routes": [{"name": "auto", "models": ["m", "n"]}],
        "selection": {"blacklist_threshold": 2},
    }
)
CATALOG = Catalog(CONFIG, {})


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Chain:
    def __init__(self) -> None:
        self.clock = Clock()
        self.tracker = Tracker(clock=self.clock)
        self.blacklist = Blacklist(threshold=2, clock=self.clock)
        self.writer = StoreWriter(SQLiteStore(":memory:"))
        self.index = ResponseIndex()
        self.evaluator = Evaluator(self.tracker, self.index, self.writer)
        self.lines = io.StringIO()
        self.recorder = Recorder(
            self.tracker, self.blacklist, self.evaluator, self.writer, self.events()
        )

    def events(self) -> EventLog:
        return EventLog("test.attempts")

    def outcome(
        self,
        model: str = "m",
        error: ProviderError | None = None,
        *,
        answered: bool = True,
        number: int = 1,
    ) -> Outcome:
        job = ReplyJob("req-1", Endpoint.CHAT, CATALOG.resolve("auto", TT), {"model": "auto"})
        body = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}
        return Outcome(
            job, CATALOG.models[model], number, error, Timings(20.0, 20.0),
            Usage(1000, 10) if error is None else None, 0.001 if error is None else 0.0,
            self.clock(), answered=answered and error is None, body=body,
        )  # fmt: skip


@pytest.fixture
def chain() -> Iterator[Chain]:
    chain = Chain()
    handler = logging.StreamHandler(chain.lines)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.attempts")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield chain
    finally:
        logger.removeHandler(handler)


def logged(chain: Chain) -> list[dict[str, Any]]:
    chain.recorder.events.flush()
    return [orjson.loads(line) for line in chain.lines.getvalue().splitlines()]


def test_an_answer_reaches_every_link_once(chain: Chain) -> None:
    outcome = chain.outcome()
    chain.recorder.record(outcome)
    stats = chain.tracker.stats("m", TT)
    assert stats is not None and (stats.requests, stats.successes) == (1, 1)
    assert stats.cost == pytest.approx(0.001)
    record = chain.index.get(outcome.job.response_id)
    assert record is not None and record.model == "m" and record.latency_ms == 20.0
    assert len(chain.evaluator._pending) == 1  # judged later, off the request path
    [queued] = chain.writer._pending
    assert queued.ok and queued.response_id == outcome.job.response_id
    [line] = logged(chain)
    assert (line["message"], line["model"], line["ok"], line["client_gone"]) == (
        "attempt",
        "m",
        True,
        False,
    )


def test_a_failed_attempt_is_counted_stored_and_logged_but_not_judged(chain: Chain) -> None:
    chain.recorder.record(chain.outcome(error=UpstreamServerError("boom", status=500)))
    stats = chain.tracker.stats("m", TT)
    assert stats is not None and stats.failures == 1
    assert chain.blacklist.consecutive_failures("m") == 1
    assert chain.evaluator._pending == [] and chain.index.recent() == []
    [queued] = chain.writer._pending
    assert (queued.ok, queued.error_class, queued.counts_as_failure) == (
        False,
        "server_error",
        True,
    )
    [line] = logged(chain)
    assert line["level"] == "warning" and line["error_class"] == "server_error"


def test_a_client_error_is_not_the_models_fault(chain: Chain) -> None:
    for _ in range(3):
        chain.recorder.record(chain.outcome(error=BadRequest("bad", status=400)))
    assert chain.blacklist.consecutive_failures("m") == 0
    assert not chain.blacklist.is_blacklisted("m")
    assert chain.tracker.stats("m", TT).client_errors == 3  # type: ignore[union-attr]


def test_a_model_benched_by_failures_comes_back_with_a_clean_record(chain: Chain) -> None:
    for _ in range(2):
        chain.recorder.record(chain.outcome(error=UpstreamServerError("boom", status=500)))
    assert chain.blacklist.is_blacklisted("m")
    stats = chain.tracker.stats("m", TT)
    assert stats is not None and stats.failures == 2
    # The failures that benched it must not keep it from being tried once it is back.
    assert stats.recent_success_rate is None
    chain.clock.now += chain.blacklist.base_seconds
    assert not chain.blacklist.is_blacklisted("m")
    assert stats.recent_success_rate is None


def test_a_success_ends_the_failure_streak(chain: Chain) -> None:
    chain.recorder.record(chain.outcome(error=UpstreamServerError("boom", status=500)))
    chain.clock.now += 1
    chain.recorder.record(chain.outcome())
    assert chain.blacklist.consecutive_failures("m") == 0


async def test_letting_a_model_back_clears_its_bench_and_recent_record(chain: Chain) -> None:
    for _ in range(2):
        chain.recorder.record(chain.outcome(error=UpstreamServerError("boom", status=500)))
    version = chain.tracker.version
    assert await chain.recorder.let_back("m") is True
    assert not chain.blacklist.is_blacklisted("m")
    assert chain.tracker.version > version  # rankings refresh
    assert await chain.recorder.let_back("m") is False


class Benches:
    """Counts the prompt bench writes asked for; fails them when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.saves = 0
        self.fail = fail

    async def save_benches(self) -> None:
        self.saves += 1
        if self.fail:
            raise OSError("store down")


def with_benches(chain: Chain, benches: Benches) -> Recorder:
    return Recorder(
        chain.tracker, chain.blacklist, chain.evaluator, chain.writer, chain.events(), benches
    )


async def test_the_failure_that_benches_a_model_hands_back_the_write_of_the_bench(
    chain: Chain,
) -> None:
    benches = Benches()
    recorder = with_benches(chain, benches)
    failure = UpstreamServerError("boom", status=500)
    assert recorder.record(chain.outcome(error=failure)) is None  # a streak, not a bench
    stored = recorder.record(chain.outcome(error=failure))
    assert stored is not None and chain.blacklist.is_blacklisted("m")
    await stored
    assert benches.saves == 1
    assert recorder.record(chain.outcome(error=failure)) is None  # already benched
    assert recorder.record(chain.outcome(model="n")) is None


async def test_a_bench_that_cannot_be_stored_at_once_is_left_to_the_fleet_rounds(
    chain: Chain, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = with_benches(chain, Benches(fail=True))
    failure = UpstreamServerError("boom", status=500)
    recorder.record(chain.outcome(error=failure))
    stored = recorder.record(chain.outcome(error=failure))
    assert stored is not None
    await stored  # does not raise: the request is answered all the same
    assert "could not be stored at once" in caplog.text
    assert chain.blacklist.unshared()  # still to be shared


async def test_a_let_back_is_answered_once_stored_and_says_so_when_it_cannot_be(
    chain: Chain,
) -> None:
    benches = Benches()
    recorder = with_benches(chain, benches)
    assert await recorder.let_back("m") is False
    assert benches.saves == 1
    benches.fail = True
    with pytest.raises(OSError):
        await recorder.let_back("m")
    assert not chain.blacklist.is_blacklisted("m")  # back here all the same
