"""The events pages: the live list with its filters, one event's journey,
and failed events grouped by error message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tally import ids
from tally.clock import to_micros
from tally.console.format import iso, num
from tally.errors import Invalid, NotFound
from tally.ingest.timeparse import parse_timestamp
from tally.model import EVENT_TYPES, EventFilter, StoredEvent
from tally.storage.base_console import ConsoleSession
from tally.storage.base_entities import EntityFilter

if TYPE_CHECKING:
    from tally.console.app import Console

PAGE_ROWS = 50
LIVE_ROWS = 50  # at most this many new rows per poll: past it the list samples
STATUSES = ("pending", "processed", "failed")
RANGES = {
    "15m": ("last 15 minutes", 15 * 60),
    "1h": ("last hour", 3600),
    "24h": ("last 24 hours", 86400),
    "7d": ("last 7 days", 7 * 86400),
    "30d": ("last 30 days", 30 * 86400),
}
TEXT_FILTERS = ("subtype", "company", "user", "idempotency_key")
MAX_TEXT = 255


@dataclass(frozen=True, slots=True)
class EventQuery:
    """The list's filters, as the form sent them."""

    values: dict[str, str]
    where: EventFilter

    @property
    def active(self) -> bool:
        return any(self.values.values())

    def query_string(self, **extra: str) -> str:
        return urlencode({k: v for k, v in {**self.values, **extra}.items() if v})


def _time(request: Request, name: str) -> tuple[str, int | None]:
    raw = (request.query_params.get(name) or "").strip()
    if not raw:
        return "", None
    if len(raw) > 64:
        raise Invalid(f"{name} must be an ISO-8601 time")
    return raw, to_micros(parse_timestamp(raw, name))


def parse_query(request: Request, now_us: int) -> EventQuery:
    """The filters of the query string (``Invalid`` for values that cannot be)."""
    params = request.query_params
    values: dict[str, str] = {}
    for name in TEXT_FILTERS:
        value = (params.get(name) or "").strip()
        if len(value) > MAX_TEXT:
            raise Invalid(f"{name} must be at most {MAX_TEXT} characters")
        values[name] = value
    kind = params.get("type") or ""
    if kind and kind not in EVENT_TYPES:
        raise Invalid(f"type must be one of {', '.join(EVENT_TYPES)}")
    status = params.get("status") or ""
    if status and status not in STATUSES:
        raise Invalid(f"status must be one of {', '.join(STATUSES)}")
    span = params.get("range") or ""
    if span and span not in RANGES:
        raise Invalid("range must be one of " + ", ".join(RANGES))
    values.update(type=kind, status=status, range=span)
    values["from"], start = _time(request, "from")
    values["to"], end = _time(request, "to")
    before = (params.get("before") or "").strip()
    if len(before) > 64:
        raise Invalid("before must be an event id")
    values["before"] = before
    if span:
        since = now_us - RANGES[span][1] * 1_000_000
        start = since if start is None else max(start, since)
    where = EventFilter(
        company_id=values["company"] or None,
        user_id=values["user"] or None,
        event_subtype=values["subtype"] or None,
        event_types=(kind,) if kind else (),
        idempotency_key=values["idempotency_key"] or None,
        status=status or None,
        id_min=ids.first_id_at("evt", start) if start is not None else None,
        id_max=_earliest(ids.first_id_at("evt", end) if end is not None else None, before or None),
        limit=PAGE_ROWS,
    )
    return EventQuery(values, where)


def _earliest(a: str | None, b: str | None) -> str | None:
    return min(a, b) if a is not None and b is not None else a or b


def _names(names: dict[tuple[str, str], str], kind: str, object_id: str | None) -> str:
    if object_id is None:
        return ""
    return names.get((kind, object_id), object_id)


async def _preview(c: Console, environment_id: str, events: Sequence[StoredEvent]) -> Any:
    return await c.storage.preview_names(
        environment_id,
        [f for e in events for f in e.feature_ids],
        [e.company_id for e in events if e.company_id],
        [e.user_id for e in events if e.user_id],
    )


def row(event: StoredEvent, names: dict[tuple[str, str], str]) -> dict[str, Any]:
    """One row of the list, as the template and the live script draw it."""
    return {
        "id": event.id,
        "captured_at": iso(event.captured_at),
        "type": event.type,
        "subtype": event.subtype or "",
        "status": event.status,
        "company_id": event.company_id or "",
        "company": _names(names, "company", event.company_id),
        "user_id": event.user_id or "",
        "user": _names(names, "user", event.user_id),
        "quantity": num(event.quantity) if event.type == "track" else "",
        "error": (event.error_message or "")[:200],
    }


def _now(c: Console) -> int:
    return to_micros(c.clock.now())


async def _entity_id(c: Console, env: str, kind: str, value: str | None) -> str | None:
    """The id of the company or user a filter names: its id, or a key value
    (``acme``, an email) that exactly one of them has."""
    prefix, search = (
        ("comp_", c.storage.list_companies)
        if kind == "company"
        else ("user_", c.storage.list_users)
    )
    if value is None or value.startswith(prefix):
        return value
    found = await search(env, EntityFilter(q=value, limit=100))
    exact = [e.id for e in found if any(k.value == value for k in e.keys)]
    if len(exact) > 1:
        raise Invalid(f"{len(exact)} {kind} records have a key {value!r}: filter by the id")
    return exact[0] if exact else value


