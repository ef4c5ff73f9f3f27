"""Identifiers: response ids are unguessable because feedback is attached to them."""

from __future__ import annotations

import os
import re

__all__ = ["new_id", "request_id_from"]

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_id(prefix: str) -> str:
    return prefix + os.urandom(16).hex()


def request_id_from(header: str | None) -> str:
    """Accept a client's own request id when it is safe to echo and log."""
    if header and _CLIENT_ID.match(header):
        return header
    return new_id("req_")
