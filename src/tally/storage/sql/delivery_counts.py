"""``GET /webhook-events/count`` without counting the delivery log: a count
per (environment, endpoint, request type) of webhook deliveries, kept by
triggers on ``deliveries`` (migration 7), so that every writer of the log
(fan-out, test deliveries, retention's pruning) keeps it right without
knowing of it. A count sums the few rows its filter selects; a filter by
delivery ids counts those rows (at most a request's worth).

SQLite counts in a row trigger, PostgreSQL in a statement trigger over the
statement's new or old rows (one upsert per statement and endpoint).
Deliveries never change environment, kind, endpoint or request type, so
inserts and deletes are all the triggers need."""

from __future__ import annotations

_TABLE = """
CREATE TABLE delivery_counts (
    environment_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    request_type TEXT NOT NULL,
    deliveries BIGINT NOT NULL,
    PRIMARY KEY (environment_id, webhook_id, request_type)
)"""
_BACKFILL = """
INSERT INTO delivery_counts (environment_id, webhook_id, request_type, deliveries)
SELECT environment_id, COALESCE(webhook_id, ''), request_type, COUNT(*) FROM deliveries
WHERE kind = 'webhook' GROUP BY environment_id, COALESCE(webhook_id, ''), request_type"""

SQLITE: tuple[str, ...] = (
    _TABLE,
    _BACKFILL,
    """
CREATE TRIGGER deliveries_counted AFTER INSERT ON deliveries WHEN NEW.kind = 'webhook' BEGIN
    INSERT INTO delivery_counts (environment_id, webhook_id, request_type, deliveries)
    VALUES (NEW.environment_id, COALESCE(NEW.webhook_id, ''), NEW.request_type, 1)
    ON CONFLICT (environment_id, webhook_id, request_type)
    DO UPDATE SET deliveries = deliveries + 1;
END""",
    """
CREATE TRIGGER deliveries_uncounted AFTER DELETE ON deliveries WHEN OLD.kind = 'webhook' BEGIN
    UPDATE delivery_counts SET deliveries = deliveries - 1
    WHERE environment_id = OLD.environment_id AND webhook_id = COALESCE(OLD.webhook_id, '')
    AND request_type = OLD.request_type;
END""",
)

POSTGRES: tuple[str, ...] = (
    _TABLE,
    _BACKFILL,
    """
CREATE FUNCTION tally_count_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO delivery_counts (environment_id, webhook_id, request_type, deliveries)
        SELECT environment_id, COALESCE(webhook_id, ''), request_type, COUNT(*)
        FROM new_rows WHERE kind = 'webhook' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (environment_id, webhook_id, request_type)
        DO UPDATE SET deliveries = delivery_counts.deliveries + excluded.deliveries;
    ELSE
        UPDATE delivery_counts c SET deliveries = c.deliveries - o.n
        FROM (SELECT environment_id, COALESCE(webhook_id, '') AS w, request_type, COUNT(*) AS n
              FROM old_rows WHERE kind = 'webhook' GROUP BY 1, 2, 3) o
        WHERE c.environment_id = o.environment_id AND c.webhook_id = o.w
        AND c.request_type = o.request_type;
    END IF;
    RETURN NULL;
END $$""",
    """
CREATE TRIGGER deliveries_counted AFTER INSERT ON deliveries REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION tally_count_deliveries()""",
    """
CREATE TRIGGER deliveries_uncounted AFTER DELETE ON deliveries REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION tally_count_deliveries()""",
)
