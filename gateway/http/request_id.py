"""`x-request-id` on every answer, set in one place for the answers the proxy's own
handlers do not write (health checks, /v1/models, the admin app, 401s, 404s, 500s)."""

from __future__ import annotations

from starlette.types import Message, Scope, Send

from gateway.core.ids import request_id_from

__all__ = ["request_id_of", "stamped"]

_HEADER = b"x-request-id"


def request_id_of(scope: Scope) -> str:
    """The client's own request id when it is safe to echo, else a new one."""
    for name, value in scope["headers"]:
        if name == _HEADER:
            return request_id_from(value.decode("latin-1"))
    return request_id_from(None)


def stamped(scope: Scope, send: Send) -> Send:
    """`send`, adding `x-request-id` to the response head unless the answer set its own
    (the proxy's handlers do, with the id they logged and recorded)."""
    request_id = request_id_of(scope).encode()

    async def send_stamped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if all(name.lower() != _HEADER for name, _ in headers):
                headers.append((_HEADER, request_id))
                message = {**message, "headers": headers}
        await send(message)

    return send_stamped
