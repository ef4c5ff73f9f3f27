"""providers/http1/request.py: URL parsing and request-head serialisation, without a network."""

from __future__ import annotations

import pytest

from providers.http1.request import HeadWriter, parse_url


@pytest.mark.parametrize(
    ("url", "tls", "host", "port", "path", "host_header"),
    [
        ("http://h.test/v1/chat", False, "h.test", 80, "/v1/chat", "h.test"),
        ("https://h.test", True, "h.test", 443, "/", "h.test"),
        ("https://h.test:8443/a?b=1#frag", True, "h.test", 8443, "/a?b=1", "h.test:8443"),
        ("HTTP://[::1]:8080/x", False, "::1", 8080, "/x", "[::1]:8080"),
        ("http://bücher.test/ä", False, "xn--bcher-kva.test", 80, "/%C3%A4", "xn--bcher-kva.test"),
    ],
)
def test_parse_url(url, tls, host, port, path, host_header) -> None:
    assert tuple(parse_url(url)) == (tls, host, port, path, host_header)


def test_head_layout() -> None:
    head = HeadWriter().encode("POST", "/p", "h:1", {"Authorization": "Bearer k"}, b"abc")
    assert head == (
        b"POST /p HTTP/1.1\r\nhost: h:1\r\nAuthorization: Bearer k\r\n"
        b"accept-encoding: gzip, deflate\r\ncontent-length: 3\r\n\r\n"
    )


def test_head_rejects_without_echoing_the_value() -> None:
    writer = HeadWriter()
    with pytest.raises(ValueError) as info:
        writer.encode("GET", "/", "h", {"authorization": "sk-secret\r\nx: y"}, None)
    assert "authorization" in str(info.value) and "sk-secret" not in str(info.value)
    for bad in ({"x": "é€"}, {"x y": "1"}, {"": "1"}):
        with pytest.raises(ValueError):
            writer.encode("GET", "/", "h", bad, None)
    with pytest.raises(ValueError):
        writer.encode("GE T", "/", "h", {}, None)
