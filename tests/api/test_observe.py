"""GET /metrics, the request id and the HTTP metrics, through the app in-process
(one process: its metrics live in memory). The real multi-process server is
tested in tests/e2e/test_metrics.py."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import Api, TestClient
from tests.api.helpers import assert_error, body, track
from tests.support.metrics import Samples, ingested, parse, value

DOCS = Path(__file__).resolve().parents[2] / "docs"


def loopback(api: Api) -> TestClient:
    """A client of the running app that connects from 127.0.0.1."""
    return TestClient(api.app, client=("127.0.0.1", 50000))


def scrape(api: Api) -> tuple[str, Samples]:
    response = loopback(api).get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text, parse(response.text)


def test_metrics_off_loopback_without_a_token_is_403(api: Api) -> None:
    response = api.client.get("/metrics")  # the test client's address is "testclient"
    assert_error(response, 403, contains="TALLY_METRICS_TOKEN")


def test_counters_move_by_exactly_the_events_sent(api: Api) -> None:
    _, before = scrape(api)
    for _ in range(3):
        assert api.create("track", track()).status_code == 201
    for _ in range(2):  # the second is a duplicate of the first
        assert api.create("identify", body("identify"), idempotency_key="k-1").status_code == 201
    batch = {"events": [{"event_type": "track", "body": track()} for _ in range(4)]}
    assert api.post("/event-batch", batch, key=api.publishable).status_code == 201
    capture = {
        "events": [
            {"type": "track", "body": track("first")},
            {"type": "track", "body": {"quantity": 3, "company": {"id": "acme"}}},  # no `event`
        ]
    }
    assert api.post("/batch", capture).status_code == 200
    assert api.create("track", {"bad": True}).status_code == 400  # refused: not an event
    _, after = scrape(api)

    def moved(kind: str, key_kind: str, outcome: str) -> float:
        return ingested(after, kind, key_kind, outcome) - ingested(before, kind, key_kind, outcome)

    assert moved("track", "secret", "accepted") == 3 + 1
    assert moved("track", "secret", "failed") == 1
    assert moved("identify", "secret", "accepted") == 1
    assert moved("identify", "secret", "duplicate") == 1
    assert moved("track", "publishable", "accepted") == 4
    assert moved("track", "secret", "duplicate") == 0
    assert moved("identify", "publishable", "accepted") == 0

    def requests(route: str, status: str, method: str = "POST") -> float:
        name = "tally_http_request_duration_seconds_count"
        return value(after, name, method=method, route=route, status=status) - value(
            before, name, method=method, route=route, status=status
        )

    assert requests("/events", "201") == 5
    assert requests("/events", "400") == 1
    assert requests("/event-batch", "201") == 1
    assert requests("/batch", "200") == 1


def test_http_metrics_label_route_templates_not_paths(api: Api) -> None:
    _, before = scrape(api)
    assert api.get("/events/evt_0123456789abcdef0123456789abcdef").status_code == 404
    assert api.get("/no/such/thing").status_code == 404
    text, found = scrape(api)
    name = "tally_http_request_duration_seconds_count"
    for route in ("/events/{event_id}", "unmatched"):
        labels = {"method": "GET", "route": route, "status": "404"}
        assert value(found, name, **labels) - value(before, name, **labels) == 1
    assert "evt_0123456789abcdef" not in text and "/no/such" not in text
    assert api.environment_id not in text


def test_pending_gauges_come_from_the_database_at_scrape_time(api: Api) -> None:
    _, found = scrape(api)
    assert value(found, "tally_events_pending") == 0
    assert value(found, "tally_oldest_pending_event_age_seconds") == 0
    for _ in range(3):
        assert api.create("track", track()).status_code == 201
    api.clock.advance(timedelta(seconds=90))
    assert api.create("track", track()).status_code == 201
    _, found = scrape(api)
    assert value(found, "tally_events_pending") == 4
    assert value(found, "tally_oldest_pending_event_age_seconds") == 90


def test_request_id_is_kept_echoed_or_made(api: Api) -> None:
    event = {"event_type": "track", "body": track()}
    kept = api.post("/events", event, headers={"X-Request-Id": "trace-42:a.b_c"})
    assert kept.status_code == 201
    assert kept.headers["x-request-id"] == "trace-42:a.b_c"
    unsafe = api.get("/events", headers={"X-Request-Id": "<script>"})
    assert re.fullmatch(r"[0-9a-f]{16}", unsafe.headers["x-request-id"])
    made = api.get("/nope")  # errors carry one too
    assert re.fullmatch(r"[0-9a-f]{16}", made.headers["x-request-id"])
    assert made.headers["x-request-id"] != unsafe.headers["x-request-id"]


def test_openapi_marks_metrics_as_operational(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    operation = doc["paths"]["/metrics"]["get"]
    assert operation["x-tally-operational"] is True
    assert operation["tags"] == ["operations"]
    assert "text/plain" in operation["responses"]["200"]["content"]


def _dashboard_metrics() -> set[str]:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(dashboard)
    assert exprs, "the dashboard queries nothing"
    return {m for e in exprs for m in re.findall(r"\btally_[a-z_]+", e)}


def test_every_metric_the_dashboard_queries_is_exposed_and_documented(api: Api) -> None:
    assert api.create("track", track()).status_code == 201  # an HTTP series exists
    text, found = scrape(api)
    exposed = {name for name, _ in found}
    queried = _dashboard_metrics()
    assert queried - exposed == set()
    monitoring = (DOCS / "monitoring.md").read_text()
    families = {f.name for f in text_string_to_metric_families(text)}
    undocumented = [f for f in families if f"`{f}" not in monitoring]
    assert undocumented == []
