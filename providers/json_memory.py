"""The memory a JSON text takes once parsed, estimated from its bytes before parsing it.

Parsed JSON can take many times its bytes: 10 MiB of `[{},{},...]` is 252 MB of dicts.
Whoever holds bodies from strangers (a client's request, gateway/http/body.py; an
upstream's answer, providers.errors.upstream_json) can refuse one before it takes that
memory, at the cost of one pass over its bytes at C speed.
"""

from __future__ import annotations

import re

__all__ = ["parsed_size"]

# What parsing adds, in bytes, above the body's own (CPython 3.11, 64-bit): up to 40 for
# every mark (a number with its pointer follows a `:`, `,` or `[`; a string of 49 has two
# quotes), and more for each `{` (a small dict, up to five keys: 232) and `[` (a list:
# 56 and a pointer each).
_MARK, _DICT, _LIST = 40, 232 - 40, 64 - 40
_FOUR_BYTES = re.compile(rb"[\xf0-\xff]")  # a UTF-8 character past U+FFFF begins so
# Every byte but the marks, so that one pass (translate) leaves only the marks.
_NOT_MARKS = bytes(b for b in range(256) if b not in b'{[",:\\')


def parsed_size(raw: bytes | bytearray) -> int:
    """An upper estimate of the memory `raw` takes once parsed, from its bytes alone: its
    text, at the width CPython stores its widest character in (any `\\u` escape counted
    as the widest), and what each object costs by the brackets, quotes and separators
    that make it. One pass over the bytes at C speed, about what parsing them costs.
    Checked against tracemalloc (tests/providers/test_json_memory.py): never below on the
    shapes tried, and 1-5x above on clients' bodies (text full of commas, CJK text at 3x,
    emoji at 4x)."""
    marks = raw.translate(None, _NOT_MARKS)
    if b"\\" in marks and b"\\u" in raw:
        width = 4
    elif raw.isascii():
        width = 1
    else:
        width = 4 if _FOUR_BYTES.search(raw) else 2
    return (
        width * len(raw)
        + _MARK * len(marks)
        + _DICT * marks.count(b"{")
        + _LIST * marks.count(b"[")
    )
