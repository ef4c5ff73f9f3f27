"""The keep-alive round (gateway/http/heartbeat.py), its rounds run by hand: which
streams get a comment, and what a writer that cannot take one does to the others."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Awaitable

import pytest

from gateway.http.heartbeat import COMMENT, NOT_WAITING, Heartbeats


class Writer:
    def __init__(self, fails: bool = False, full: bool = False) -> None:
        self.written: list[bytes] = []
        self.fails, self.full = fails, full
        self.drains: list[object] = []

    def __call__(self, data: bytes) -> Awaitable[None] | None:
        if self.fails:
            raise RuntimeError("write_body outside a chunked response's body")
        self.written.append(data)
        if self.full:
            drain = asyncio.sleep(0)
            self.drains.append(drain)
            return drain
        return None


async def test_only_the_streams_quiet_for_a_whole_round_get_a_comment() -> None:
    beats = Heartbeats(15)
    busy, quiet = Writer(), Writer()
    busy_beat, _ = beats.add(busy), beats.add(quiet)
    loop = asyncio.get_running_loop()
    beats._round(loop)  # both were just added: nothing yet
    assert busy.written == quiet.written == []
    assert busy_beat is not None
    busy_beat.wrote = True  # an event went out
    beats._round(loop)
    assert busy.written == [] and quiet.written == [COMMENT]
    beats._round(loop)
    assert busy.written == [COMMENT] and quiet.written == [COMMENT, COMMENT]


async def test_a_stream_over_or_full_does_not_stop_the_round() -> None:
    beats = Heartbeats(15)
    over, full, fine = Writer(fails=True), Writer(full=True), Writer()
    for writer in (over, full, fine):
        beats.add(writer)
    loop = asyncio.get_running_loop()
    beats._round(loop)
    beats._round(loop)
    assert fine.written == [COMMENT] and full.written == [COMMENT]
    # The full buffer's drain was closed (nobody awaits it), not left to warn.
    assert [getattr(drain, "cr_frame", "open") for drain in full.drains] == [None]


async def test_no_timer_runs_without_streams_and_none_with_comments_off() -> None:
    beats = Heartbeats(15)
    beat = beats.add(Writer())
    assert beats._timer is not None
    beats.discard(beat)
    beats._round(asyncio.get_running_loop())
    assert beats._timer is None
    assert Heartbeats(0).add(Writer()) is None


class BodyWriter:
    """A server's BodyWriter: a head goes out once, and only when the connection can
    take it (`ready`)."""

    def __init__(self, ready: bool = True) -> None:
        self.ready = ready
        self.heads: list[bytes] = []
        self.written: list[bytes] = []

    def start_body(self, lines: bytes) -> bool:
        if not self.ready or self.heads:
            return False
        self.heads.append(lines)
        return True

    def write_body(self, data: bytes) -> Awaitable[None] | None:
        if not self.heads:
            raise RuntimeError("write_body outside a chunked response's body")
        self.written.append(data)
        return None


async def test_an_answer_not_begun_gets_its_head_with_its_first_comment() -> None:
    beats = Heartbeats(15)
    writer = BodyWriter()
    loop = asyncio.get_running_loop()
    with beats.early(writer, lambda: b"x-request-id: r1\r\n") as early:
        assert not early.started
        beats._round(loop)  # just added: a whole round has not passed
        assert writer.heads == [] and not early.started
        beats._round(loop)
        assert writer.heads == [b"x-request-id: r1\r\n"] and writer.written == [COMMENT]
        assert early.started
        beats._round(loop)  # still not begun: comments only, the head went once
        assert len(writer.heads) == 1 and writer.written == [COMMENT, COMMENT]
    beats._round(loop)  # the wait is over: out of the round
    assert writer.written == [COMMENT, COMMENT]


async def test_a_head_the_connection_cannot_take_waits_for_a_later_round() -> None:
    beats = Heartbeats(15)
    writer = BodyWriter(ready=False)
    early = beats.early(writer, lambda: b"x-request-id: r2\r\n")
    loop = asyncio.get_running_loop()
    beats._round(loop)
    beats._round(loop)
    assert not early.started and writer.written == []
    writer.ready = True
    beats._round(loop)
    assert early.started and writer.written == [COMMENT]


async def test_no_early_head_without_a_writer_or_with_comments_off() -> None:
    for beats, writer in ((Heartbeats(15), None), (Heartbeats(0), BodyWriter())):
        with beats.early(writer, bytes) as early:
            assert early is NOT_WAITING and not early.started
        assert not beats._beats and beats._timer is None


async def test_an_early_head_is_freed_by_reference_counting_once_its_wait_ends() -> None:
    """The head and its beat once referred to each other (and to the request's job through
    its lines): a reference cycle per stream, freed only by a full collection."""
    beats = Heartbeats(15)

    def lines() -> bytes:
        return b"x-request-id: r3\r\n"

    made = weakref.ref(lines)
    waiting = beats.early(BodyWriter(), lines)
    del lines
    with waiting:
        pass
    gc.disable()
    try:
        del waiting
        assert made() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("rounds", [0, 2])
async def test_a_wait_that_ended_lets_its_head_go_and_still_says_if_it_went_out(
    rounds: int,
) -> None:
    """A handler holds its wait for the whole stream, to know whether the head is out:
    its head, its beat and the head's lines (the request's job) stayed as long."""
    beats = Heartbeats(15)
    loop = asyncio.get_running_loop()

    def lines() -> bytes:
        return b"x-request-id: r4\r\n"

    made = weakref.ref(lines)
    with beats.early(BodyWriter(), lines) as waiting:
        del lines
        for _ in range(rounds):  # two rounds: the head goes out
            beats._round(loop)
    gc.disable()
    try:
        assert made() is None  # while `waiting` is still held
        assert waiting.started is (rounds == 2)
    finally:
        gc.enable()
