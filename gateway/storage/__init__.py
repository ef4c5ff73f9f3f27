"""Durable storage: pick an implementation from a URL.

``create_store(url)`` understands:

* ``sqlite:///path.db`` - the path follows the third slash, so ``sqlite:///gatewise.db`` is
  ``./gatewise.db`` and ``sqlite:////var/lib/gatewise.db`` is ``/var/lib/gatewise.db``;
* ``sqlite://:memory:`` - a private in-memory SQLite database;
* ``memory://`` - the same in-memory SQLite database (the URL of the former plain-Python
  store, still accepted);
* ``postgresql://...`` / ``postgres://...`` - reserved; not implemented yet.
"""

from __future__ import annotations

from gateway.storage.base import Store, StoreError
from gateway.storage.query import Query
from gateway.storage.sqlite import SQLiteStore

__all__ = ["Query", "SQLiteStore", "Store", "StoreError", "create_store"]

_EXPECTED = (
    "expected sqlite:///path/to/file.db, sqlite://:memory:, memory:// "
    "(or postgresql://... once supported)"
)


def create_store(url: str) -> Store:
    """The (unopened) store a storage URL names; raises ``StoreError`` for bad URLs.

    ``memory://`` is accepted for the configurations written when it named a plain-Python
    store; it is now SQLite in memory, like ``sqlite://:memory:``: nothing survives a
    restart.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise StoreError(f"storage url {url!r} has no scheme; {_EXPECTED}")
    if scheme == "sqlite":
        if rest == ":memory:":
            return SQLiteStore(":memory:")
        if not rest.startswith("/") or rest == "/":
            raise StoreError(
                f"storage url {url!r} is not a sqlite file url; {_EXPECTED} "
                "(three slashes before a relative path, four before an absolute one)"
            )
        return SQLiteStore(rest[1:])
    if scheme == "memory":
        return SQLiteStore(":memory:")
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        raise StoreError(
            "PostgreSQL support is not available yet; use a sqlite:/// url for storage.url"
        )
    # Only the scheme is echoed: the rest of an unknown url may hold credentials.
    raise StoreError(f"unsupported storage url scheme {scheme + '://'!r}; {_EXPECTED}")
