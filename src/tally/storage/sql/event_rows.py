"""An event's row as both backends' ingest writes it, and the look-up of
stored idempotency keys (portable SQL): SQLite inserts the rows
(``sqlite.storage.insert_events``), PostgreSQL copies them
(``postgres.storage.insert_events``)."""

from __future__ import annotations

from typing import Any

from tally.model import KEY_CHECKED, NewEvent, stored_status
from tally.storage.sql import placeholders

INSERT_EVENT_HEAD = (
    "INSERT INTO events (id, environment_id, type, subtype, status, body, quantity, "
    "idempotency_key, sent_at, captured_at, loaded_at, updated_at, trusted_client_clock, "
    "backfill, error_message, api_key_id, remote_ip, user_agent, company_id, user_id, flag_id, "
    "enriched_at, feature_ids)"
)
EVENT_COLUMNS = 23


def event_row(event_id: str, ev: NewEvent, loaded_at: int) -> tuple[Any, ...]:
    """The values of one row of ``INSERT_EVENT_HEAD`` for one event."""
    return (
        event_id,
        ev.environment_id,
        ev.type,
        ev.subtype,
        stored_status(ev.status),
        ev.body,
        ev.quantity,
        ev.idempotency_key,
        ev.sent_at,
        ev.captured_at,
        loaded_at,
        loaded_at,
        int(ev.trusted_client_clock),
        int(ev.backfill),
        ev.error_message,
        ev.api_key_id,
        ev.remote_ip,
        ev.user_agent,
        ev.company_id,
        ev.user_id,
        ev.flag_id,
        None,  # enriched_at and feature_ids: set when processed (``stored_processing``)
        None,
    )


Ident = tuple[str, str, str]  # environment, event type, idempotency key


def ident_of(ev: NewEvent) -> Ident | None:
    """The key scope of an event whose key is looked up (see ``KEY_CHECKED``)."""
    if ev.idempotency_key is None or ev.status not in KEY_CHECKED:
        return None
    return (ev.environment_id, ev.type, ev.idempotency_key)


def stored_keys(conn: Any, idents: set[Ident]) -> dict[Ident, tuple[str, int, int]]:
    """(event id, captured_at, received_at) of the stored keys among ``idents``,
    in one query per environment and event type (portable SQL)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for env, kind, key in idents:
        groups.setdefault((env, kind), []).append(key)
    found: dict[Ident, tuple[str, int, int]] = {}
    for (env, kind), keys in groups.items():
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = conn.execute(
                "SELECT key, event_id, captured_at, received_at FROM idempotency_keys "
                f"WHERE environment_id = ? AND event_type = ? AND key IN ({placeholders(len(chunk))})",
                (env, kind, *chunk),
            ).fetchall()
            for key, event_id, captured_at, received_at in rows:
                found[(env, kind, key)] = (event_id, captured_at, received_at)
    return found
