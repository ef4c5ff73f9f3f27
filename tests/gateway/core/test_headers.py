"""Header lines rendered once: they read back as the pairs they came from, refuse what
would split a response head, and any ASGI server reads them as ordinary headers."""

from __future__ import annotations

import httpx
import pytest

from gateway.core.headers import RenderedHeaders, header_pairs, header_strings, render_headers

PAIRS = [
    (b"x-request-id", b"req_1"),
    (b"x-gatewise-model", b"gpt-4o \xc3\xbc"),  # a UTF-8 name is a valid value
    (b"x-ratelimit-reset-requests", b"6m0s"),
    (b"x-empty", b""),
]


def test_lines_read_back_as_the_pairs_in_their_order() -> None:
    lines = render_headers(PAIRS)
    assert lines == (
        b"x-request-id: req_1\r\nx-gatewise-model: gpt-4o \xc3\xbc\r\n"
        b"x-ratelimit-reset-requests: 6m0s\r\nx-empty: \r\n"
    )
    assert header_pairs(lines) == PAIRS
    assert header_strings(lines)["x-gatewise-model"] == "gpt-4o Ã¼"  # latin-1, as ASGI
    assert header_pairs(b"") == []


@pytest.mark.parametrize(
    "pair",
    [
        (b"x-id", b"a\r\nset-cookie: stolen=1"),
        (b"x-id", b"a\nb"),
        (b"x-id", b"\x00"),
        (b"x-id", b"\x7f"),
        (b"x-i d", b"a"),
        (b"x-id:", b"a"),
        (b"x-\r\nid", b"a"),
    ],
)
def test_what_could_split_a_head_is_refused(pair: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="cannot be sent"):
        render_headers([pair])


async def test_another_asgi_server_reads_them_as_ordinary_headers() -> None:
    body = b'{"ok":true}'

    async def app(scope: object, receive: object, send: object) -> None:
        lines = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        headers = RenderedHeaders(lines + render_headers(PAIRS), len(body))
        await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": body})  # type: ignore[operator]

    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.get("/")
    assert response.json() == {"ok": True}
    assert response.headers["x-request-id"] == "req_1"
    assert response.headers["x-ratelimit-reset-requests"] == "6m0s"
    assert response.headers["content-length"] == str(len(body))
