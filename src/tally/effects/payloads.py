"""What a webhook delivery carries (pure): the SPEC §5 envelope, the body of
each notice, and which endpoints a notice goes to.

The envelope is ``{id, action, environment_id, object_type, body,
company_id?, feature_id?}``; ``id`` is the notice's id (``whob_…``), the
same on every attempt and for every endpoint, so a receiver can drop a
repeat. The payload is built once, when the notice is fanned out to its
endpoints, stored once with the notice, and never changes between attempts
(only the signature's timestamp does).

Bodies:

- ``company.*``/``user.*``: the object as it stands when the notice is
  fanned out: ``id``, ``name``, ``keys``, ``traits``, ``environment_id``,
  ``last_seen_at``, ``created_at``, ``updated_at`` (users also
  ``company_ids``).
- ``entitlement.limit.*``: ``entitlement`` (the allocation), ``feature``,
  ``company``, ``usage`` (right after the event that crossed), ``allocation``,
  ``threshold``, ``metric_period``, ``period_start`` and ``metricResetAt``
  (when the period ends; ``null`` for all time) of the period the event
  counted in, ``event_id`` and ``occurred_at`` (the event's effective time).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from tally.clock import format_micros
from tally.effects.endpoints import Webhook, wants
from tally.effects.triggers import LIMIT_WARNING, Crossing, Notice

TEST_ACTION = "test.send"


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    id: str
    environment_id: str
    webhook_id: str
    notice_id: str
    request_type: str


@dataclass(slots=True)
class FanOut:
    """What fanning notices out makes: each wanted notice's payload, and one
    delivery per (notice, endpoint that wants it)."""

    payloads: dict[str, bytes]
    deliveries: list[PlannedDelivery]


def _time(micros: int | None) -> str | None:
    return None if micros is None else format_micros(micros)


def envelope(
    envelope_id: str,
    action: str,
    environment_id: str,
    object_type: str,
    body: Any,
    company_id: str | None = None,
    feature_id: str | None = None,
) -> bytes:
    data: dict[str, Any] = {
        "id": envelope_id,
        "action": action,
        "environment_id": environment_id,
        "object_type": object_type,
        "body": body,
    }
    if company_id is not None:
        data["company_id"] = company_id
    if feature_id is not None:
        data["feature_id"] = feature_id
    return msgspec.json.encode(data)


def entity_object(
    *,
    entity_id: str,
    environment_id: str,
    name: str | None,
    keys: Mapping[str, str],
    traits: Mapping[str, Any],
    last_seen_at: int | None,
    created_at: int,
    updated_at: int,
    company_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": entity_id,
        "environment_id": environment_id,
        "name": name,
        "keys": dict(keys),
        "traits": dict(traits),
        "last_seen_at": _time(last_seen_at),
        "created_at": format_micros(created_at),
        "updated_at": format_micros(updated_at),
    }
    if company_ids is not None:
        out["company_ids"] = list(company_ids)
    return out


def feature_object(
    feature_id: str, name: str, feature_type: str, subtype: str | None
) -> dict[str, Any]:
    return {"id": feature_id, "name": name, "feature_type": feature_type, "event_subtype": subtype}


def limit_details(
    crossing: Crossing,
    period_kind: str,
    period_start: int,
    period_end: int | None,
    warning_percent: float,
) -> dict[str, Any]:
    """What processing knows of a limit crossing; stored with the notice."""
    limit = crossing.limit
    details: dict[str, Any] = {
        "entitlement": {
            "id": limit.allocation_id,
            "company_id": limit.company_id,
            "feature_id": limit.feature_id,
            "value_type": "numeric",
            "value_numeric": limit.value,
            "metric_period": limit.metric_period,
            "metric_period_month_reset": limit.month_reset,
        },
        "usage": crossing.usage,
        "allocation": limit.value,
        "threshold": crossing.threshold,
        "metric_period": limit.metric_period,
        "period": period_kind,
        "period_start": format_micros(period_start),
        "metricResetAt": _time(period_end),
        "event_id": crossing.event.event_id,
        "occurred_at": format_micros(crossing.event.captured_at),
    }
    if crossing.action == LIMIT_WARNING:
        details["warning_percent"] = warning_percent
    return details


def notice_body(notice: Notice, objects: Mapping[tuple[str, str], dict[str, Any]]) -> Any:
    """The body of a notice, with the objects it names (``(kind, id)`` →
    object) as they stand now; an object deleted meanwhile is just its id."""

    def obj(kind: str, object_id: str | None) -> dict[str, Any] | None:
        if object_id is None:
            return None
        return objects.get((kind, object_id), {"id": object_id})

    if notice.object_type in ("company", "user"):
        return obj(notice.object_type, notice.object_id)
    return {
        **notice.details,
        "company": obj("company", notice.company_id),
        "feature": obj("feature", notice.feature_id),
    }


def plan_deliveries(
    notices: Sequence[tuple[str, Notice]],
    endpoints: Sequence[Webhook],
    objects: Mapping[tuple[str, str], dict[str, Any]],
    new_id: Callable[[str], str],
) -> FanOut:
    """One delivery per (notice, endpoint that wants it); notices (given
    with their ids) that nobody wants get no payload and no delivery."""
    by_env: dict[str, list[Webhook]] = {}
    for hook in endpoints:
        by_env.setdefault(hook.environment_id, []).append(hook)
    out = FanOut({}, [])
    for notice_id, n in notices:
        targets = [h for h in by_env.get(n.environment_id, ()) if wants(h, n.action, n.feature_id)]
        if not targets:
            continue
        out.payloads[notice_id] = envelope(
            notice_id,
            n.action,
            n.environment_id,
            n.object_type,
            notice_body(n, objects),
            n.company_id,
            n.feature_id,
        )
        for hook in targets:
            out.deliveries.append(
                PlannedDelivery(new_id("whev"), n.environment_id, hook.id, notice_id, n.action)
            )
    return out


def test_payload(delivery_id: str, webhook: Webhook, request_type: str, now_us: int) -> bytes:
    """The envelope of ``POST /webhooks/{id}/test`` (its id is the delivery's:
    a test has no notice)."""
    body = {
        "test": True,
        "message": f"a test {request_type} delivery from tally",
        "webhook_id": webhook.id,
        "sent_at": format_micros(now_us),
    }
    return envelope(delivery_id, request_type, webhook.environment_id, "test", body)
