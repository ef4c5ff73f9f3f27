"""A thin view of an ASGI request for the proxy's hot path, and a raw JSON reply.

Starlette's Request and Response are general and pleasant; on a path that runs for
every proxied request, a header dict built once and two `send` calls are cheaper
(profiles showed header lookups and response setup among the top costs). The reply's
headers go as lines rendered once (gateway.core.headers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from gateway.core.headers import RenderedHeaders

__all__ = ["Inbound", "send_json"]

_JSON_HEAD = b"content-type: application/json\r\ncontent-length: %d\r\n%s"


class Inbound:
    __slots__ = ("headers", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

    async def stream(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                return

    async def form(self, *, max_part_size: int) -> FormData:
        return await Request(self.scope, self.receive).form(max_part_size=max_part_size)


async def send_json(send: Send, status: int, body: bytes, lines: bytes) -> None:
    """A JSON answer with the header lines `lines` besides its own (gateway.core.headers)."""
    head = _JSON_HEAD % (len(body), lines)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": RenderedHeaders(head, len(body)),
        }
    )
    await send({"type": "http.response.body", "body": body})
