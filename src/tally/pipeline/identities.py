"""Identity rules (pure): resolving keys to one entity, merging traits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec


class ProcessingFailed(Exception):
    """The event cannot be processed; ``str(err)`` tells a person what to fix."""


def pick_one(kind: str, matches: set[str], keys: Mapping[str, str]) -> str | None:
    """The single entity the keys point at, ``None`` when none does; keys that
    point at two entities fail the event."""
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:3])
        raise ProcessingFailed(
            f"the {kind} keys {dict(keys)} match {len(matches)} different {kind} records "
            f"({shown}); send keys of one {kind} only"
        )
    return next(iter(matches)) if matches else None


def merge_traits(old_json: str, new: Mapping[str, Any] | None) -> str:
    """Top-level keys of ``new`` replace those of the stored traits."""
    if not new:
        return old_json
    old = msgspec.json.decode(old_json) if old_json else {}
    if not isinstance(old, dict):
        old = {}
    old.update(new)
    return msgspec.json.encode(old).decode()
