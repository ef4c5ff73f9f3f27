"""SummaryLog: a flood of events is one line per cause and interval, with counts."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from gateway.core.logs import (
    EventLog,
    JsonFormatter,
    JsonStreamHandler,
    SummaryLog,
    configure_logging,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Timers:
    """The schedule a SummaryLog is given: callbacks kept, run when the test says."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> None:
        self.pending.append((delay, callback))

    def fire(self) -> None:
        (_, callback), *self.pending = self.pending
        callback()


@pytest.fixture
def setup(
    caplog: pytest.LogCaptureFixture,
) -> tuple[SummaryLog, Clock, Timers, pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="test.summary")
    clock, timers = Clock(), Timers()
    log = SummaryLog(
        logging.getLogger("test.summary"),
        event="inbound_limit",
        noun="connections closed",
        interval=60,
        clock=clock,
        schedule=timers,
    )
    return log, clock, timers, caplog


def fields(record: logging.LogRecord) -> dict[str, object]:
    value = getattr(record, "fields", None)
    assert isinstance(value, dict)
    return value


def test_the_first_event_is_logged_with_its_details_the_rest_are_counted(
    setup: tuple[SummaryLog, Clock, Timers, pytest.LogCaptureFixture],
) -> None:
    log, clock, timers, caplog = setup
    for i in range(1234):
        log.record("header_timeout", f"closed 10.0.0.{i % 250}:{i}", peer=f"10.0.0.{i % 250}")
    assert len(caplog.records) == 1
    first = caplog.records[0]
    assert first.levelno == logging.WARNING
    assert first.getMessage().startswith("header_timeout: closed 10.0.0.0:0 (more are counted")
    assert fields(first) == {
        "event": "inbound_limit",
        "cause": "header_timeout",
        "count": 1,
        "peer": "10.0.0.0",
    }
    assert [delay for delay, _ in timers.pending] == [60]  # one timer, not one per event

    clock.now += 60
    timers.fire()
    summary = caplog.records[1]
    assert summary.getMessage() == "header_timeout: 1,233 more connections closed in the last 60 s"
    assert fields(summary) == {
        "event": "inbound_limit",
        "cause": "header_timeout",
        "count": 1233,
        "seconds": 60.0,
    }
    assert len(caplog.records) == 2


def test_causes_are_counted_apart_each_at_its_level(
    setup: tuple[SummaryLog, Clock, Timers, pytest.LogCaptureFixture],
) -> None:
    log, clock, timers, caplog = setup
    log.record("header_too_large", "a", peer="p1")
    log.record("idle_timeout", "b", level=logging.DEBUG)
    log.record("header_too_large", "c")
    log.record("idle_timeout", "d", level=logging.DEBUG)
    log.record("idle_timeout", "e", level=logging.DEBUG)
    assert [(r.levelname, fields(r)["cause"]) for r in caplog.records] == [
        ("WARNING", "header_too_large"),
        ("DEBUG", "idle_timeout"),
    ]
    assert len(timers.pending) == 1
    clock.now += 60
    timers.fire()
    assert [(r.levelname, r.getMessage()) for r in caplog.records[2:]] == [
        ("WARNING", "header_too_large: 1 more connections closed in the last 60 s"),
        ("DEBUG", "idle_timeout: 2 more connections closed in the last 60 s"),
    ]


def test_a_quiet_interval_ends_the_episode_and_the_next_event_is_logged_in_full(
    setup: tuple[SummaryLog, Clock, Timers, pytest.LogCaptureFixture],
) -> None:
    log, clock, timers, caplog = setup
    log.record("too_many_connections", "first", peer="a")
    log.record("too_many_connections", "second")
    clock.now += 60
    timers.fire()
    assert len(caplog.records) == 2 and len(timers.pending) == 1
    clock.now += 60
    timers.fire()  # a quiet interval: no line, the episode ends, no timer is left behind
    assert len(caplog.records) == 2 and timers.pending == []
    log.record("too_many_connections", "again", peer="b")
    assert len(caplog.records) == 3
    assert fields(caplog.records[2])["peer"] == "b"
    assert len(timers.pending) == 1


