"""How to write one batch to PostgreSQL: attempts by COPY, executemany or one multi-row
INSERT (``unnest``); response upserts by executemany or ``unnest`` (COPY cannot upsert);
each batch in one transaction; and the store's own ``write_attempts``/``write_responses``.

    GATEWISE_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1/test \\
        python bench/store_batches.py [--rows 1000] [--repeat 30]

It works in a scratch schema of its own, dropped at the end. Wall time is per batch
(client and server); CPU is the client's (the gateway's event loop), both medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson

if __package__ in (None, ""):  # run as a script: make `gateway` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.core.types import Attempt
from gateway.storage.postgres import PostgresStore
from gateway.storage.rows import ATTEMPT_COLUMNS, RESPONSE_COLUMNS, attempt_row

TYPES = (
    "text", "text", "bigint", "text", "text", "text", "text", "text", "boolean", "text",
    "bigint", "float8", "float8", "bigint", "bigint", "float8", "float8", "boolean", "text",
    "boolean",
)  # fmt: skip
COLUMNS = ", ".join(ATTEMPT_COLUMNS)
PLACEHOLDERS = ", ".join(f"${n}" for n in range(1, len(ATTEMPT_COLUMNS) + 1))
EXECUTEMANY = f"INSERT INTO attempts ({COLUMNS}) VALUES ({PLACEHOLDERS})"
ARRAYS = ", ".join(f"${n}::{t}[]" for n, t in enumerate(TYPES, 1))
UNNEST = f"INSERT INTO attempts ({COLUMNS}) SELECT * FROM unnest({ARRAYS})"
RESPONSE_TYPES = ("text",) * 7 + ("float8", "float8", "jsonb", "float8", "text", "text")
_UPDATE = ", ".join(f"{c} = excluded.{c}" for c in RESPONSE_COLUMNS[1:])
_RESPONSES = f"INSERT INTO responses ({', '.join(RESPONSE_COLUMNS)})"
_CONFLICT = f"ON CONFLICT (response_id) DO UPDATE SET {_UPDATE}"
UPSERT_MANY = f"{_RESPONSES} VALUES ({', '.join(f'${n}' for n in range(1, 14))}) {_CONFLICT}"
UPSERT_UNNEST = (
    f"{_RESPONSES} SELECT * FROM "
    f"unnest({', '.join(f'${n}::{t}[]' for n, t in enumerate(RESPONSE_TYPES, 1))}) {_CONFLICT}"
)


def attempts(n: int) -> list[Attempt]:
    return [
        Attempt(
            request_id=f"req-{i}", response_id=f"resp-{i}", attempt=1, model=f"m{i % 7}",
            provider="up", conversation_type="text-to-text", route="auto",
            optimization="accuracy", ok=i % 10 != 0, latency_ms=100.0 + i, prompt_tokens=10,
            completion_tokens=5, cost=0.001, timestamp=1_700_000_000.0 + i * 0.01,
            error_message=None if i % 10 else "upstream said no",
        )
        for i in range(n)
    ]  # fmt: skip


def responses(n: int, batch: int) -> list[dict[str, Any]]:
    return [
        {"response_id": f"b{batch}-{i}", "request_id": f"req-{i}", "model": f"m{i % 7}",
         "provider": "up", "conversation_type": "text-to-text", "route": "auto",
         "optimization": "accuracy", "ts": 1_700_000_000.0 + i, "latency_ms": 100.0,
         "flags": ["slow"] if i % 5 == 0 else [], "auto_score": 0.8, "prompt": "p" * 200,
         "answer": "a" * 500}
        for i in range(n)
    ]  # fmt: skip


def response_rows(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    flags = RESPONSE_COLUMNS.index("flags")
    return [
        tuple(
            orjson.dumps(r[c]).decode() if i == flags else r[c]
            for i, c in enumerate(RESPONSE_COLUMNS)
        )
        for r in records
    ]


async def measure(write: Callable[[], Awaitable[Any]], repeat: int) -> list[tuple[float, float]]:
    """(wall, client CPU) seconds of each of ``repeat`` calls."""
    samples = []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        await write()
        samples.append((time.perf_counter() - wall, time.process_time() - cpu))
    return samples


async def main(url: str, n: int, repeat: int) -> None:
    schema = f"gw_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f"CREATE SCHEMA {schema}")
    settings = {"search_path": schema}
    try:
        async with PostgresStore(url, server_settings=settings) as store:
            conn = await asyncpg.connect(url, server_settings=settings)
            batch = attempts(n)
            rows = [attempt_row(a) for a in batch]

            async def executemany() -> None:
                async with conn.transaction():
                    await conn.executemany(EXECUTEMANY, rows)

            async def unnest() -> None:
                async with conn.transaction():
                    await conn.execute(UNNEST, *zip(*rows, strict=True))

            async def copy() -> None:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "attempts", records=rows, columns=ATTEMPT_COLUMNS
                    )

            batches = iter(range(1_000_000))  # a new response id per batch: inserts, not updates

            async def upsert_many() -> None:
                rows = response_rows(responses(n, next(batches)))
                async with conn.transaction():
                    await conn.executemany(UPSERT_MANY, rows)

            async def upsert_unnest() -> None:
                rows = response_rows(responses(n, next(batches)))
                async with conn.transaction():
                    await conn.execute(UPSERT_UNNEST, *zip(*rows, strict=True))

            strategies = {
                "attempts: executemany": executemany,
                "attempts: unnest (one INSERT)": unnest,
                "attempts: COPY": copy,
                "store.write_attempts (COPY, rows built)": lambda: store.write_attempts(batch),
                "responses: executemany upsert (rows built)": upsert_many,
                "responses: unnest upsert (rows built)": upsert_unnest,
                "store.write_responses (executemany)": lambda: store.write_responses(
                    responses(n, next(batches))
                ),
            }
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in strategies}
            rounds = 3  # interleaved: drift on a shared machine hits every strategy alike
            for _ in range(rounds):
                for name, write in strategies.items():
                    results[name] += await measure(write, max(1, repeat // rounds))
                await conn.execute("TRUNCATE attempts, responses")
            await conn.close()
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
    print(f"{n} rows per batch, one transaction each; medians over {repeat} batches")
    print(f"{'strategy':<46}{'wall ms':>10}{'client CPU ms':>16}")
    for name, samples in results.items():
        wall = statistics.median(s[0] for s in samples) * 1000
        cpu = statistics.median(s[1] for s in samples) * 1000
        print(f"{name:<46}{wall:>10.1f}{cpu:>16.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("GATEWISE_TEST_POSTGRES_URL"))
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    if not args.url:
        parser.error("give --url or set GATEWISE_TEST_POSTGRES_URL")
    asyncio.run(main(args.url, args.rows, args.repeat))
