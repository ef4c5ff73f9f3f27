"""Durable storage: pick an implementation from a URL.

``create_store(url, pool_size=...)`` understands:

* ``sqlite:///path.db`` - the path follows the third slash, so ``sqlite:///gatewise.db`` is
  ``./gatewise.db`` and ``sqlite:////var/lib/gatewise.db`` is ``/var/lib/gatewise.db``;
* ``sqlite://:memory:`` - a private in-memory SQLite database;
* ``memory://`` - the same in-memory SQLite database (the URL of the former plain-Python
  store, still accepted);
* ``postgresql://user:password@host:5432/dbname`` (or ``postgres://``) - PostgreSQL
  through a pool of ``pool_size`` connections; libpq's forms and query options apply
  (``?sslmode=require``, ``?search_path=gatewise``), and without a password in the url
  ``PGPASSWORD`` or ``~/.pgpass`` give it.

Messages about a url never show its password: SQLite urls hold none, and a PostgreSQL
url is named by its scheme and host only.
"""

from __future__ import annotations

from gateway.storage.base import Store, StoreError
from gateway.storage.postgres import PostgresStore
from gateway.storage.query import Query
from gateway.storage.sqlite import SQLiteStore

__all__ = ["PostgresStore", "Query", "SQLiteStore", "Store", "StoreError", "create_store"]

_EXPECTED = (
    "expected sqlite:///path/to/file.db, sqlite://:memory:, memory:// "
    "or postgresql://user@host/dbname"
)


def create_store(url: str, *, pool_size: int = 10) -> Store:
    """The (unopened) store a storage URL names; raises ``StoreError`` for bad URLs.

    ``pool_size`` is the PostgreSQL store's number of connections (SQLite has one).
    ``memory://`` is accepted for the configurations written when it named a plain-Python
    store; it is now SQLite in memory, like ``sqlite://:memory:``: nothing survives a
    restart.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        # No scheme, so no telling what it holds: show only what follows a user@.
        shown = url.rpartition("@")[2]
        raise StoreError(f"storage url {shown!r} has no scheme; {_EXPECTED}")
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
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url, pool_size=pool_size)
    if scheme.startswith("postgresql+") or scheme.startswith("postgres+"):
        raise StoreError(
            f"storage url scheme {scheme + '://'!r} names a driver; "
            "write postgresql://... (Gatewise uses asyncpg)"
        )
    # Only the scheme is echoed: the rest of an unknown url may hold credentials.
    raise StoreError(f"unsupported storage url scheme {scheme + '://'!r}; {_EXPECTED}")