def test_a_summary_covers_the_time_since_the_last_line(
    setup: tuple[SummaryLog, Clock, Timers, pytest.LogCaptureFixture],
) -> None:
    log, clock, timers, caplog = setup
    log.record("header_timeout", "x")
    clock.now += 30
    log.record("too_many_headers", "y")  # opens mid-interval
    log.record("too_many_headers", "z")
    clock.now += 30
    timers.fire()
    assert caplog.records[-1].getMessage() == (
        "too_many_headers: 1 more connections closed in the last 30 s"
    )


def test_disabled_levels_write_nothing_but_still_count(
    setup: tuple[SummaryLog, Clock, Timers, pytest.LogCaptureFixture],
) -> None:
    log, clock, timers, caplog = setup
    caplog.set_level(logging.INFO, logger="test.summary")
    log.record("idle_timeout", "x", level=logging.DEBUG)
    log.record("idle_timeout", "y", level=logging.DEBUG)
    clock.now += 60
    timers.fire()
    assert caplog.records == []


# -- through logging: operators' handlers, filters and formats --------------------------


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def attempts_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("test.logs.attempts")
    saved = logger.handlers[:], logger.filters[:], logger.propagate, logger.level
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger
    finally:
        logger.handlers[:], logger.filters[:], logger.propagate, logger.level = saved


def test_attempt_lines_are_records_an_operators_handler_receives(
    attempts_logger: logging.Logger,
) -> None:
    captured = Captured()
    attempts_logger.addHandler(captured)
    events = EventLog(attempts_logger.name)
    events.emit(logging.INFO, "attempt", {"model": "m", "ok": True})
    [record] = captured.records
    assert record.getMessage() == "attempt"
    assert record.fields == {"model": "m", "ok": True}  # type: ignore[attr-defined]
    line = orjson.loads(JsonFormatter().format(record))
    assert line["model"] == "m" and line["message"] == "attempt"  # the default format


def test_a_filter_on_the_default_handler_sees_every_attempt(
    attempts_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    handler = JsonStreamHandler(stream)
    handler.addFilter(lambda record: record.fields["model"] != "hidden")  # type: ignore[attr-defined]
    attempts_logger.addHandler(handler)
    events = EventLog(attempts_logger.name)
    events.emit(logging.INFO, "attempt", {"model": "hidden"})
    events.emit(logging.INFO, "attempt", {"model": "shown"})
    events.flush()
    assert [orjson.loads(line)["model"] for line in stream.getvalue().splitlines()] == ["shown"]


def test_the_default_handler_alone_gets_batched_json_lines(
    attempts_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    attempts_logger.addHandler(JsonStreamHandler(stream))
    events = EventLog(attempts_logger.name)
    events.emit(logging.INFO, "attempt", {"model": "m"})
    events.flush()
    [line] = stream.getvalue().splitlines()
    assert orjson.loads(line)["model"] == "m"


def test_a_dict_config_file_replaces_the_default(tmp_path: Path) -> None:
    path = tmp_path / "logging.yaml"
    path.write_text(
        "version: 1\n"
        "disable_existing_loggers: false\n"
        "handlers:\n"
        "  file: {class: logging.FileHandler, filename: '" + str(tmp_path / "out.log") + "'}\n"
        "loggers:\n"
        "  test.logs.configured: {handlers: [file], level: INFO, propagate: false}\n"
    )
    configure_logging("info", config_file=str(path))
    logger = logging.getLogger("test.logs.configured")
    try:
        EventLog(logger.name).emit(logging.INFO, "attempt", {"model": "m"})
        for handler in logger.handlers:
            handler.flush()
        assert (tmp_path / "out.log").read_text().strip() == "attempt"
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers.clear()
