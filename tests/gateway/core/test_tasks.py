"""Stopping a background task."""

from __future__ import annotations

import asyncio

from gateway.core.tasks import cancel


async def test_cancel_stops_a_running_task_and_absorbs_its_cancellation() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(forever())
    await started.wait()
    await cancel(task)
    assert task.cancelled()


async def test_cancel_of_no_task_or_a_finished_one_does_nothing() -> None:
    await cancel(None)

    async def done() -> int:
        return 1

    task = asyncio.create_task(done())
    await task
    await cancel(task)
    assert task.result() == 1
