"""Forwarding a stream event as its bytes, unparsed.

Most events of a long stream differ from the one before only in a few words of text.
Parsing each and encoding it again was a large share of what a forwarded event cost
(bench/README.md, "Long streams"). So a provider parses an event, checks that it is a
plain text event, and keeps it as a template: the bytes before its text (`head`) and
after (`tail`). A later event made of the same head, a valid JSON string's inside and
the same tail is, byte for byte, the same JSON with another text, and goes on as it
came (`providers.base.RawChunk`), its text still escaped for the evaluator.

The template is only taken from an event whose every byte outside its text could not
hide anything: no whitespace or escape (where a key could hide), as many `":` as the
event has keys (none repeated). Used by providers/openai.py (chat chunks) and
providers/anthropic_stream.py (Messages text deltas).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["frame", "keys_in", "plain_text"]

# Bytes a JSON string may not hold as they are (their escapes are checked apart).
_UNPLAIN = re.compile(rb'["\\\x00-\x1f]')
# The inside of a JSON string, escapes checked (a surrogate only in a pair).
_ESCAPE = (
    rb'\\(?:["\\/bfnrt]|u(?:[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}'
    rb"|(?![dD][89a-fA-F])[0-9a-fA-F]{4}))"
)
_STRING = re.compile(rb'[^"\\\x00-\x1f]*(?:' + _ESCAPE + rb'[^"\\\x00-\x1f]*)*')
_HIDING = re.compile(rb"[ \t\r\n\\]")  # whitespace or an escape, where a key could hide


def plain_text(data: bytes, head: bytes, tail: bytes) -> bytes | None:
    """The text of `data` (still escaped) if `data` is `head`, the inside of a valid JSON
    string, then `tail`; else None."""
    end = len(data) - len(tail)
    if not (data.startswith(head) and data.endswith(tail) and end >= len(head)):
        return None
    text = data[len(head) : end]
    if _UNPLAIN.search(text) is not None and _STRING.fullmatch(text) is None:
        return None
    if not text.isascii() and not _utf8(text):
        return None
    return text


def frame(data: bytes, marker: bytes, event: dict[str, Any], extra_keys: int = 0) -> (
    tuple[bytes, bytes] | None
):  # fmt: skip
    """(head, tail) around the JSON string that follows `marker` (e.g. `"text":"`) in
    `data`, which parses as `event`; None unless the marker is there once, the string
    closes, and nothing outside it could hide a key: no whitespace or escape, and as many
    `":` as `event` has keys (plus `extra_keys`, those the caller took out of it)."""
    if data.count(marker) != 1:
        return None
    start = data.index(marker) + len(marker)
    found = _STRING.match(data, start)
    end = found.end() if found is not None else -1
    if data[end : end + 1] != b'"':
        return None
    head, tail = data[:start], data[end:]
    outside = head + tail
    if _HIDING.search(outside) is not None:
        return None
    if outside.count(b'":') != keys_in(event) + extra_keys:
        return None
    return head, tail


def keys_in(value: Any) -> int:
    """How many keys `value` holds, at every depth. (A loop that skips the leaves: a
    template is made once or twice a stream, and this was 2.1 of its 7.6 µs.)"""
    if isinstance(value, dict):
        count = len(value)
        values: Any = value.values()
    elif isinstance(value, list):
        count, values = 0, value
    else:
        return 0
    for v in values:
        if isinstance(v, dict | list):
            count += keys_in(v)
    return count


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
