"""The request side of NativeTransport: URL to (origin, path, Host) and the request head.

Both run per request, so both are cheap: URLs are parsed once and cached by the pool,
header names are validated once per name, and CR/LF/NUL anywhere in the head is caught by
counting line ends in the joined text rather than scanning each value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import quote, urlsplit

__all__ = ["HeadWriter", "ParsedURL", "parse_url"]

MAX_NAMES = 1024  # validated header names remembered
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A caller's header to us: 0 plain, 1 host, 2 dropped (we frame the body), 3 accept-encoding
_SPECIAL = {"host": 1, "content-length": 2, "transfer-encoding": 2, "accept-encoding": 3}


class ParsedURL(NamedTuple):
    tls: bool
    host: str  # as resolved and checked against the certificate (IDNA-encoded)
    port: int
    path: str  # path and query, percent-encoded where needed
    host_header: str  # with the port when not the default; IPv6 in brackets


def parse_url(url: str) -> ParsedURL:
    """Split an http(s) URL; anything we cannot send faithfully is a ValueError."""
    u = urlsplit(url)
    scheme = u.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {scheme!r}")
    if u.username is not None or u.password is not None:
        raise ValueError("credentials in the URL are not supported; send a header")
    host = u.hostname
    if not host:
        raise ValueError("URL without a host")
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    default = 443 if scheme == "https" else 80
    port = u.port or default
    host_header = f"[{host}]" if ":" in host else host
    if port != default:
        host_header = f"{host_header}:{port}"
    path = quote(u.path or "/", safe="/%:@!$&'()*+,;=~")
    if u.query:
        path += "?" + quote(u.query, safe="/?%:@!$&'()*+,;=~")
    return ParsedURL(scheme == "https", host, port, path, host_header)


class HeadWriter:
    """Serialises request heads. The caller's host and accept-encoding replace ours;
    content-length and transfer-encoding are ours alone (the body is always sent whole
    with a content-length). No user-agent is added."""

    def __init__(self) -> None:
        self._names: dict[str, int] = {}
        self._methods: set[str] = set()

    def encode(
        self, method: str, path: str, host: str, headers: Mapping[str, str], body: bytes | None
    ) -> bytes:
        if method not in self._methods:
            if not _TOKEN.fullmatch(method):
                raise ValueError("invalid HTTP method")
            self._methods.add(method)
        parts = [method, " ", path, " HTTP/1.1\r\n", ""]
        accept = True
        names = self._names
        lines = 3  # request line, host, the blank line
        for k, v in headers.items():
            code = names.get(k)
            if code is None:
                code = self._check_name(k)
            if code:
                if code == 1:
                    host = v
                    continue
                if code == 2:
                    continue
                accept = False
            parts += (k, ": ", v, "\r\n")
            lines += 1
        parts[4] = f"host: {host}\r\n"
        if accept:
            parts.append("accept-encoding: gzip, deflate\r\n")
            lines += 1
        if body is not None:
            parts.append(f"content-length: {len(body)}\r\n")
            lines += 1
        elif method in _BODY_METHODS:
            parts.append("content-length: 0\r\n")
            lines += 1
        parts.append("\r\n")
        text = "".join(parts)
        if text.count("\n") != lines or text.count("\r") != lines or "\0" in text:
            _reject(headers, host)
        return text.encode("latin-1")  # UnicodeEncodeError is a ValueError too

    def _check_name(self, name: str) -> int:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name {name[:40]!r}")
        code = _SPECIAL.get(name.lower(), 0)
        if len(self._names) < MAX_NAMES:
            self._names[name] = code
        return code


def _reject(headers: Mapping[str, str], host: str) -> None:
    bad = [k for k, v in headers.items() if any(c in v for c in "\r\n\0")]
    if any(c in host for c in "\r\n\0"):
        bad.append("host")
    # the field name only: values may be secrets
    raise ValueError(f"CR, LF or NUL in header {bad[0] if bad else '?'!r}")
