"""A test delivery to one endpoint, now (``POST /webhooks/{id}/test`` and the
console's "send test" button): one signed attempt, logged like any
delivery, never retried."""

from __future__ import annotations

from tally import ids
from tally.clock import Clock, to_micros
from tally.effects.endpoints import Webhook
from tally.effects.payloads import test_payload
from tally.effects.records import AttemptResult
from tally.effects.sender import Guard, make_client, post
from tally.effects.signing import signed_headers
from tally.storage.base import Storage


async def send_test(
    storage: Storage,
    clock: Clock,
    timeout_seconds: float,
    hook: Webhook,
    request_type: str,
    guard: Guard,
) -> AttemptResult:
    """One signed attempt now, to an address ``guard`` allows (a webhook URL
    stored before the private-target rule, or one whose name now resolves
    to a private address, fails here like any delivery)."""
    delivery_id = ids.new_id("whev")
    started = to_micros(clock.now())
    payload = test_payload(delivery_id, hook, request_type, started)
    headers = signed_headers(payload, hook.secret, started // 1_000_000)
    async with make_client(timeout_seconds, 1) as client:
        sent = await post(client, hook.url, payload, headers, guard)
    result = AttemptResult(
        delivery_id,
        1,
        sent.ok,
        sent.response_code,
        sent.error,
        started,
        to_micros(clock.now()),
        None,
    )
    await storage.log_test_delivery(hook, delivery_id, request_type, payload, result)
    return result
