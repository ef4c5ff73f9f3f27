"""Forwarding an event as its bytes (providers/splice.py): the checks that decide whether
an event may serve as a template, against their plain definitions."""

from __future__ import annotations

import random
from typing import Any

import orjson

from providers.splice import frame, keys_in, plain_text

CHUNK = (
    b'{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
    b'"delta":{"content":"hi there"},"finish_reason":null}]}'
)


def counted(value: Any) -> int:
    """keys_in's definition: every key of every object, at any depth."""
    if isinstance(value, dict):
        return len(value) + sum(counted(v) for v in value.values())
    if isinstance(value, list):
        return sum(counted(v) for v in value)
    return 0


def nested(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.choice(["dict", "list", "leaf"] if depth < 4 else ["leaf"])
    if kind == "dict":
        return {f"k{i}": nested(rng, depth + 1) for i in range(rng.randint(0, 4))}
    if kind == "list":
        return [nested(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return rng.choice([None, 1, 2.5, "s", True, 'a"b'])


def test_keys_in_counts_every_key_at_every_depth() -> None:
    rng = random.Random(23)
    values = [nested(rng) for _ in range(500)]
    assert [keys_in(v) for v in values] == [counted(v) for v in values]
    assert keys_in(orjson.loads(CHUNK)) == 8  # 4 + 3 in the choice + 1 in its delta


def test_a_compact_event_frames_around_its_text() -> None:
    framed = frame(CHUNK, b'"content":"', orjson.loads(CHUNK))
    assert framed is not None
    head, tail = framed
    assert head.endswith(b'"content":"') and tail.startswith(b'"},"finish_reason"')
    assert plain_text(head + b"more \\u00e9 text" + tail, head, tail) == b"more \\u00e9 text"
    assert plain_text(head + b'a"b' + tail, head, tail) is None  # a quote would end it


def test_whitespace_or_an_escape_outside_the_text_is_no_template() -> None:
    for hiding in (b" ", b"\t", b"\n", b"\r"):
        spaced = CHUNK.replace(b'"index":0', b'"index":' + hiding + b"0")
        assert frame(spaced, b'"content":"', orjson.loads(spaced)) is None
    escaped = CHUNK.replace(b'"model":"m"', b'"model":"\\u006d"')
    assert frame(escaped, b'"content":"', orjson.loads(escaped)) is None
