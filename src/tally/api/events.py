"""Routes of the events API: ``/events``, ``/event-batch``, ``/batch``,
``/event-types``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tally.api import shapes
from tally.api.asgi import Endpoint, Receive, Scope, Send, WriteHeaders, read_body, send_json
from tally.api.http import envelope, ok, query_int, query_list, query_str
from tally.api.state import AppState
from tally.errors import Invalid, NotFound
from tally.ingest.parse import (
    Context,
    batch_refusal,
    parse_capture_batch,
    rule_create_event,
    rule_event_batch,
)
from tally.model import (
    EVENT_TYPES,
    ApiKey,
    EventFilter,
    IngestResult,
    NewEvent,
    StoredEvent,
    stored_status,
)
from tally.observe.metrics import metrics
from tally.observe.requests import note_stored

MAX_LIMIT = 250


def _context(state: AppState, headers: WriteHeaders, key: ApiKey) -> Context:
    return Context(
        key=key,
        received_at=state.clock.now(),
        remote_ip=headers.remote_ip,
        user_agent=headers.user_agent,
        max_event_body_bytes=state.settings.max_event_body_bytes,
    )


async def _preview_names(
    state: AppState, environment_id: str, events: Sequence[StoredEvent]
) -> shapes.Names:
    """Names of the features, companies and users of ``events``, in one query."""
    return await state.storage.preview_names(
        environment_id,
        (f for e in events for f in e.feature_ids),
        (e.company_id for e in events if e.company_id is not None),
        (e.user_id for e in events if e.user_id is not None),
    )


async def _write_request(
    scope: Scope, receive: Receive, *, capture: bool
) -> tuple[AppState, Context, bytes]:
    """Who sends what: the key (a writer's, except on the capture call,
    which stores a read-only key's events as failed), the body and the
    receipt time."""
    state: AppState = scope["app"].state.tally
    headers = WriteHeaders(scope)
    if capture:
        key = await state.auth.resolve(headers.api_key)
    else:
        key = await state.auth.writer(headers.api_key)
    data = await read_body(receive, headers.content_length, state.settings.max_request_bytes)
    return state, _context(state, headers, key), data


def _stored(key: ApiKey, events: Sequence[NewEvent], results: list[IngestResult]) -> None:
    """Count a request's events and tell its access line which it stored."""
    metrics().ingested(key.kind, events, results)
    note_stored(results)


async def create_event(scope: Scope, receive: Receive, send: Send) -> None:
    state, ctx, data = await _write_request(scope, receive, capture=False)
    event, error = rule_create_event(data, ctx)
    events = [event]
    results = await state.storage.ingest(events)
    (result,) = results
    if error is not None and not result.duplicate:
        raise error  # refused, and no event holds its key: nothing was stored
    _stored(ctx.key, events, results)
    await send_json(send, 201, envelope(shapes.raw_event(result, ctx.remote_ip, ctx.user_agent)))


async def create_event_batch(scope: Scope, receive: Receive, send: Send) -> None:
    state, ctx, data = await _write_request(scope, receive, capture=False)
    events, refusals = rule_event_batch(data, ctx)
    results = await state.storage.ingest(events)
    for index, error in sorted(refusals.items()):
        if not results[index].duplicate:
            raise batch_refusal(index, error)  # storage stored none of the batch
    _stored(ctx.key, events, results)
    payload = shapes.EventBatchResponseData(
        events=[shapes.raw_event(r, ctx.remote_ip, ctx.user_agent) for r in results]
    )
    await send_json(send, 201, envelope(payload))


async def capture_batch(scope: Scope, receive: Receive, send: Send) -> None:
    state, ctx, data = await _write_request(scope, receive, capture=True)
    events = parse_capture_batch(data, ctx)
    results = await state.storage.ingest(events)
    _stored(ctx.key, events, results)
    payload = shapes.CaptureBatchResponseData(
        events=[
            shapes.CaptureEventResult(
                event_id=r.event_id,
                status="duplicate" if r.duplicate else stored_status(e.status),
                duplicate=r.duplicate,
                error_message=None if r.duplicate else e.error_message,
            )
            for e, r in zip(events, results, strict=True)
        ]
    )
    await send_json(send, 200, envelope(payload))


async def list_events(request: Request) -> Response:
    state: AppState = request.app.state.tally
    key = await state.auth.event_reader(request)
    event_types = query_list(request, "event_types")
    for kind in event_types:
        if kind not in EVENT_TYPES:
            raise Invalid(f"event_types must be among {', '.join(EVENT_TYPES)}, not {kind[:64]!r}")
    if len(event_types) > 100:
        raise Invalid("event_types takes at most 100 values")
    where = EventFilter(
        company_id=query_str(request, "company_id", 255),
        user_id=query_str(request, "user_id", 255),
        flag_id=query_str(request, "flag_id", 255),
        event_subtype=query_str(request, "event_subtype", 255),
        event_types=tuple(event_types),
        idempotency_key=query_str(request, "idempotency_key", 255),
        limit=query_int(request, "limit", 100, 0, MAX_LIMIT),
        offset=query_int(request, "offset", 0, 0, 2**31),
    )
    events = await state.storage.list_events(key.environment_id, where)
    params: dict[str, Any] = {
        name: value
        for name, value in (
            ("company_id", where.company_id),
            ("user_id", where.user_id),
            ("flag_id", where.flag_id),
            ("event_subtype", where.event_subtype),
            ("idempotency_key", where.idempotency_key),
        )
        if value is not None
    }
    if event_types:
        params["event_types"] = event_types
    params["limit"] = where.limit
    params["offset"] = where.offset
    names = await _preview_names(state, key.environment_id, events)
    return ok([shapes.event_detail(e, names) for e in events], params)


async def get_event(request: Request) -> Response:
    state: AppState = request.app.state.tally
    key = await state.auth.event_reader(request)
    event_id = request.path_params["event_id"]
    event = await state.storage.get_event(key.environment_id, event_id)
    if event is None:
        raise NotFound(f"event {event_id[:64]!r} was not found in this environment")
    names = await _preview_names(state, key.environment_id, [event])
    return ok(shapes.event_detail(event, names))


async def event_summaries(request: Request) -> Response:
    state: AppState = request.app.state.tally
    key = await state.auth.event_reader(request)
    q = query_str(request, "q", 512)
    subtypes = query_list(request, "event_subtypes")
    if len(subtypes) > 100:
        raise Invalid("event_subtypes takes at most 100 values")
    limit = query_int(request, "limit", 100, 0, MAX_LIMIT)
    offset = query_int(request, "offset", 0, 0, 2**31)
    rows = await state.storage.event_summaries(key.environment_id, q, subtypes, limit, offset)
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if q is not None:
        params["q"] = q
    if subtypes:
        params["event_subtypes"] = subtypes
    return ok([shapes.event_summary(r, key.environment_id) for r in rows], params)


routes = [
    Route("/events", Endpoint(create_event), methods=["POST"]),
    Route("/events", list_events, methods=["GET"]),
    Route("/events/{event_id}", get_event, methods=["GET"]),
    Route("/event-batch", Endpoint(create_event_batch), methods=["POST"]),
    Route("/batch", Endpoint(capture_batch), methods=["POST"]),
    Route("/event-types", event_summaries, methods=["GET"]),
]
