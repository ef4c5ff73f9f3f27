"""The memory estimate of a JSON text, against what parsing it takes (tracemalloc)."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest

from providers.json_memory import parsed_size

N = 20_000
_PROSE = " ".join(
    ("the", "model,", "answers", "quickly,", "and", "x:", "we", "see")[i % 8] for i in range(N)
)
_TOOL = {
    "type": "function",
    "function": {
        "name": "f",
        "parameters": {"type": "object", "properties": {"a": {"type": "string"}}},
    },
}
# Shapes an attacker would pick (the most objects for the bytes), and a client's own.
HOSTILE: dict[str, bytes] = {
    "empty objects": b"[" + b"{}," * N + b"{}]",
    "empty arrays": b"[" + b"[]," * N + b"[]]",
    "short strings": b"[" + b'"ab",' * N + b'"ab"]',
    "one-key objects": b"[" + b'{"a":1},' * N + b'{"a":1}]',
    "objects of strings": b"[" + b'{"a":"xy"},' * N + b'{"a":"xy"}]',
    "objects of distinct keys": b"[" + b"".join(b'{"k%d":"xy"},' % i for i in range(N)) + b"{}]",
    "objects of nine keys": b"["
    + b'{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9},' * N
    + b"{}]",
    "one object of many keys": orjson.dumps({f"key{i}": i for i in range(N)}),
    "numbers": b"[" + b"123456," * N + b"1]",
    "long numbers": b"[" + b"12345678901234567890123," * N + b"1]",
    "floats": b"[" + b"1.5," * N + b"1.5]",
    "nested arrays": b"[" + b"[1]," * N + b"[1]]",
    "an emoji, then ASCII": orjson.dumps({"c": "\U0001f600" + "a" * 4 * N}),
    "an escaped emoji, then ASCII": b'{"c":"\\ud83d\\ude00' + b"a" * 4 * N + b'"}',
    "a 2-byte character, then ASCII": orjson.dumps({"c": "\u0100" + "a" * 4 * N}),
}
CLIENTS: dict[str, bytes] = {
    "prose": orjson.dumps({"messages": [{"role": "user", "content": _PROSE}]}),
    "a conversation": orjson.dumps(
        {"messages": [{"role": "user", "content": "hello there, how are you? " * 3}] * 2000}
    ),
    "emoji": orjson.dumps({"messages": [{"role": "user", "content": "\U0001f600" * N}]}),
    "CJK": orjson.dumps({"messages": [{"role": "user", "content": "\u6f22" * N}]}),
    "tools": orjson.dumps({"tools": [_TOOL] * 2000}),
}


def parsed_memory(raw: bytes) -> int:
    """What orjson's parse of `raw` holds, as tracemalloc counts it."""
    tracemalloc.start()
    try:
        value = orjson.loads(raw)
        taken, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del value
    return taken


@pytest.mark.parametrize("name", [*HOSTILE, *CLIENTS])
def test_parsed_size_is_never_below_what_parsing_takes(name: str) -> None:
    raw = {**HOSTILE, **CLIENTS}[name]
    taken = parsed_memory(raw)
    assert parsed_size(raw) >= taken


@pytest.mark.parametrize("name", CLIENTS)
def test_parsed_size_of_a_clients_body_is_within_a_few_times_the_truth(name: str) -> None:
    raw = CLIENTS[name]
    assert parsed_size(raw) <= 5 * parsed_memory(raw)  # emoji: 4 bytes, counted 4 wide
