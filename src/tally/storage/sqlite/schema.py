"""SQLite schema, as numbered migrations tracked in ``PRAGMA user_version``.

Times are INTEGER microseconds since the Unix epoch (UTC). Idempotency keys
live in a table of their own holding only the last 24 hours, so that dedupe
costs the same on day 1 and day 300 and keyless events pay nothing for it.
"""

from __future__ import annotations

import os
import sqlite3

from tally.storage.sql import delivery_counts as sql_delivery_counts
from tally.storage.sql import summaries as sql_summaries

# One value per key name and entity (events never change a key's
# value, and two workers cannot both add one): a value added later than
# another of the same name (a race of old) gives way to the first
ONE_VALUE_PER_KEY_NAME = """
DELETE FROM company_keys WHERE EXISTS (SELECT 1 FROM company_keys o
    WHERE o.entity_id = company_keys.entity_id AND o.key = company_keys.key
    AND (o.created_at < company_keys.created_at
        OR (o.created_at = company_keys.created_at AND o.value < company_keys.value)));
DELETE FROM user_keys WHERE EXISTS (SELECT 1 FROM user_keys o
    WHERE o.entity_id = user_keys.entity_id AND o.key = user_keys.key
    AND (o.created_at < user_keys.created_at
        OR (o.created_at = user_keys.created_at AND o.value < user_keys.value)));
DROP INDEX company_keys_entity;
DROP INDEX user_keys_entity;
CREATE UNIQUE INDEX company_keys_entity_key ON company_keys (entity_id, key);
CREATE UNIQUE INDEX user_keys_entity_key ON user_keys (entity_id, key);
"""

# Flat reads (issue 10): look-ups by idempotency key and by a rare event type
# walk an index of their own instead of every event. Both are partial: an
# event without a key, and a track event (the bulk of any stream), pay nothing
# for them at ingest (``tally.storage.sql.storage.event_conditions`` names
# ``RARE_TYPES`` so that the planner may use the second one).
EVENT_READ_INDEXES = """
CREATE INDEX events_idempotency ON events (environment_id, idempotency_key, id)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_rare_type ON events (environment_id, type, id) WHERE type <> 'track';
"""


# Retention (tally.retention): the pruning loop finds finished deliveries by
# when they finished, the notices a pruned delivery leaves without any, and
# limit triggers by period; none of these tables is on the ingest path
RETENTION_INDEXES = """
CREATE INDEX deliveries_finished ON deliveries (finished_at, id) WHERE finished_at IS NOT NULL;
CREATE INDEX deliveries_notice ON deliveries (notice_id) WHERE notice_id IS NOT NULL;
CREATE INDEX limit_triggers_period ON limit_triggers (period, period_start);
"""


def statements(script: str) -> tuple[str, ...]:
    """The statements of a script (split at ``;``: no literal in it holds one)."""
    return tuple(part for part in script.split(";") if part.strip())