async def resolved_query(c: Console, request: Request, env: str) -> EventQuery:
    """``parse_query``, with company and user filters given as key values
    turned into ids."""
    query = parse_query(request, _now(c))
    where = replace(
        query.where,
        company_id=await _entity_id(c, env, "company", query.where.company_id),
        user_id=await _entity_id(c, env, "user", query.where.user_id),
    )
    return EventQuery(query.values, where)


async def events_page(c: Console, request: Request, session: ConsoleSession) -> Response:
    env = session.key.environment_id
    query = await resolved_query(c, request, env)
    events = await c.storage.list_events(env, query.where)
    counts = await c.storage.count_events_by_status(env, replace(query.where, status=None))
    names = await _preview(c, env, events)
    anything = bool(events) or query.active or bool(sum(counts.values()))
    return c.render(
        request,
        session,
        "events.html",
        rows=[row(e, names) for e in events],
        counts={s: counts.get(s, 0) for s in STATUSES},
        total=sum(counts.values()),
        query=query,
        ranges=RANGES,
        statuses=STATUSES,
        event_types=EVENT_TYPES,
        empty=not anything,
        base_url=c.base_url(request),
        older=events[-1].id if len(events) == PAGE_ROWS else "",
        newest=events[0].id if events else "",
    )


async def live_events(c: Console, request: Request, session: ConsoleSession) -> Response:
    """New events of the list's filters since ``newer_than`` (at most
    ``LIVE_ROWS`` of them, the newest), how many there were, and, with
    ``counts=1``, the counts per status."""
    env = session.key.environment_id
    query = await resolved_query(c, request, env)
    newer_than = request.query_params.get("newer_than") or ""
    if len(newer_than) > 64:
        raise Invalid("newer_than must be an event id")
    where = replace(query.where, newer_than=newer_than or None, limit=LIVE_ROWS)
    events = await c.storage.list_events(env, where)
    if len(events) < LIVE_ROWS:
        new = len(events)
    else:
        new = sum((await c.storage.count_events_by_status(env, where)).values())
    names = await _preview(c, env, events)
    body: dict[str, Any] = {
        "rows": [row(e, names) for e in events],
        "new": new,
        "newest": events[0].id if events else newer_than,
    }
    if request.query_params.get("counts") == "1":
        counts = await c.storage.count_events_by_status(env, replace(query.where, status=None))
        body["counts"] = {s: counts.get(s, 0) for s in STATUSES}
        body["total"] = sum(counts.values())
    return JSONResponse(body)


CLOCK_NOTES = {
    "trusted": "taken from the client's clock (trusted_client_clock)",
    "backfill": "taken from the client's clock (backfill: fires no webhooks or meter records)",
    "server": "the time tally received it",
}


def timeline(event: StoredEvent) -> list[dict[str, Any]]:
    """The event's journey: each stage's time and the delay since the one before."""
    stages = [
        ("sent_at", "sent by the client", event.sent_at),
        ("captured_at", "captured", event.captured_at),
        ("loaded_at", "stored (loaded)", event.loaded_at),
        ("enriched_at", "processed (enriched)", event.enriched_at),
        ("updated_at", "last updated", event.updated_at),
    ]
    out = []
    previous: int | None = None
    for name, label, at in stages:
        delay = at - previous if at is not None and previous is not None else None
        out.append({"name": name, "label": label, "at": at, "delay": delay})
        previous = at if at is not None else previous
    return out


async def event_page(c: Console, request: Request, session: ConsoleSession) -> Response:
    env = session.key.environment_id
    event_id = request.path_params["event_id"]
    event = await c.storage.get_event(env, event_id[:64])
    if event is None:
        raise NotFound(f"event {event_id[:64]!r} was not found in this environment")
    names = await _preview(c, env, [event])
    clock = "trusted" if event.trusted_client_clock else "backfill" if event.backfill else "server"
    return c.render(
        request,
        session,
        "event.html",
        event=event,
        stages=timeline(event),
        clock_note=CLOCK_NOTES[clock],
        company_name=_names(names, "company", event.company_id),
        user_name=_names(names, "user", event.user_id),
        features=[(f, names.get(("feature", f), f)) for f in event.feature_ids],
        duplicates=await c.storage.duplicates_dropped(env, event.id),
        received_at=ids.made_at_micros(event.id),
        key_guard_until=ids.made_at_micros(event.id) + 24 * 3600 * 1_000_000,
        nav="events",
    )


async def failed_page(c: Console, request: Request, session: ConsoleSession) -> Response:
    env = session.key.environment_id
    span = request.query_params.get("range") or "7d"
    if span not in RANGES:
        raise Invalid("range must be one of " + ", ".join(RANGES))
    since = _now(c) - RANGES[span][1] * 1_000_000
    groups = await c.storage.failed_event_groups(env, ids.first_id_at("evt", since), 100)
    return c.render(
        request,
        session,
        "failed.html",
        groups=[
            {
                "message": g.error_message,
                "count": g.count,
                "first_at": ids.made_at_micros(g.first_id),
                "last_at": ids.made_at_micros(g.last_id),
                "last_id": g.last_id,
            }
            for g in groups
        ],
        total=sum(g.count for g in groups),
        range=span,
        ranges=RANGES,
    )


pages = [
    ("/events", events_page, ["GET"]),
    ("/events/{event_id}", event_page, ["GET"]),
    ("/failed", failed_page, ["GET"]),
]
data = [("/events", live_events, ["GET"])]
