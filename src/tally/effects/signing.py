"""Webhook signatures (SPEC §5), as the official SDKs verify them
(``schematic.webhook_utils``): hex HMAC-SHA256 of the raw body, ``+`` and the
timestamp, keyed with the endpoint's secret."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Schematic-Webhook-Signature"
VERSION_HEADER = "X-Schematic-Webhook-Signature-Version"
TIMESTAMP_HEADER = "X-Schematic-Webhook-Timestamp"
VERSION = "v1"


def signature(body: bytes, timestamp: str, secret: str) -> str:
    message = body + b"+" + timestamp.encode("ascii")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signed_headers(body: bytes, secret: str, unix_seconds: int) -> dict[str, str]:
    """The headers of one delivery attempt; each attempt is signed afresh with
    its own timestamp (the body never changes between attempts)."""
    timestamp = str(unix_seconds)
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(body, timestamp, secret),
        VERSION_HEADER: VERSION,
        TIMESTAMP_HEADER: timestamp,
    }
