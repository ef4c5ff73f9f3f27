"""The keep-alive round (gateway/http/heartbeat.py), its rounds run by hand: which
streams get a comment, and what a writer that cannot take one does to the others."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from gateway.http.heartbeat import COMMENT, Heartbeats


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
