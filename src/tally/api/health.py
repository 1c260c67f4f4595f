"""``GET /health``: that the server is up, and how far processing is behind
(``tally.observe.lag``): the pending backlog, the age of the oldest pending
event and the processing rate. No key is needed and nothing secret is shown:
counts and ages only, of every environment together."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tally.api.common.envelope import ok
from tally.api.state import AppState
from tally.observe.lag import PENDING_CAP, Unknown

UNKNOWN: dict[str, Any] = {
    "pending": None,
    "pending_capped": None,
    "oldest_pending_age_seconds": None,
    "processing_rate": None,
}


async def health(request: Request) -> Response:
    state: AppState = request.app.state.tally
    try:
        figures = (await state.lag.current()).as_json()
    except Unknown:  # up, even when the database is away: no figures (the log says why)
        figures = UNKNOWN
    return ok({"status": "ok", **figures})


def _figure(kind: str, description: str) -> dict[str, Any]:
    return {"type": [kind, "null"], "description": description}


# the OpenAPI schema of the answer's data (null figures: the database was away)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", *UNKNOWN],
    "properties": {
        "status": {"type": "string", "enum": ["ok"]},
        "pending": _figure(
            "integer", f"events waiting to be processed, counted up to {PENDING_CAP:,}"
        ),
        "pending_capped": _figure("boolean", "true when there are more than pending says"),
        "oldest_pending_age_seconds": _figure(
            "number", "seconds since the oldest pending event was stored (0: none pending)"
        ),
        "processing_rate": _figure(
            "number", "events this tally serve processed per second over the last minute"
        ),
    },
}
