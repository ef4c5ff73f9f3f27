"""One JSON object per log line, so operators can grep and ship logs without parsing prose.

Everything goes through `logging`: the default is one JSON line per record on stderr
(`configure_logging`); `GATEWISE_LOG_CONFIG` names a `logging.config.dictConfig` file
(YAML or JSON) that replaces it, so operators can redirect, filter and format as they
like. A record's structured fields are its `fields` attribute (a dict).
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson

__all__ = [
    "LOG_CONFIG_ENV",
    "EventLog",
    "JsonFormatter",
    "JsonStreamHandler",
    "SummaryLog",
    "configure_logging",
]

LOG_CONFIG_ENV = "GATEWISE_LOG_CONFIG"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class JsonStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The default handler: JSON lines on a stream. `EventLog` writes its lines to this
    handler's stream itself, in batches, as long as no filter asks to see the records."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self.setFormatter(JsonFormatter())


def configure_logging(
    level: str = "info", stream: TextIO | None = None, config_file: str | None = None
) -> None:
    """JSON lines at `level` and above for the "gatewise" loggers, to `stream` (standard
    error by default); or, with a dictConfig file (`config_file`, else
    `GATEWISE_LOG_CONFIG`), whatever that file says."""
    config_file = config_file or os.environ.get(LOG_CONFIG_ENV) or None
    if config_file is not None:
        import yaml  # JSON is YAML too

        with open(config_file, encoding="utf-8") as f:
            logging.config.dictConfig(yaml.safe_load(f))
        return
    root = logging.getLogger("gatewise")
    root.handlers[:] = [JsonStreamHandler(stream)]
    root.setLevel(level.upper())
    root.propagate = False


class EventLog:
    """Structured lines for events that happen on every request (attempts).

    With the default handler (`JsonStreamHandler`, no filters): the same JSON shape as
    JsonFormatter, but without a LogRecord, a formatter pass and a write syscall per
    line: an INFO line per attempt through `logging` cost ~40 us of a ~80 us request.
    Lines are buffered and written together within `delay` seconds (or at `batch`
    lines), and on `flush()` at shutdown. With any other handler or a filter (an
    operator's `GATEWISE_LOG_CONFIG`), every line is a `logging` record, its fields in
    `record.fields`. Levels come from the `logging` configuration either way.
    """

    def __init__(self, name: str, delay: float = 0.2, batch: int = 256) -> None:
        self.logger = logging.getLogger(name)
        self.delay = delay
        self.batch = batch
        self._lines: list[bytes] = []
        self._scheduled = False
        self._second = -1
        self._stamp = ""

    def enabled(self, level: int) -> bool:
        return self.logger.isEnabledFor(level)

    def emit(self, level: int, message: str, fields: dict[str, Any]) -> None:
        stream = self._stream()
        if stream is None:
            self.logger.log(level, message, extra={"fields": fields})
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        entry = {
            "time": f"{self._stamp}.{int((now - second) * 1000):03d}Z",
            "level": logging.getLevelName(level).lower(),
            "logger": self.logger.name,
            "message": message,
            **fields,
        }
        self._lines.append(orjson.dumps(entry, default=str))
        if level >= logging.WARNING or len(self._lines) >= self.batch:  # failures show at once
            self.flush()
        elif not self._scheduled:
            try:
                asyncio.get_running_loop().call_later(self.delay, self.flush)
                self._scheduled = True
            except RuntimeError:  # no loop: write at once
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        stream = self._stream()
        if stream is None:
            return
        data = b"\n".join(lines) + b"\n"
        buffer = getattr(stream, "buffer", None)
        try:
            if buffer is not None:
                stream.flush()
                buffer.write(data)
                buffer.flush()
            else:
                stream.write(data.decode())
                stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not break requests

    def _stream(self) -> Any:
        """The default handler's stream when it is the only one that would see the
        record and nothing filters it; else None (records go through `logging`)."""
        logger: logging.Logger | None = self.logger
        found = None
        while logger is not None:
            if logger.filters:
                return None
            for handler in logger.handlers:
                if (
                    type(handler) is not JsonStreamHandler
                    or handler.filters
                    or handler.level > logging.NOTSET
                    or found
                ):
                    return None
                found = handler.stream
            logger = logger.parent if logger.propagate else None
        return found


Schedule = Callable[[float, Callable[[], None]], object]


def _call_later(delay: float, callback: Callable[[], None]) -> object:
    return asyncio.get_running_loop().call_later(delay, callback)


class _Episode:
    __slots__ = ("count", "level", "since")

    def __init__(self, level: int, since: float) -> None:
        self.level = level
        self.since = since
        self.count = 0  # since the last line


class SummaryLog:
    """Events that can come by the thousand a second (an attack tripping a limit), logged
    once per cause with counts instead of once each.

    The first event of a cause is logged at once, with its details (the peer); the ones
    after it are counted, and every `interval` seconds one line per cause says how many
    more there were. A cause with none in a whole interval goes quiet: its next event is
    logged in full again. `clock` and `schedule` (the running loop's `call_later` by
    default) are injectable, so tests need no sleeps.
    """

    def __init__(
        self,
        logger: logging.Logger,
        event: str,
        noun: str,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        schedule: Schedule = _call_later,
    ) -> None:
        self.logger = logger
        self.event = event  # the "event" field of every line
        self.noun = noun  # what is counted, for the summary: "connections closed"
        self.interval = interval
        self.clock = clock
        self.schedule = schedule
        self._episodes: dict[str, _Episode] = {}
        self._scheduled = False
        self.totals: dict[str, int] = {}  # every event since start, by cause (for /metrics)

    def record(
        self, cause: str, message: str, level: int = logging.WARNING, **fields: object
    ) -> None:
        self.totals[cause] = self.totals.get(cause, 0) + 1
        episode = self._episodes.get(cause)
        if episode is not None:
            episode.count += 1
            return
        self._episodes[cause] = _Episode(level, self.clock())
        if self.logger.isEnabledFor(level):
            every = f"{self.interval:g}"
            self.logger.log(
                level,
                f"{cause}: {message} (more are counted and summed up every {every} s)",
                extra={"fields": {"event": self.event, "cause": cause, "count": 1, **fields}},
            )
        if not self._scheduled:
            self._scheduled = True
            self.schedule(self.interval, self.report)

    def report(self) -> None:
        """One line per cause that had events since its last line; quiet causes end."""
        self._scheduled = False
        now = self.clock()
        for cause, episode in list(self._episodes.items()):
            if episode.count == 0:
                del self._episodes[cause]
                continue
            seconds = now - episode.since
            if self.logger.isEnabledFor(episode.level):
                self.logger.log(
                    episode.level,
                    f"{cause}: {episode.count:,} more {self.noun} in the last {seconds:.0f} s",
                    extra={
                        "fields": {
                            "event": self.event,
                            "cause": cause,
                            "count": episode.count,
                            "seconds": round(seconds, 3),
                        }
                    },
                )
            episode.count = 0
            episode.since = now
        if self._episodes:
            self._scheduled = True
            self.schedule(self.interval, self.report)
