"""Keep-alive comments on streams whose upstream has gone quiet.

An answer's upstream can be silent for minutes mid-stream: a model thinking (Anthropic's
thinking deltas have no OpenAI chunk, so an OpenAI client hears nothing of them), a tool
call being prepared, an upstream's own keep-alive comments (which the gateway parses
away). Load balancers and proxies between a client and the gateway close a connection
idle for 60 s (AWS ALB's and nginx's defaults), and the client sees its stream break.
So every `interval` seconds, each stream that wrote nothing since the round before gets
an SSE comment (`: keep-alive`), which every SSE client skips: a stream silent for
longer than 2 x `interval` never goes more than that without a byte.

One timer per worker while streams are open, not one per stream: a forwarded event costs
a flag set. Only streams the server writes directly (a `BodyWriter`) get comments.

The same silence comes before a stream's first event: a reasoning model can think for
minutes before it, and the dispatcher may fail over meanwhile. The head is held until
that event so that a failure can still be an error status and the head can name the
model that answered; past a whole silent round (`EarlyHead`) the connection matters
more, and the head goes out, then comments.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.http.streaming import BodyWriter

__all__ = [
    "COMMENT", "NOT_WAITING", "NO_HEARTBEATS", "Beat", "EarlyHead", "Heartbeats", "Waiting",
]  # fmt: skip

COMMENT = b": keep-alive\n\n"


class Beat:
    """One open stream: `wrote` is set by each of its writes, cleared by each round."""

    __slots__ = ("write", "wrote")

    def __init__(self, write: Callable[[bytes], Awaitable[None] | None]) -> None:
        self.write = write
        self.wrote = True


class EarlyHead:
    """A stream whose answer has not begun, kept in the round like a stream that wrote
    nothing: at its turn its head goes out with a comment (`started`), without the
    lines that name the model (not known yet). From then on the answer is the body's,
    and so is a failure: an error event, not an error status."""

    __slots__ = ("_lines", "_writer", "started")

    def __init__(self, writer: BodyWriter, lines: Callable[[], bytes]) -> None:
        self._writer = writer
        self._lines = lines  # the head's lines, content-type among them: made if it goes
        self.started = False

    def write(self, data: bytes) -> Awaitable[None] | None:
        if not self.started:
            if not self._writer.start_body(self._lines()):
                return None  # not now (the connection cannot take it): the next round
            self.started = True
        return self._writer.write_body(data)


class Waiting:
    """A handler's wait for its stream's first event (`Heartbeats.early`), as a context:
    its head in the round until the wait ends, and whether the head went out (`started`).
    Apart from the head, which its beat refers to: the head holding its beat would be a
    reference cycle a stream, freed only by a full collection."""

    __slots__ = ("_beat", "_beats", "_head", "_started")

    def __init__(self, beats: Heartbeats, head: EarlyHead | None, beat: Beat | None) -> None:
        self._beats = beats
        self._head = head
        self._beat = beat
        self._started = False

    @property
    def started(self) -> bool:
        head = self._head
        return self._started if head is None else head.started

    def __enter__(self) -> Waiting:
        return self

    def __exit__(self, *exc: object) -> None:
        # The handler keeps this for the whole stream, to know whether the head is out:
        # the head, its beat and what they hold go now (fewer objects a stream for the
        # young collections to walk).
        self._beats.discard(self._beat)
        self._started = self.started
        self._head = self._beat = None


class Heartbeats:
    """The open streams of one worker, and the round that keeps the quiet ones alive."""

    def __init__(self, interval: float) -> None:
        self.interval = interval  # 0: no comments
        self._beats: set[Beat] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, write: Callable[[bytes], Awaitable[None] | None]) -> Beat | None:
        """Keep a stream alive through `write` (its BodyWriter's) until `discard`; None
        when comments are off."""
        if not self.interval:
            return None
        beat = Beat(write)
        self._beats.add(beat)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.interval, self._round, loop)
        return beat

    def early(self, writer: BodyWriter | None, lines: Callable[[], bytes]) -> Waiting:
        """Keep a stream whose answer has not begun alive through `writer`, its head of
        `lines()` going out at its first comment, while the handler waits in `with`;
        nothing happens when comments are off or the server offers no writer."""
        if writer is None or not self.interval:
            return NOT_WAITING
        head = EarlyHead(writer, lines)
        return Waiting(self, head, self.add(head.write))

    def discard(self, beat: Beat | None) -> None:
        if beat is not None:
            self._beats.discard(beat)

    def _round(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        for beat in list(self._beats):
            if beat.wrote:
                beat.wrote = False
                continue
            try:
                wait = beat.write(COMMENT)
            except RuntimeError:  # its response is over: it is being discarded
                continue
            close = getattr(wait, "close", None)
            if close is not None:  # a full buffer's drain: nobody awaits it here
                close()
        if self._beats:
            self._timer = loop.call_later(self.interval, self._round, loop)


NO_HEARTBEATS = Heartbeats(0)  # streams kept alive by nothing (comments off)
NOT_WAITING = Waiting(NO_HEARTBEATS, None, None)  # an early head that never goes out
