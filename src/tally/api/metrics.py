"""``GET /metrics``: the Prometheus exposition of this ``tally serve``
(every one of its processes, added up), for loopback clients and, with
``TALLY_METRICS_TOKEN`` set, for others that present it as a bearer token
(``tally.observe.exposition`` says why)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from tally.api.common.envelope import plain_error
from tally.api.common.openapi import json_body, ref
from tally.api.common.routing import ApiRoute
from tally.api.state import AppState
from tally.clock import to_micros
from tally.model import PendingBacklog
from tally.observe.exposition import CONTENT_TYPE, access, render

log = logging.getLogger(__name__)


async def metrics(request: Request) -> Response:
    state: AppState = request.app.state.tally
    client = request.client.host if request.client else None
    refusal = access(client, request.headers.get("authorization"), state.settings.metrics_token)
    if refusal is not None:
        headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
        return plain_error(refusal.message, refusal.status, headers=headers)
    backlog: PendingBacklog | None
    try:
        backlog = await state.storage.pending_backlog()
    except Exception:  # the rest of the metrics tell more when the database is away
        log.warning("could not read the pending backlog for /metrics", exc_info=True)
        backlog = None
    return Response(render(backlog, to_micros(state.clock.now())), media_type=CONTENT_TYPE)


# operational, not part of the Schematic API (docs/monitoring.md)
OPERATION = {
    "operationId": "metrics",
    "tags": ["operations"],
    "summary": "Prometheus metrics of this tally (not an API route)",
    "description": "The Prometheus text exposition. Loopback clients may always "
    "read it; other clients only with Authorization: Bearer <TALLY_METRICS_TOKEN>.",
    "security": [],
    "x-tally-operational": True,
    "responses": {
        "200": {
            "description": "the exposition",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **{str(code): json_body(ref("ErrorBody"), "error") for code in (401, 403)},
    },
}
routes = [ApiRoute("GET", "/metrics", metrics, OPERATION)]
