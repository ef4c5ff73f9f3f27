"""What a read selects (``Query``), and the SQL ``WHERE`` clause that selects it.

Every read of a ``Store`` takes a ``Query``; an SQL store turns it into a ``WHERE`` clause
with ``where`` and nothing else, so the filters mean the same in every table and dialect.
The placeholder style is the dialect's: ``Params()`` writes SQLite's ``?``, and
``Params(lambda n: f"${n}")`` the numbered ``$1, $2, ...`` of asyncpg.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Params", "Query", "bucket_size", "where"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    """The rows a read selects: filters, then a page of the result.

    ``since`` is inclusive and ``until`` exclusive (float unix seconds). ``response_id``
    selects ratings of one answer and only ``Store.feedback()`` takes it. ``limit`` and
    ``offset`` page listings; aggregates and time series count every selected row.
    """

    model: str | None = None
    conversation_type: str | None = None
    response_id: str | None = None
    owner: str | None = None  # the client key's name: answers only (Store.responses)
    since: float | None = None
    until: float | None = None
    limit: int = 100
    offset: int = 0

    def __post_init__(self) -> None:
        if self.limit < 0 or self.offset < 0:
            raise ValueError("limit and offset must not be negative")


def bucket_size(bucket_seconds: int) -> int:
    """The width of time buckets in whole seconds; ``ValueError`` unless positive."""
    if bucket_seconds <= 0:
        raise ValueError("bucket_seconds must be positive")
    return int(bucket_seconds)


def _qmark(position: int) -> str:
    return "?"


class Params:
    """The values of one SQL statement in the order they appear in it.

    Calling it with a value appends the value and returns its placeholder, so a statement
    is written in one pass (``f"... LIMIT {p(query.limit)}"``) and numbered placeholders
    stay right whatever comes before the ``WHERE`` clause.
    """

    __slots__ = ("placeholder", "values")

    def __init__(self, placeholder: Callable[[int], str] = _qmark) -> None:
        self.placeholder = placeholder
        self.values: list[object] = []

    def __call__(self, value: object) -> str:
        self.values.append(value)
        return self.placeholder(len(self.values))


def where(
    query: Query,
    params: Params,
    *,
    ts: str = "ts",
    prefix: str = "",
    also: Sequence[str] = (),
    by_response: bool = False,
    by_owner: bool = False,
) -> str:
    """The ``WHERE`` clause selecting ``query``'s rows (``""`` when it selects every row).

    ``ts`` names the time column and ``prefix`` qualifies every column (``"r."``);
    ``also`` adds conditions that hold no parameters. Only a read of ratings passes
    ``by_response``, and only a read of answers ``by_owner``: any other read refuses a
    query with a ``response_id`` or an ``owner`` rather than return rows it was not asked
    for.
    """
    if query.response_id is not None and not by_response:
        raise ValueError("response_id selects ratings only (Store.feedback)")
    if query.owner is not None and not by_owner:
        raise ValueError("owner selects answers only (Store.responses)")
    clauses = []
    if query.model is not None:
        clauses.append(f"{prefix}model = {params(query.model)}")
    if query.conversation_type is not None:
        clauses.append(f"{prefix}conversation_type = {params(query.conversation_type)}")
    if query.response_id is not None:
        clauses.append(f"{prefix}response_id = {params(query.response_id)}")
    if query.owner is not None:
        clauses.append(f"{prefix}owner = {params(query.owner)}")
    if query.since is not None:
        clauses.append(f"{prefix}{ts} >= {params(query.since)}")
    if query.until is not None:
        clauses.append(f"{prefix}{ts} < {params(query.until)}")
    clauses += also
    return "WHERE " + " AND ".join(clauses) if clauses else ""