# a migration: a script of statements separated by ``;``, or (for statements
# that hold a ``;``, such as triggers) a tuple of statements
MIGRATIONS: list[str | tuple[str, ...]] = [
    # 1: environments, keys, events, idempotency keys
    """
    CREATE TABLE environments (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL REFERENCES environments(id),
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('secret', 'publishable')),
        read_only INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        type TEXT NOT NULL,
        subtype TEXT,
        status TEXT NOT NULL,
        body TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        idempotency_key TEXT,
        sent_at INTEGER,
        captured_at INTEGER NOT NULL,
        loaded_at INTEGER NOT NULL,
        enriched_at INTEGER,
        updated_at INTEGER NOT NULL,
        trusted_client_clock INTEGER NOT NULL,
        backfill INTEGER NOT NULL,
        error_message TEXT,
        api_key_id TEXT,
        remote_ip TEXT,
        user_agent TEXT,
        company_id TEXT,
        user_id TEXT,
        flag_id TEXT,
        feature_ids TEXT
    );
    CREATE INDEX events_env ON events (environment_id, id);
    CREATE INDEX events_env_subtype ON events (environment_id, subtype, id)
        WHERE subtype IS NOT NULL;
    CREATE INDEX events_company ON events (company_id, id)
        WHERE company_id IS NOT NULL;
    CREATE INDEX events_user ON events (user_id, id)
        WHERE user_id IS NOT NULL;
    CREATE INDEX events_flag ON events (flag_id, id)
        WHERE flag_id IS NOT NULL;
    CREATE TABLE idempotency_keys (
        environment_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        key TEXT NOT NULL,
        event_id TEXT NOT NULL,
        captured_at INTEGER NOT NULL,
        received_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX idempotency_keys_key ON idempotency_keys (environment_id, event_type, key);
    CREATE INDEX idempotency_keys_age ON idempotency_keys (received_at);
    """,
    # 2: the pipeline: companies, users, keys, memberships, features,
    # allocations, usage counters, and the queue of pending events
    """
    CREATE INDEX events_pending ON events (id) WHERE status = 'pending';
    CREATE TABLE companies (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        name TEXT,
        traits TEXT NOT NULL DEFAULT '{}',
        last_seen_at INTEGER,
        billing_anchor INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX companies_env ON companies (environment_id, id);
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        name TEXT,
        traits TEXT NOT NULL DEFAULT '{}',
        last_seen_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX users_env ON users (environment_id, id);
    CREATE TABLE company_keys (
        environment_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (environment_id, key, value)
    ) WITHOUT ROWID;
    CREATE INDEX company_keys_entity ON company_keys (entity_id);
    CREATE TABLE user_keys (
        environment_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (environment_id, key, value)
    ) WITHOUT ROWID;
    CREATE INDEX user_keys_entity ON user_keys (entity_id);
    CREATE TABLE memberships (
        id TEXT NOT NULL UNIQUE,
        environment_id TEXT NOT NULL,
        company_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (company_id, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX memberships_user ON memberships (user_id);
    CREATE TABLE features (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        feature_type TEXT NOT NULL,
        event_subtype TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX features_subtype ON features (environment_id, event_subtype)
        WHERE event_subtype IS NOT NULL;
    CREATE TABLE allocations (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        company_id TEXT NOT NULL,
        feature_id TEXT NOT NULL,
        value_type TEXT NOT NULL,
        value_numeric INTEGER,
        value_bool INTEGER,
        metric_period TEXT,
        month_reset TEXT,
        notes TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (company_id, feature_id)
    );
    CREATE TABLE usage_counters (
        environment_id TEXT NOT NULL,
        company_id TEXT NOT NULL,
        subtype TEXT NOT NULL,
        period TEXT NOT NULL,
        period_start INTEGER NOT NULL,
        quantity INTEGER NOT NULL CHECK (typeof(quantity) = 'integer'),
        events INTEGER NOT NULL,
        PRIMARY KEY (company_id, subtype, period, period_start)
    ) WITHOUT ROWID;
    """,
    # 3: side effects: webhook endpoints, the outbox (one row per processing
    # transaction that had side effects), the notices endpoints want (each with
    # the payload its deliveries send), the one row per fired usage limit,
    # deliveries (webhooks and billing meter records) and their attempts
    """
    CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        request_types TEXT NOT NULL,
        feature_ids TEXT NOT NULL DEFAULT '[]',
        credit_ids TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL,
        status_reason TEXT,
        enabled_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX webhooks_env ON webhooks (environment_id, created_at);
    CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        notices TEXT,
        meter_records TEXT,
        notices_done INTEGER NOT NULL DEFAULT 0,
        meter_records_done INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE webhook_notices (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        action TEXT NOT NULL,
        object_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        company_id TEXT,
        feature_id TEXT,
        event_id TEXT,
        payload TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE limit_triggers (
        environment_id TEXT NOT NULL,
        company_id TEXT NOT NULL,
        feature_id TEXT NOT NULL,
        period TEXT NOT NULL,
        period_start INTEGER NOT NULL,
        action TEXT NOT NULL,
        event_id TEXT NOT NULL,
        usage INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (company_id, feature_id, period, period_start, action)
    ) WITHOUT ROWID;
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('webhook', 'billing')),
        webhook_id TEXT,
        notice_id TEXT,
        ref TEXT,
        request_type TEXT NOT NULL,
        payload TEXT,
        status TEXT NOT NULL,
        attempt_count INTEGER NOT NULL DEFAULT 0,
        response_code INTEGER,
        last_error TEXT,
        next_attempt_at INTEGER NOT NULL,
        lease_until INTEGER NOT NULL DEFAULT 0,
        leased_at INTEGER,
        sent_at INTEGER,
        finished_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE status = 'pending';
    CREATE INDEX deliveries_webhook ON deliveries (webhook_id, finished_at)
        WHERE webhook_id IS NOT NULL;
    CREATE INDEX deliveries_log ON deliveries (environment_id, id) WHERE kind = 'webhook';
    CREATE TABLE delivery_attempts (
        delivery_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        outcome TEXT NOT NULL,
        response_code INTEGER,
        error TEXT,
        PRIMARY KEY (delivery_id, number)
    ) WITHOUT ROWID;
    """,
    # 4: meter records are written whether or not a billing sink is set, so
    # pending billing deliveries may pile up ahead of webhooks: a loop that
    # claims webhooks only finds its due rows without walking past them
    """
    CREATE INDEX deliveries_due_kind ON deliveries (kind, next_attempt_at, id)
        WHERE status = 'pending';
    """,
    # 5: the web console: its sign-in sessions (a hash of the cookie's
    # token, never the token), and failed events by environment (the
    # console's failed view groups them; few rows, so the index is cheap)
    """
    CREATE TABLE console_sessions (
        token_hash TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        csrf_token TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
    CREATE INDEX events_failed ON events (environment_id, id) WHERE status = 'failed';
    """,
    # 6: one value per key name and entity (portable SQL, shared with PostgreSQL)
    ONE_VALUE_PER_KEY_NAME,
    # 7: event summaries, filled from the stored events (tally.storage.sql.summaries),
    # and the indexes of flat reads (EVENT_READ_INDEXES)
    (
        *statements(sql_summaries.schema(sqlite=True) + EVENT_READ_INDEXES),
        *sql_delivery_counts.SQLITE,
    ),
    # 8: duplicates
    # dropped against a stored event, for the console's event page
    # (storage/sql/duplicates.py); a row only for an event that had one
    """
    CREATE TABLE event_duplicates (
        event_id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        duplicates INTEGER NOT NULL,
        last_duplicate_at INTEGER NOT NULL
    );
    """,
    # 9: RETENTION_INDEXES (shared with PostgreSQL)
    RETENTION_INDEXES,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than the database; returns the new version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements(script) if isinstance(script, str) else script:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = number
    return version


OWNER_ONLY = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")


def restrict_files(path: str) -> None:
    """Make the database file readable and writable by its owner only (0600),
    whatever the umask: it holds webhook secrets and every event. A new file
    is created so before SQLite opens it; SQLite gives its ``-wal`` and
    ``-shm`` files the database file's mode. An existing database (and side
    files) of ours that others can read is tightened."""
    if path == ":memory:" or path.startswith("file:") or not path:
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
    except FileExistsError:
        pass
    else:
        os.fchmod(fd, OWNER_ONLY)  # the umask may have taken bits away
        os.close(fd)
    for name in (path, *(path + suffix for suffix in SIDE_FILES)):
        try:
            info = os.stat(name)
            if info.st_mode & 0o777 != OWNER_ONLY and info.st_uid == os.geteuid():
                os.chmod(name, OWNER_ONLY)
        except OSError:  # absent, or not ours to change
            continue


def connect(path: str, *, synchronous: str = "FULL", readonly: bool = False) -> sqlite3.Connection:
    restrict_files(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA cache_size=-65536")  # 64 MiB
    conn.execute("PRAGMA foreign_keys=ON")
    if readonly:
        conn.execute("PRAGMA query_only=1")
    return conn
