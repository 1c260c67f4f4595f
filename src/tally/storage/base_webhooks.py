"""Storage interface of side effects: webhook endpoints and their delivery
log (the admin API), and the delivery queue (the delivery loop).

Records and the pure rules they obey live in ``tally.effects``; a backend
applies those rules inside its write transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tally.effects.endpoints import Webhook, WebhookChanges, WebhookFilter
from tally.effects.records import AttemptResult, ClaimedDelivery, WebhookEvent, WebhookEventFilter


class WebhookStore(Protocol):
    async def create_webhook(self, environment_id: str, changes: WebhookChanges) -> Webhook:
        """A new endpoint with a new signing secret. Raises ``Invalid`` for
        values that break a rule."""
        ...

    async def get_webhook(self, environment_id: str, webhook_id: str) -> Webhook | None: ...

    async def list_webhooks(self, environment_id: str, where: WebhookFilter) -> list[Webhook]:
        """Newest first; ``q`` matches the name or the URL."""
        ...

    async def count_webhooks(self, environment_id: str, where: WebhookFilter) -> int: ...

    async def update_webhook(
        self, environment_id: str, webhook_id: str, changes: WebhookChanges
    ) -> Webhook | None:
        """Switching an endpoint on (``status`` active) restarts its failure
        window, so an endpoint switched off for failing gets a fresh chance."""
        ...

    async def delete_webhook(self, environment_id: str, webhook_id: str) -> bool:
        """Deletes the endpoint; its deliveries still pending fail (the log
        keeps them)."""
        ...

    async def list_webhook_events(
        self, environment_id: str, where: WebhookEventFilter
    ) -> list[WebhookEvent]:
        """The delivery log, newest first; ``q`` matches the request type."""
        ...

    async def count_webhook_events(self, environment_id: str, where: WebhookEventFilter) -> int: ...

    async def get_webhook_event(self, environment_id: str, event_id: str) -> WebhookEvent | None:
        """One delivery with every attempt made."""
        ...

    async def log_test_delivery(
        self,
        webhook: Webhook,
        delivery_id: str,
        request_type: str,
        payload: bytes,
        result: AttemptResult,
    ) -> None:
        """Log the one attempt of a test delivery (``POST /webhooks/{id}/test``)."""
        ...


class DeliveryStore(Protocol):
    @property
    def single_writer(self) -> bool:
        """Whether processing and deliveries share one write lock (SQLite)."""
        ...

    async def has_pending_events(self) -> bool:
        """Whether any event waits to be processed."""
        ...

    async def claim_deliveries(
        self, now: int, limit: int, lease_us: int, *, billing: bool
    ) -> list[ClaimedDelivery]:
        """Expand some of the outbox (notices to the endpoints that want
        them, meter records; all of it when ``limit`` is 0), then lease up to
        ``limit`` due deliveries (billing records only when
        ``billing``) for ``lease_us`` and log an attempt of each as in
        flight. A delivery whose lease ran out (its loop died) is claimed
        again and its unfinished attempt logged as interrupted. Safe with any
        number of delivery loops."""
        ...

    async def record_attempts(self, results: Sequence[AttemptResult], now: int) -> list[str]:
        """Log each attempt's outcome and settle its delivery: success,
        another try at ``retry_at``, or failure. An attempt whose lease was
        taken over meanwhile is logged as superseded and settles nothing.
        Returns the ids of endpoints this switched off for failing."""
        ...

    async def delivery_counts(self) -> dict[tuple[str, str], int]:
        """(kind, status) → number of deliveries, and ("outbox", "pending") →
        outbox rows not yet expanded."""
        ...
