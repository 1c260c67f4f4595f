"""Reading a Prometheus exposition in tests (with prometheus_client's own parser)."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of the exposition ``text``, by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(url: str, **kwargs: Any) -> Samples:
    """GET ``url`` on a connection of its own; it must answer 200."""
    response = httpx.get(url, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return parse(response.text)


def ingested(found: Samples, kind: str, key_kind: str, outcome: str) -> float:
    return value(
        found, "tally_events_ingested_total", type=kind, key_kind=key_kind, outcome=outcome
    )
