"""Response shapes of the Schematic events API, as msgspec structs.

Field names and required/optional split follow ``schematichq==1.4.6``'s
models; optional fields left ``None`` are omitted from the JSON.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from tally.api.common.shapes import opt_time
from tally.clock import format_micros
from tally.model import EventSummary, IngestResult, StoredEvent

BODY_PREVIEW_CHARS = 200


class RawEventResponseData(msgspec.Struct, omit_defaults=True):
    captured_at: str
    remote_ip: str
    user_agent: str
    event_id: str | None = None
    remote_addr: str | None = None
    # a retry dropped as the duplicate of ``event_id`` (a field the SDKs ignore)
    duplicate: bool = False


class PreviewObject(msgspec.Struct):
    id: str
    name: str


class EventDetailResponseData(msgspec.Struct, omit_defaults=True):
    id: str
    type: str
    status: str
    body: msgspec.Raw
    body_preview: str
    captured_at: str
    quantity: int
    feature_ids: list[str]
    features: list[PreviewObject]
    environment_id: str | None = None
    subtype: str | None = None
    company_id: str | None = None
    user_id: str | None = None
    company: PreviewObject | None = None
    user: PreviewObject | None = None
    idempotency_key: str | None = None
    sent_at: str | None = None
    loaded_at: str | None = None
    enriched_at: str | None = None
    processed_at: str | None = None
    updated_at: str | None = None
    error_message: str | None = None


class EventSummaryResponseData(msgspec.Struct, omit_defaults=True):
    event_subtype: str
    event_count: int
    company_count: int
    user_count: int
    environment_id: str
    last_seen_at: str | None = None


class CaptureEventResult(msgspec.Struct, omit_defaults=True):
    event_id: str
    status: str
    duplicate: bool = False
    error_message: str | None = None


class CaptureBatchResponseData(msgspec.Struct):
    events: list[CaptureEventResult]


class EventBatchResponseData(msgspec.Struct):
    events: list[RawEventResponseData]


def body_preview(body: str) -> str:
    if len(body) <= BODY_PREVIEW_CHARS:
        return body
    return body[: BODY_PREVIEW_CHARS - 1] + "…"


def raw_event(result: IngestResult, remote_ip: str, user_agent: str) -> RawEventResponseData:
    return RawEventResponseData(
        captured_at=format_micros(result.captured_at),
        remote_ip=remote_ip,
        user_agent=user_agent,
        event_id=result.event_id,
        remote_addr=remote_ip,
        duplicate=result.duplicate,
    )


Names = Mapping[tuple[str, str], str]  # (feature|company|user, id) → name


def _preview(names: Names, kind: str, object_id: str | None) -> PreviewObject | None:
    if object_id is None:
        return None
    return PreviewObject(id=object_id, name=names.get((kind, object_id), object_id))


def event_detail(event: StoredEvent, names: Names | None = None) -> EventDetailResponseData:
    """``names`` (from ``preview_names``) name the feature, company and user
    previews; an object without a name (deleted, say) is named by its id."""
    names = names or {}
    return EventDetailResponseData(
        id=event.id,
        type=event.type,
        status=event.status,
        body=msgspec.Raw(event.body.encode("utf-8")),
        body_preview=body_preview(event.body),
        captured_at=format_micros(event.captured_at),
        quantity=event.quantity,
        feature_ids=list(event.feature_ids),
        features=[
            PreviewObject(id=f, name=names.get(("feature", f), f)) for f in event.feature_ids
        ],
        environment_id=event.environment_id,
        subtype=event.subtype,
        company_id=event.company_id,
        user_id=event.user_id,
        company=_preview(names, "company", event.company_id),
        user=_preview(names, "user", event.user_id),
        idempotency_key=event.idempotency_key,
        sent_at=opt_time(event.sent_at),
        loaded_at=format_micros(event.loaded_at),
        enriched_at=opt_time(event.enriched_at),
        processed_at=opt_time(event.enriched_at) if event.status == "processed" else None,
        updated_at=format_micros(event.updated_at),
        error_message=event.error_message,
    )


def event_summary(summary: EventSummary, environment_id: str) -> EventSummaryResponseData:
    return EventSummaryResponseData(
        event_subtype=summary.event_subtype,
        event_count=summary.event_count,
        company_count=summary.company_count,
        user_count=summary.user_count,
        environment_id=environment_id,
        last_seen_at=opt_time(summary.last_seen_at),
    )
