"""Identifiers: response ids are unguessable because feedback is attached to them.

Randomness comes from the OS in 4 KiB reads rather than one syscall per id: ids are
minted twice per request, and the syscall showed up in profiles.
"""

from __future__ import annotations

import os
import re
import time

__all__ = ["new_id", "request_id_from"]

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_POOL_BYTES = 4096
_ID_BYTES = 16


class _Entropy:
    __slots__ = ("_offset", "_pool")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pool = b""
        self._offset = _POOL_BYTES

    def take(self) -> bytes:
        offset = self._offset
        if offset >= _POOL_BYTES:
            self._pool = os.urandom(_POOL_BYTES)
            offset = 0
        self._offset = offset + _ID_BYTES
        return self._pool[offset : offset + _ID_BYTES]


_entropy = _Entropy()
os.register_at_fork(after_in_child=_entropy.reset)  # a forked worker never reuses the pool


def new_id(prefix: str) -> str:
    """prefix + 11 hex digits of milliseconds + 32 random hex digits.

    The time part keeps ids in insertion order, so the store's index on them grows at
    its end instead of splitting pages at random; the 128 random bits keep them
    unguessable.
    """
    return f"{prefix}{time.time_ns() // 1_000_000:011x}{_entropy.take().hex()}"


def request_id_from(header: str | None) -> str:
    """Accept a client's own request id when it is safe to echo and log."""
    if header and _CLIENT_ID.match(header):
        return header
    return new_id("req_")
