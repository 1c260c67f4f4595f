"""A processing bug that only one event triggers (``"event": "poison"``)."""

from __future__ import annotations

from typing import Any

import pytest

from tally.pipeline import rules


def poison_track_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make processing raise ``KeyError`` on a track event named ``poison``."""
    real = rules._track

    def exploding(ws: Any, event: Any, body: Any) -> Any:
        if body.event == "poison":
            raise KeyError("boom")
        return real(ws, event, body)

    monkeypatch.setattr(rules, "_track", exploding)
