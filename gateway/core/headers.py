"""Response headers rendered once, as the HTTP/1.1 header lines they are sent as.

uvicorn renders a response head pair by pair and checks each name and value against two
regular expressions: about 0.6 µs a header, and a keyed answer carries 15 (nine of the
gateway's, six `x-ratelimit-*`), 4 % of a proxied request. The proxy's own headers have
fixed names and values the gateway made itself (ids it checked, model and provider names
checked when the configuration loads, numbers), so they are rendered in one format
operation; the gateway's protocol (gateway/server/protocol.py) writes `RenderedHeaders`
as they are, and any other ASGI server iterates them as the usual (name, value) pairs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

__all__ = ["RenderedHeaders", "header_pairs", "header_strings", "render_headers"]

Header = tuple[bytes, bytes]

# What uvicorn refuses in a value (and a name must be a token besides): a rendered line
# with any of these would split the head.
_UNSAFE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class RenderedHeaders:
    """An answer's headers as header lines, content-length among them (or, with
    `content_length` None, none: a streamed body the server frames as chunked). An ASGI
    message's `headers` may be any iterable of pairs, so servers other than the
    gateway's read them as pairs (`__iter__`); the gateway's writes `lines` at once."""

    __slots__ = ("content_length", "lines")

    def __init__(self, lines: bytes, content_length: int | None) -> None:
        self.lines = lines
        self.content_length = content_length

    def __iter__(self) -> Iterator[Header]:
        return iter(header_pairs(self.lines))

    def __repr__(self) -> str:
        return f"RenderedHeaders({self.lines!r})"


def render_headers(headers: Iterable[Header]) -> bytes:
    """Header lines for `headers`; a name or value that could split the head (a control
    character, or a name with a colon or space) raises ValueError, as uvicorn would."""
    out = []
    for name, value in headers:
        if _UNSAFE.search(name) or _UNSAFE.search(value) or b":" in name or b" " in name:
            raise ValueError(f"header {name!r} cannot be sent: {value!r}")
        out.append(b"%s: %s\r\n" % (name, value))
    return b"".join(out)


def header_pairs(lines: bytes) -> list[Header]:
    """The (name, value) pairs of header lines (`render_headers`'s inverse)."""
    pairs = []
    for line in lines.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b": ")
            pairs.append((name, value))
    return pairs


def header_strings(lines: bytes) -> dict[str, str]:
    """Header lines as the str mapping Starlette's responses and the errors take."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in header_pairs(lines)}
