"""Turn request bytes into ``NewEvent`` records, applying every ingestion rule.

Pure: the caller passes the key, the receipt time and the client's address.
REST calls (``/events``, ``/event-batch``) refuse a bad event with an error;
the capture call (``/batch``) keeps a bad event as a ``failed`` record so that
the valid events beside it are stored and the SDK does not retry the batch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from tally.clock import to_micros
from tally.errors import Forbidden, Invalid, TallyError, TooLarge
from tally.ingest import rules, wire
from tally.ingest.timeparse import parse_timestamp
from tally.jsontext import has_nul, nesting_message, nests_deeper, nul_message
from tally.model import EVENT_TYPES, FAILING, PENDING, REFUSED, ApiKey, NewEvent

MAX_EVENT_BATCH = 1000
MAX_CAPTURE_BATCH = 100
_TYPES_TEXT = ", ".join(EVENT_TYPES)


class BatchTooLarge(Invalid):
    """A capture batch with more events than the SDK contract allows."""

    def __init__(self, max_size: int) -> None:
        super().__init__("batch too large")
        self.max_size = max_size


class Context:
    """Who sent the request, and when it arrived (read-only by convention;
    a plain slotted class: one is built per request on the hot path)."""

    __slots__ = (
        "key",
        "max_event_body_bytes",
        "received_at",
        "received_us",
        "remote_ip",
        "user_agent",
    )

    def __init__(
        self,
        key: ApiKey,
        received_at: datetime,
        remote_ip: str = "",
        user_agent: str = "",
        max_event_body_bytes: int = 32 * 1024,
    ) -> None:
        self.key = key
        self.received_at = received_at
        self.received_us = to_micros(received_at)
        self.remote_ip = remote_ip
        self.user_agent = user_agent
        self.max_event_body_bytes = max_event_body_bytes


def describe_validation(err: msgspec.ValidationError, root: str) -> str:
    text = str(err).replace("`$.", f"`{root}.").replace("`$`", f"`{root}`")
    if text.endswith(" - at `$`"):
        text = text[: -len(" - at `$`")]
    return text


def decode_json(data: bytes, decoder: msgspec.json.Decoder[Any], what: str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as err:  # ValidationError is a DecodeError
        if isinstance(err, msgspec.ValidationError):
            raise Invalid(f"{what} is invalid: {describe_validation(err, what)}") from None
        raise Invalid(
            f"{what} is not valid JSON: {err}".replace("JSON is malformed: ", "")
        ) from None
    except RecursionError:
        raise Invalid(nesting_message(what)) from None


class KeyedRefusal(Exception):
    """A rule refused an event that carries a valid type and idempotency key.
    Its key may be held by the event it retries, which makes it a duplicate
    before anything else (README, "Retries"): storage decides, with ``event``
    (status ``refused``) standing in for it."""

    def __init__(self, error: TallyError, event: NewEvent) -> None:
        super().__init__(error.message)
        self.error = error
        self.event = event


def build_event(
    ctx: Context,
    event_type: str | None,
    body: msgspec.Raw,
    sent_at_text: str | None,
    idempotency_key: str | None,
    trusted_client_clock: bool | None,
    backfill: bool | None,
    *,
    type_field: str = "event_type",
) -> NewEvent:
    """Rule on one event; raise a ``TallyError`` naming what is wrong, or a
    ``KeyedRefusal`` when the event names a key scope (a valid type and
    idempotency key) that a retry may already hold."""
    if not ctx.key.can_write:
        raise Forbidden("read-only API keys cannot write events")
    if event_type is None:
        raise Invalid(f"{type_field} is required (one of {_TYPES_TEXT})")
    if event_type not in EVENT_TYPES:
        raise Invalid(f"{type_field} must be one of {_TYPES_TEXT}, not {event_type[:64]!r}")
    key = rules.check_idempotency_key(idempotency_key)
    try:
        return _rule_event(ctx, event_type, body, sent_at_text, key, trusted_client_clock, backfill)
    except TallyError as err:
        if key is None:
            raise
        raise KeyedRefusal(err, refused_event(ctx, event_type, key, err.message)) from None


def _rule_event(
    ctx: Context,
    event_type: str,
    body: msgspec.Raw,
    sent_at_text: str | None,
    key: str | None,
    trusted_client_clock: bool | None,
    backfill: bool | None,
) -> NewEvent:
    """The rules on an event whose type and key are known to be valid."""
    raw, parsed = _checked_body(ctx, event_type, body)
    trusted = bool(trusted_client_clock) or bool(backfill)
    secret = ctx.key.is_secret
    if trusted and not secret:  # who may set the clock, before what it says
        raise Invalid(rules.MSG_NEEDS_SECRET)
    sent_at, captured_us = _times(ctx, sent_at_text, trusted, bool(backfill))
    event = NewEvent(
        environment_id=ctx.key.environment_id,
        type=event_type,
        status=PENDING,
        body=raw.decode("utf-8", "replace"),
        quantity=1,
        captured_at=captured_us,
        received_at=ctx.received_us,
        idempotency_key=key,
        sent_at=to_micros(sent_at) if sent_at is not None else None,
        trusted_client_clock=trusted,
        backfill=bool(backfill),
        api_key_id=ctx.key.id,
        remote_ip=ctx.remote_ip,
        user_agent=ctx.user_agent,
    )
    if event_type == "track":
        event.subtype = parsed.event
        event.quantity = rules.check_quantity(parsed.quantity, secret_key=secret)
    elif event_type == "flag_check":
        event.flag_id = parsed.flag_id
        event.company_id = parsed.company_id
        event.user_id = parsed.user_id
    return event


def _checked_body(ctx: Context, event_type: str, body: msgspec.Raw) -> tuple[bytes, Any]:
    """The body's bytes and its decoded form, refused when missing, too
    large, nested too deep or not the shape of ``event_type``."""
    raw = bytes(body)
    if not raw or raw == b"null":
        raise Invalid(f"body is required for {event_type} events")
    if len(raw) > ctx.max_event_body_bytes:
        raise TooLarge(
            f"event body is {len(raw)} bytes, more than the limit of "
            f"{ctx.max_event_body_bytes} bytes ({ctx.max_event_body_bytes // 1024} KiB)"
        )
    if nests_deeper(raw):
        raise Invalid(nesting_message("body"))
    return raw, decode_json(raw, wire.BODY_DECODERS[event_type], "body")


def _times(
    ctx: Context, sent_at_text: str | None, trusted: bool, backfill: bool
) -> tuple[datetime | None, int]:
    """(``sent_at``, the effective time in µs): the receipt time unless the
    event sets a trusted clock (a bad ``sent_at`` is then refused; without
    one it is ignored)."""
    sent_at: datetime | None = None
    if sent_at_text is not None:
        try:
            sent_at = parse_timestamp(sent_at_text)
        except Invalid:
            if trusted:
                raise
            sent_at = None  # ignored without a clock flag
    if not trusted:
        return sent_at, ctx.received_us
    effective = rules.effective_time(
        ctx.received_at,
        sent_at,
        trusted_client_clock=trusted,
        backfill=backfill,
        secret_key=ctx.key.is_secret,
    )
    return sent_at, to_micros(effective)


def check_no_nul(data: bytes, what: str) -> None:
    """Refuse JSON text holding ``\\u0000``: PostgreSQL stores no NUL in text,
    and an event that could not be stored would fail its whole commit."""
    if has_nul(data):
        raise Invalid(nul_message(what))


def refused_event(ctx: Context, event_type: str, key: str, message: str) -> NewEvent:
    """What storage needs to answer a refused REST event: its key scope."""
    return NewEvent(
        environment_id=ctx.key.environment_id,
        type=event_type,
        status=REFUSED,
        body="{}",
        quantity=1,
        captured_at=ctx.received_us,
        received_at=ctx.received_us,
        idempotency_key=key,
        error_message=message,
        api_key_id=ctx.key.id,
    )


def rule_create_event(data: bytes, ctx: Context) -> tuple[NewEvent, TallyError | None]:
    """``POST /events``: the event, and the error that refuses it when its
    key is not held (the event then has status ``refused``)."""
    check_no_nul(data, "the event")
    env = decode_json(data, wire.CREATE_DECODER, "request body")
    try:
        return _from_create_envelope(env, ctx), None
    except KeyedRefusal as refusal:
        return refusal.event, refusal.error


def parse_create_event(data: bytes, ctx: Context) -> NewEvent:
    """``POST /events``: one ``CreateEventRequestBody``; raises what refuses it."""
    event, error = rule_create_event(data, ctx)
    if error is not None:
        raise error
    return event


def _from_create_envelope(env: wire.CreateEventEnvelope, ctx: Context) -> NewEvent:
    return build_event(
        ctx,
        env.event_type,
        env.body,
        env.sent_at,
        env.idempotency_key,
        env.trusted_client_clock,
        env.backfill,
    )


def batch_refusal(index: int, err: TallyError) -> TallyError:
    """The error of an event batch whose event ``index`` was refused."""
    return type(err)(
        f"events[{index}] was refused, so nothing in this batch was stored: {err.message}"
    )


def rule_event_batch(data: bytes, ctx: Context) -> tuple[list[NewEvent], dict[int, TallyError]]:
    """``POST /event-batch``: the events, and by index the errors of those
    refused (status ``refused``) unless their keys are held. An event refused
    without a key refuses the batch here."""
    batch = decode_json(data, wire.EVENT_BATCH_DECODER, "request body")
    if len(batch.events) > MAX_EVENT_BATCH:
        raise Invalid(
            f"an event batch holds at most {MAX_EVENT_BATCH} events, not {len(batch.events)}"
        )
    events = []
    refusals: dict[int, TallyError] = {}
    for index, raw in enumerate(batch.events):
        try:
            check_no_nul(bytes(raw), "the event")
            env = decode_json(bytes(raw), wire.CREATE_DECODER, "event")
            events.append(_from_create_envelope(env, ctx))
        except KeyedRefusal as refusal:
            events.append(refusal.event)
            refusals[index] = refusal.error
        except TallyError as err:
            raise batch_refusal(index, err) from None
    return events, refusals


def parse_event_batch(data: bytes, ctx: Context) -> list[NewEvent]:
    """``POST /event-batch``: all events are valid, or none is stored."""
    events, refusals = rule_event_batch(data, ctx)
    if refusals:
        index = min(refusals)
        raise batch_refusal(index, refusals[index])
    return events


def parse_capture_batch(data: bytes, ctx: Context) -> list[NewEvent]:
    """``POST /batch``: a bad event becomes a ``failed`` record; only a
    malformed or oversized request as a whole raises."""
    batch = decode_json(data, wire.CAPTURE_BATCH_DECODER, "request body")
    if len(batch.events) > MAX_CAPTURE_BATCH:
        raise BatchTooLarge(MAX_CAPTURE_BATCH)
    return [_capture_event(bytes(raw), ctx) for raw in batch.events]


def _capture_event(raw: bytes, ctx: Context) -> NewEvent:
    try:
        check_no_nul(raw, "the event")
        env = decode_json(raw, wire.CAPTURE_DECODER, "event")
        return build_event(
            ctx,
            env.type if env.type is not None else env.event_type,
            env.body,
            env.sent_at,
            env.idempotency_key,
            env.trusted_client_clock,
            env.backfill,
            type_field="type",
        )
    except KeyedRefusal as refusal:
        # failed unless its key is held (then it is the duplicate it is)
        failing = failed_event(ctx, raw, refusal.error.message)
        failing.status = FAILING
        failing.type = refusal.event.type
        failing.idempotency_key = refusal.event.idempotency_key
        return failing
    except TallyError as err:
        return failed_event(ctx, raw, err.message)


def failed_event(ctx: Context, raw_event: bytes, message: str) -> NewEvent:
    """A refused capture event, kept so that its sender can see why. Its
    body (and subtype) are kept only when the body, as received, is within
    the size limit and the nesting limit and is a JSON object."""
    event_type, body, subtype, key = "unknown", "{}", None, None
    try:
        # an event holding NUL keeps nothing: no column of it could be stored
        salvaged = None if has_nul(raw_event) else _SALVAGE.decode(raw_event)
    except (msgspec.DecodeError, RecursionError):
        salvaged = None
    if salvaged is not None:
        kind = salvaged.type or salvaged.event_type
        if isinstance(kind, str) and kind:
            event_type = kind[:64]
        raw_body = bytes(salvaged.body)
        if len(raw_body) <= ctx.max_event_body_bytes and not nests_deeper(raw_body):
            try:
                parsed = msgspec.json.decode(raw_body)
            except msgspec.DecodeError:
                parsed = None
            if isinstance(parsed, dict):
                body = raw_body.decode("utf-8", "replace")
                if isinstance(parsed.get("event"), str):
                    subtype = parsed["event"][:255]
        idem = salvaged.idempotency_key
        if isinstance(idem, str) and idem and len(idem) <= rules.MAX_IDEMPOTENCY_KEY_LENGTH:
            key = idem
    return NewEvent(
        environment_id=ctx.key.environment_id,
        type=event_type,
        status="failed",
        body=body,
        quantity=1,
        captured_at=ctx.received_us,
        received_at=ctx.received_us,
        subtype=subtype,
        idempotency_key=key,
        error_message=message,
        api_key_id=ctx.key.id,
        remote_ip=ctx.remote_ip,
        user_agent=ctx.user_agent,
    )


class _Salvage(msgspec.Struct):
    """What ``failed_event`` keeps of a refused capture event: fields of any
    type (a wrong type is dropped, not an error), the body as received."""

    type: Any = None
    event_type: Any = None
    body: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    idempotency_key: Any = None


_SALVAGE = msgspec.json.Decoder(_Salvage)
