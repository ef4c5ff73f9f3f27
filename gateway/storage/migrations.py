"""The SQLite schema, as an ordered list of migrations.

HOW TO ADD A MIGRATION: append a new SQL script to the END of ``MIGRATIONS``. Never edit,
reorder or remove a script that has shipped: databases in the field have already applied
it. Script ``MIGRATIONS[i]`` brings the schema from version ``i`` to version ``i + 1``;
the store runs each pending script in its own transaction together with the version bump,
so a script either applies completely or not at all. Scripts may hold several statements
separated by ``;`` (triggers with ``BEGIN ... END`` blocks are fine). Do not put
``BEGIN``/``COMMIT`` or ``PRAGMA``s that cannot run inside a transaction in a script.

The PostgreSQL store keeps its own list, side by side with this one, in its own dialect
(gateway/storage/migrations_postgres.py); version N means the same logical schema in both,
so append the PostgreSQL counterpart in the same change.

Conventions: timestamps are REAL unix seconds; booleans are INTEGER 0/1; JSON blobs are
TEXT (written with orjson).
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: list[str] = [
    # 1: upstream attempts, their hourly rollups, and durable component state.
    """
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL,
        response_id TEXT,
        attempt INTEGER NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        conversation_type TEXT NOT NULL,
        route TEXT,
        optimization TEXT,
        ok INTEGER NOT NULL,
        error_class TEXT,
        http_status INTEGER,
        latency_ms REAL NOT NULL DEFAULT 0,
        ttft_ms REAL,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        cost REAL NOT NULL DEFAULT 0,
        ts REAL NOT NULL,
        stream INTEGER NOT NULL DEFAULT 0,
        error_message TEXT,
        counts_as_failure INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX attempts_ts ON attempts (ts);
    CREATE INDEX attempts_model_ts ON attempts (model, ts);

    CREATE TABLE attempt_hourly (
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        conversation_type TEXT NOT NULL,
        hour INTEGER NOT NULL,
        requests INTEGER NOT NULL,
        successes INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        latency_sum REAL NOT NULL,
        cost_sum REAL NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        PRIMARY KEY (model, provider, conversation_type, hour)
    );
    CREATE INDEX attempt_hourly_hour ON attempt_hourly (hour);

    CREATE TABLE state (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        data TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (kind, key)
    );
    """,
    # 2: one row per answer returned (for attribution, auto-evaluation and ratings), and
    # the human ratings of those answers. feedback.response_id refers to responses but is
    # not a declared foreign key: a rating may be written before its response row lands.
    # flags is a JSON array of strings (jsonb in PostgreSQL).
    """
    CREATE TABLE responses (
        response_id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        conversation_type TEXT NOT NULL,
        route TEXT,
        optimization TEXT,
        ts REAL NOT NULL,
        latency_ms REAL NOT NULL DEFAULT 0,
        flags TEXT NOT NULL DEFAULT '[]',
        auto_score REAL,
        prompt TEXT,
        answer TEXT
    );
    CREATE INDEX responses_model_ts ON responses (model, ts);
    CREATE INDEX responses_ts ON responses (ts);

    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        response_id TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        conversation_type TEXT NOT NULL,
        relevance INTEGER,
        accuracy INTEGER,
        helpfulness INTEGER,
        creativity INTEGER,
        overall INTEGER,
        comment TEXT,
        ts REAL NOT NULL
    );
    CREATE INDEX feedback_response_id ON feedback (response_id);
    CREATE INDEX feedback_model_ts ON feedback (model, ts);
    CREATE INDEX feedback_ts ON feedback (ts);
    """,
    # 3: the client key (its name) that received an answer: only it may rate or read it.
    """
    ALTER TABLE responses ADD COLUMN owner TEXT;
    """,
    # 4: the attempt batches written, so that a retried batch is not written twice.
    """
    CREATE TABLE written_batches (batch TEXT PRIMARY KEY, ts REAL NOT NULL);
    """,
    # 5: same-prompt comparisons: pairs of answers to one prompt (the client's and a
    # challenger's shadow answer, with their text, to be judged blind), and the pairwise
    # verdicts on them (the latest per unordered pair of answers: pair_key).
    """
    CREATE TABLE comparison_pairs (
        pair_id TEXT PRIMARY KEY,
        comparison TEXT NOT NULL,
        route TEXT,
        a_response_id TEXT NOT NULL,
        b_response_id TEXT NOT NULL,
        model_a TEXT NOT NULL,
        model_b TEXT NOT NULL,
        prompt TEXT,
        answer_a TEXT,
        answer_b TEXT,
        owner TEXT,
        ts REAL NOT NULL,
        cost_b REAL NOT NULL DEFAULT 0,
        judged_at REAL
    );
    CREATE INDEX comparison_pairs_a ON comparison_pairs (a_response_id);
    CREATE INDEX comparison_pairs_b ON comparison_pairs (b_response_id);
    CREATE INDEX comparison_pairs_pending ON comparison_pairs (judged_at, ts);

    CREATE TABLE pairwise_verdicts (
        pair_key TEXT PRIMARY KEY,
        a_response_id TEXT NOT NULL,
        b_response_id TEXT NOT NULL,
        model_a TEXT NOT NULL,
        model_b TEXT NOT NULL,
        winner TEXT NOT NULL,
        pair_id TEXT,
        route TEXT,
        ts REAL NOT NULL
    );
    CREATE INDEX pairwise_verdicts_models ON pairwise_verdicts (model_a, model_b);
    """,
    # 6: the experiment and arm that served an answer (issue 21), so that its ratings, even
    # after a restart, count for that arm; and what it cost (a combined metric weighs it).
    """
    ALTER TABLE responses ADD COLUMN experiment TEXT;
    ALTER TABLE responses ADD COLUMN arm TEXT;
    ALTER TABLE responses ADD COLUMN cost REAL;
    """,
    # Append the next migration (version 7) here, with PostgreSQL's in migrations_postgres.py.
]
