"""PostgreSQL schema: the same tables as SQLite's, as numbered migrations
tracked in ``tally_schema``. Times are BIGINT microseconds since the epoch
(UTC), as on SQLite, so that one set of SQL serves both."""

from __future__ import annotations

from tally.storage.postgres.adapter import PgConnection
from tally.storage.postgres.stats import analyze, schema_tables
from tally.storage.sql import delivery_counts as sql_delivery_counts
from tally.storage.sql import summaries as sql_summaries
from tally.storage.sqlite.schema import (
    EVENT_READ_INDEXES,
    ONE_VALUE_PER_KEY_NAME,
    RETENTION_INDEXES,
    statements,
)

MIGRATIONS: list[str | tuple[str, ...]] = [
    # 1: environments, keys, events, idempotency keys
    """
    CREATE TABLE environments (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL REFERENCES environments(id),
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('secret', 'publishable')),
        read_only INTEGER NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        type TEXT NOT NULL,
        subtype TEXT,
        status TEXT NOT NULL,
        body TEXT NOT NULL,
        quantity BIGINT NOT NULL,
        idempotency_key TEXT,
        sent_at BIGINT,
        captured_at BIGINT NOT NULL,
        loaded_at BIGINT NOT NULL,
        enriched_at BIGINT,
        updated_at BIGINT NOT NULL,
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
        captured_at BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        PRIMARY KEY (environment_id, event_type, key)
    );
    CREATE INDEX idempotency_keys_age ON idempotency_keys (received_at);
    """,
    # 2: the pipeline
    """
    CREATE INDEX events_pending ON events (id) WHERE status = 'pending';
    CREATE TABLE companies (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        name TEXT,
        traits TEXT NOT NULL DEFAULT '{}',
        last_seen_at BIGINT,
        billing_anchor BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX companies_env ON companies (environment_id, id);
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        name TEXT,
        traits TEXT NOT NULL DEFAULT '{}',
        last_seen_at BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX users_env ON users (environment_id, id);
    CREATE TABLE company_keys (
        environment_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (environment_id, key, value)
    );
    CREATE INDEX company_keys_entity ON company_keys (entity_id);
    CREATE TABLE user_keys (
        environment_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (environment_id, key, value)
    );
    CREATE INDEX user_keys_entity ON user_keys (entity_id);
    CREATE TABLE memberships (
        id TEXT NOT NULL UNIQUE,
        environment_id TEXT NOT NULL,
        company_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (company_id, user_id)
    );
    CREATE INDEX memberships_user ON memberships (user_id);
    CREATE TABLE features (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        feature_type TEXT NOT NULL,
        event_subtype TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX features_subtype ON features (environment_id, event_subtype)
        WHERE event_subtype IS NOT NULL;
    CREATE TABLE allocations (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        company_id TEXT NOT NULL,
        feature_id TEXT NOT NULL,
        value_type TEXT NOT NULL,
        value_numeric BIGINT,
        value_bool INTEGER,
        metric_period TEXT,
        month_reset TEXT,
        notes TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        UNIQUE (company_id, feature_id)
    );
    CREATE TABLE usage_counters (
        environment_id TEXT NOT NULL,
        company_id TEXT NOT NULL,
        subtype TEXT NOT NULL,
        period TEXT NOT NULL,
        period_start BIGINT NOT NULL,
        quantity BIGINT NOT NULL,
        events BIGINT NOT NULL,
        PRIMARY KEY (company_id, subtype, period, period_start)
    );
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
        enabled_at BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX webhooks_env ON webhooks (environment_id, created_at);
    CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        notices TEXT,
        meter_records TEXT,
        notices_done INTEGER NOT NULL DEFAULT 0,
        meter_records_done INTEGER NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL
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
        created_at BIGINT NOT NULL
    );
    CREATE TABLE limit_triggers (
        environment_id TEXT NOT NULL,
        company_id TEXT NOT NULL,
        feature_id TEXT NOT NULL,
        period TEXT NOT NULL,
        period_start BIGINT NOT NULL,
        action TEXT NOT NULL,
        event_id TEXT NOT NULL,
        usage BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (company_id, feature_id, period, period_start, action)
    );
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
        next_attempt_at BIGINT NOT NULL,
        lease_until BIGINT NOT NULL DEFAULT 0,
        leased_at BIGINT,
        sent_at BIGINT,
        finished_at BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE status = 'pending';
    CREATE INDEX deliveries_webhook ON deliveries (webhook_id, finished_at)
        WHERE webhook_id IS NOT NULL;
    CREATE INDEX deliveries_log ON deliveries (environment_id, id) WHERE kind = 'webhook';
    CREATE TABLE delivery_attempts (
        delivery_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        started_at BIGINT NOT NULL,
        finished_at BIGINT,
        outcome TEXT NOT NULL,
        response_code INTEGER,
        error TEXT,
        PRIMARY KEY (delivery_id, number)
    );
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
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
    CREATE INDEX events_failed ON events (environment_id, id) WHERE status = 'failed';
    """,
    # 6: one value per key name and entity
    ONE_VALUE_PER_KEY_NAME,
    # 7: event summaries and the indexes of flat reads (see sqlite/schema.py)
    (
        *statements(sql_summaries.schema(sqlite=False) + EVENT_READ_INDEXES),
        *sql_delivery_counts.POSTGRES,
    ),
    # 8: duplicates
    # dropped against a stored event, for the console's event page
    # (storage/sql/duplicates.py); a row only for an event that had one
    """
    CREATE TABLE event_duplicates (
        event_id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        duplicates BIGINT NOT NULL,
        last_duplicate_at BIGINT NOT NULL
    );
    """,
    # 9: RETENTION_INDEXES (shared with PostgreSQL)
    RETENTION_INDEXES,
    # 10: room on each page for the rows processing rewrites. Every batch
    # updates most counters, and companies' and users' last_seen_at; none of
    # those columns is indexed, so PostgreSQL can write the new row version on
    # the same page without touching an index (a HOT update), but only where
    # the page has room: full pages made half the counter updates and 88% of
    # the companies' go to another page and add an entry to every index (a
    # 200K-event drain: the counter upsert took 28% less time with room).
    # New pages keep the room; a page written before fills as it is rewritten.
    """
    ALTER TABLE usage_counters SET (fillfactor = 50);
    ALTER TABLE companies SET (fillfactor = 50);
    ALTER TABLE users SET (fillfactor = 70);
    """,
]

_LOCK_ID = 7_411_873_101  # pg_advisory_xact_lock: one migrator at a time


def migrate(conn: PgConnection) -> int:
    """Apply every migration newer than the database; returns the new version.
    Safe when several processes start at once (an advisory lock serializes them).
    The tables are analyzed after any migration, so that the planner never
    meets a changed schema without statistics."""
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_ID,))
        conn.execute("CREATE TABLE IF NOT EXISTS tally_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM tally_schema").fetchone()
        if row is None:
            conn.execute("INSERT INTO tally_schema (version) VALUES (0)")
            version = 0
        else:
            version = int(row[0])
        applied = False
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            for statement in statements(script) if isinstance(script, str) else script:
                conn.execute(statement)
            conn.execute("UPDATE tally_schema SET version = ?", (number,))
            applied, version = True, number
        if applied:
            analyze(conn, schema_tables(conn))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return version
