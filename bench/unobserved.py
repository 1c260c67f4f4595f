"""``tally`` with its per-request observation taken out, for bench/observe.py
to compare against: ``python bench/unobserved.py serve …`` runs ``tally serve``
whose HTTP process keeps only the screen of the request layer (the refusal
of a NUL in the URL: no request id, no HTTP metrics, no access line) and
counts no ingested events. The storage process is the ordinary one (its
group commit metrics are recorded once per commit, not per request)."""

from __future__ import annotations

import sys
from typing import Any

import tally.api.app as app_module
from tally.cli import main
from tally.observe.metrics import Metrics


class Screened:
    """The request layer without its observation: the screen alone."""

    def __init__(self, app: Any, screen: Any = None) -> None:
        self.app = app
        self.screen = screen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self.app
        if self.screen is not None and scope["type"] == "http":
            app = self.screen(scope) or app
        await app(scope, receive, send)


def unobserved() -> None:
    """Take the per-request observation out of this process's tally."""
    app_module.ObserveRequests = Screened  # type: ignore[misc,assignment]
    Metrics.ingested = lambda self, *args: None  # type: ignore[method-assign]
    Metrics.http_request = lambda self, *args: None  # type: ignore[method-assign]


if __name__ == "__main__":
    unobserved()
    sys.exit(main(sys.argv[1:]))
