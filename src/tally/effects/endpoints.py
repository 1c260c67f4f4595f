"""Webhook endpoints: their records and the pure rules that turn a request's
changes into stored values, which endpoint wants which notice, and when an
endpoint that keeps failing is switched off. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from tally.errors import Invalid

# ``WebhookRequestType`` of schematichq 1.4.6: an endpoint may subscribe to any
# of them; tally emits ``EMITTED`` (the others never fire here).
REQUEST_TYPES = (
    "subscription.trial.ended",
    "company.created",
    "company.deleted",
    "company.override.created",
    "company.override.deleted",
    "company.override.expired",
    "company.override.updated",
    "company.plan_changed",
    "company.scheduled_downgrade",
    "company.updated",
    "credit.limit.reached",
    "credit.limit.warning",
    "credit.purchase.success",
    "credit.usage_warning_reached",
    "entitlement.limit.reached",
    "entitlement.limit.warning",
    "entitlement.soft_limit.reached",
    "entitlement.soft_limit.warning",
    "entitlement.tier_limit.reached",
    "entitlement.tier_limit.warning",
    "feature.created",
    "feature.deleted",
    "feature.updated",
    "flag.created",
    "flag.deleted",
    "flag_rules.updated",
    "flag.updated",
    "plan.created",
    "plan.deleted",
    "plan.entitlement.created",
    "plan.entitlement.deleted",
    "plan.entitlement.updated",
    "plan.updated",
    "plan_version.deleted",
    "rule.deleted",
    "test.send",
    "user.created",
    "user.deleted",
    "user.updated",
    "auto.topup.hard.failure",
    "auto.topup.retry.exceeded",
    "auto.topup.success",
)
EMITTED = (
    "entitlement.limit.warning",
    "entitlement.limit.reached",
    "company.created",
    "company.updated",
    "user.created",
    "user.updated",
    "test.send",
)
STATUSES = ("active", "inactive")
MAX_NAME = 255
MAX_URL = 2048
MAX_TRIGGER_CONFIGS = 100

# An endpoint is switched off when at least ``AUTO_DISABLE_MIN`` of its
# deliveries finished within ``AUTO_DISABLE_WINDOW_US`` and at least 90% of
# them failed (a delivery fails when every one of its attempts failed).
AUTO_DISABLE_MIN = 25
AUTO_DISABLE_WINDOW_US = 24 * 3600 * 1_000_000


@dataclass(frozen=True, slots=True)
class WebhookValues:
    name: str
    url: str
    request_types: tuple[str, ...]
    status: str = "active"
    feature_ids: tuple[str, ...] = ()  # entitlement_trigger_configs: only these features
    credit_ids: tuple[str, ...] = ()  # credit_trigger_configs: kept and shown (no credits here)


@dataclass(frozen=True, slots=True)
class WebhookChanges:
    """A create or update request; ``None`` leaves a field as it is."""

    name: str | None = None
    url: str | None = None
    request_types: tuple[str, ...] | None = None
    status: str | None = None
    feature_ids: tuple[str, ...] | None = None
    credit_ids: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    environment_id: str
    name: str
    url: str
    secret: str
    request_types: tuple[str, ...]
    status: str
    status_reason: str | None
    feature_ids: tuple[str, ...]
    credit_ids: tuple[str, ...]
    enabled_at: int  # µs: when it was last switched on (start of its failure window)
    created_at: int
    updated_at: int

    @property
    def values(self) -> WebhookValues:
        return WebhookValues(
            self.name, self.url, self.request_types, self.status, self.feature_ids, self.credit_ids
        )


@dataclass(frozen=True, slots=True)
class WebhookFilter:
    q: str | None = None
    limit: int = 100
    offset: int = 0


def check_url(url: str) -> str:
    url = url.strip()
    if not url:
        raise Invalid("url must not be empty")
    if len(url) > MAX_URL:
        raise Invalid(f"url must be at most {MAX_URL} characters, not {len(url)}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not one
    except ValueError:
        raise Invalid(f"url is not a valid URL: {url[:64]!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"url must be an http:// or https:// URL with a host, not {url[:64]!r}")
    if any(ch.isspace() for ch in url):
        raise Invalid("url must not contain spaces")
    return url


def url_host(url: str) -> tuple[str, int]:
    """The host and port of a URL ``check_url`` accepted."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def check_request_types(types: tuple[str, ...]) -> tuple[str, ...]:
    if not types:
        raise Invalid(
            "request_types must name at least one request type, such as entitlement.limit.reached"
        )
    unknown = [t for t in types if t not in REQUEST_TYPES]
    if unknown:
        raise Invalid(f"unknown request type {unknown[0][:64]!r}; tally sends {', '.join(EMITTED)}")
    return tuple(dict.fromkeys(types))  # unique, in the order given


def _ids(name: str, values: tuple[str, ...]) -> tuple[str, ...]:
    if len(values) > MAX_TRIGGER_CONFIGS:
        raise Invalid(f"{name} takes at most {MAX_TRIGGER_CONFIGS} entries")
    if any(not v.strip() for v in values):
        raise Invalid(f"every entry of {name} needs a non-empty id")
    return tuple(dict.fromkeys(values))


def resolve_webhook(current: WebhookValues | None, changes: WebhookChanges) -> WebhookValues:
    """The endpoint after ``changes`` (``current`` is ``None`` on create)."""
    if current is None:
        if changes.name is None:
            raise Invalid("name is required")
        if changes.url is None:
            raise Invalid("url is required")
        if changes.request_types is None:
            raise Invalid("request_types is required")
        current = WebhookValues("", "", ())
    name = current.name
    if changes.name is not None:
        name = changes.name.strip()
        if not name:
            raise Invalid("name must not be empty")
        if len(name) > MAX_NAME:
            raise Invalid(f"name must be at most {MAX_NAME} characters, not {len(name)}")
    url = check_url(changes.url) if changes.url is not None else current.url
    types = (
        check_request_types(changes.request_types)
        if changes.request_types is not None
        else current.request_types
    )
    status = current.status
    if changes.status is not None:
        if changes.status not in STATUSES:
            raise Invalid(f"status must be active or inactive, not {changes.status[:32]!r}")
        status = changes.status
    features = (
        _ids("entitlement_trigger_configs", changes.feature_ids)
        if changes.feature_ids is not None
        else current.feature_ids
    )
    credits = (
        _ids("credit_trigger_configs", changes.credit_ids)
        if changes.credit_ids is not None
        else current.credit_ids
    )
    return WebhookValues(name, url, types, status, features, credits)


def wants(webhook: Webhook, action: str, feature_id: str | None) -> bool:
    """Whether the endpoint takes a notice: it is on, subscribes to the action,
    and (for usage limits, when it names features) the feature is one of its."""
    if webhook.status != "active" or action not in webhook.request_types:
        return False
    if action.startswith("entitlement.") and webhook.feature_ids:
        return feature_id in webhook.feature_ids
    return True


def should_disable(finished: int, failed: int) -> bool:
    """≥90% failures of at least ``AUTO_DISABLE_MIN`` finished deliveries."""
    return finished >= AUTO_DISABLE_MIN and failed * 10 >= finished * 9
