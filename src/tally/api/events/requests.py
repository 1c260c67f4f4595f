"""Reading the requests of the events API: who writes (the key, the headers
and the body, straight off the ASGI scope on the hot path) and the filters
of the event lists. Every refusal is ``Invalid`` with one sentence."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from tally.api.asgi import Receive, Scope, WriteHeaders, read_body
from tally.api.common.paging import page
from tally.api.common.params import query_list, query_str
from tally.api.state import AppState
from tally.errors import Invalid
from tally.ingest.parse import Context
from tally.model import EVENT_TYPES, EventFilter

MAX_VALUES = 100  # of event_types, event_subtypes


async def write_request(
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
    ctx = Context(
        key=key,
        received_at=state.clock.now(),
        remote_ip=headers.remote_ip,
        user_agent=headers.user_agent,
        max_event_body_bytes=state.settings.max_event_body_bytes,
    )
    return state, ctx, data


def event_filter(request: Request, params: dict[str, Any]) -> EventFilter:
    """``GET /events``' filter; what it was sent goes into ``params``."""
    event_types = query_list(request, "event_types")
    for kind in event_types:
        if kind not in EVENT_TYPES:
            raise Invalid(f"event_types must be among {', '.join(EVENT_TYPES)}, not {kind[:64]!r}")
    if len(event_types) > MAX_VALUES:
        raise Invalid(f"event_types takes at most {MAX_VALUES} values")
    texts = [
        (name, query_str(request, name, 255))
        for name in ("company_id", "user_id", "flag_id", "event_subtype", "idempotency_key")
    ]
    params.update((name, value) for name, value in texts if value is not None)
    if event_types:
        params["event_types"] = event_types
    limit, offset = page(request, params)
    company_id, user_id, flag_id, event_subtype, idempotency_key = (v for _, v in texts)
    return EventFilter(
        company_id=company_id,
        user_id=user_id,
        flag_id=flag_id,
        event_subtype=event_subtype,
        event_types=tuple(event_types),
        idempotency_key=idempotency_key,
        limit=limit,
        offset=offset,
    )


def summary_filter(request: Request, params: dict[str, Any]) -> tuple[str | None, list[str]]:
    """``GET /event-types``' search text and subtypes; what it was sent goes
    into ``params``."""
    q = query_str(request, "q", 512)
    subtypes = query_list(request, "event_subtypes", MAX_VALUES)
    if q is not None:
        params["q"] = q
    if subtypes:
        params["event_subtypes"] = subtypes
    return q, subtypes
