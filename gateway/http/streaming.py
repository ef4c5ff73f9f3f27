"""A streamed response that stops when the client leaves, without a task group each.

Under uvicorn (ASGI spec 2.3) Starlette's StreamingResponse runs every stream in an anyio
task group, beside a second task that waits for the client's disconnect. Under streaming
load that machinery cost a fifth of what one worker could serve (2,701 -> 3,278 streamed
chats/s without it, one worker, 49 connections). Here one future waits for the
disconnect and, if it comes before the end, cancels the streaming task: the body's
generator sees the cancellation at its await, and its `finally` closes the upstream at
once, as before, rather than at the next chunk.
"""

from __future__ import annotations

import asyncio

from starlette import responses
from starlette.types import Message, Receive, Scope, Send

__all__ = ["StreamingResponse"]


class StreamingResponse(responses.StreamingResponse):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        ended = gone = False

        def heard(message: asyncio.Future[Message]) -> None:
            nonlocal gone
            if ended or message.cancelled() or message.exception() is not None:
                return
            if message.result()["type"] == "http.disconnect":
                gone = True
                task.cancel()

        listener = asyncio.ensure_future(receive())
        listener.add_done_callback(heard)
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not gone:
                raise  # cancelled from elsewhere (shutdown): not ours to swallow
            task.uncancel()  # the client left; there is no one to answer
            return
        finally:
            ended = True
            listener.cancel()
        if self.background is not None:
            await self.background()
