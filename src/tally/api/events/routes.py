"""Routes of the events API: ``/events``, ``/event-batch``, ``/batch``,
``/event-types``. The three writes are plain ASGI endpoints (``tally.api.asgi``):
the hot path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tally.api.asgi import Endpoint, Receive, Scope, Send, send_json
from tally.api.common.envelope import envelope, ok
from tally.api.common.errors import not_found
from tally.api.common.paging import page
from tally.api.common.routing import ApiRoute
from tally.api.events import shapes
from tally.api.events.openapi import EVENT
from tally.api.events.requests import event_filter, summary_filter, write_request
from tally.api.state import AppState
from tally.ingest.parse import (
    batch_refusal,
    parse_capture_batch,
    rule_create_event,
    rule_event_batch,
)
from tally.model import ApiKey, IngestResult, NewEvent, StoredEvent, stored_status
from tally.observe.metrics import metrics
from tally.observe.requests import note_stored


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


def _stored(key: ApiKey, events: Sequence[NewEvent], results: list[IngestResult]) -> None:
    """Count a request's events and tell its access line which it stored."""
    metrics().ingested(key.kind, events, results)
    note_stored(results)


async def create_event(scope: Scope, receive: Receive, send: Send) -> None:
    state, ctx, data = await write_request(scope, receive, capture=False)
    event, error = rule_create_event(data, ctx)
    events = [event]
    results = await state.storage.ingest(events)
    (result,) = results
    if error is not None and not result.duplicate:
        raise error  # refused, and no event holds its key: nothing was stored
    _stored(ctx.key, events, results)
    await send_json(send, 201, envelope(shapes.raw_event(result, ctx.remote_ip, ctx.user_agent)))


async def create_event_batch(scope: Scope, receive: Receive, send: Send) -> None:
    state, ctx, data = await write_request(scope, receive, capture=False)
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
    state, ctx, data = await write_request(scope, receive, capture=True)
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
    params: dict[str, Any] = {}
    where = event_filter(request, params)
    events = await state.storage.list_events(key.environment_id, where)
    names = await _preview_names(state, key.environment_id, events)
    return ok([shapes.event_detail(e, names) for e in events], params)


async def get_event(request: Request) -> Response:
    state: AppState = request.app.state.tally
    key = await state.auth.event_reader(request)
    event_id = request.path_params["event_id"]
    event = await state.storage.get_event(key.environment_id, event_id)
    if event is None:
        raise not_found("event", event_id)
    names = await _preview_names(state, key.environment_id, [event])
    return ok(shapes.event_detail(event, names))


async def event_summaries(request: Request) -> Response:
    state: AppState = request.app.state.tally
    key = await state.auth.event_reader(request)
    params: dict[str, Any] = {}
    q, subtypes = summary_filter(request, params)
    limit, offset = page(request, params)
    rows = await state.storage.event_summaries(key.environment_id, q, subtypes, limit, offset)
    return ok([shapes.event_summary(r, key.environment_id) for r in rows], params)


routes = [
    ApiRoute("POST", "/events", Endpoint(create_event), EVENT["create"]),
    ApiRoute("GET", "/events", list_events, EVENT["list"]),
    ApiRoute("GET", "/events/{event_id}", get_event, EVENT["get"]),
    ApiRoute("POST", "/event-batch", Endpoint(create_event_batch), EVENT["create_batch"]),
    ApiRoute("POST", "/batch", Endpoint(capture_batch), EVENT["capture_batch"]),
    ApiRoute("GET", "/event-types", event_summaries, EVENT["summaries"]),
]
