"""Event types and pipeline health in the console."""

from __future__ import annotations

import re
from datetime import timedelta

from tally.console.format import num
from tests.api.conftest import Api
from tests.console.conftest import sign_in


def send(api: Api, subtype: str, n: int = 1) -> None:
    for start in range(0, n, 1000):
        events = [{"event_type": "track", "body": {"event": subtype}}] * min(1000, n - start)
        assert api.post("/event-batch", {"events": events}).status_code == 201


def test_event_types_with_counts_and_sparklines(console: Api) -> None:
    assert "No event types yet" in console.client.get("/console/event-types").text
    console.clock.advance(timedelta(days=-2))
    send(console, "export", 2)
    console.clock.advance(timedelta(days=2))
    send(console, "export", 1)
    send(console, "api-call", 1234)
    page = console.client.get("/console/event-types").text
    rows = re.findall(
        r'<a href="/console/events\?subtype=([\w-]+)">.*?<td class="num">([\d,]+)</td>', page, re.S
    )
    assert rows == [("api-call", "1,234"), ("export", "3")]
    assert 'data-days="/console/data/event-types/days"' in page
    days = console.client.get("/console/data/event-types/days").json()
    assert days["first_day"] == "2026-02-14"
    assert days["series"] == {"api-call": [0] * 29 + [1234], "export": [0] * 27 + [2, 0, 1]}


def test_health_figures_and_live_data(console: Api) -> None:
    send(console, "api-call", 3)
    console.post("/batch", {"events": [{"type": "track", "event": "x"}]}, key=console.read_only)
    console.clock.advance(timedelta(seconds=90))
    page = console.client.get("/console/health").text
    assert re.search(r'data-field="pending">3<', page)
    assert re.search(r'data-field="oldest_pending">1 min 30 s<', page)
    assert re.search(r'data-field="failed">1<', page)
    data = console.client.get("/console/data/health").json()
    assert data["pending"] == "3" and data["received"] == num(4) and data["failed_rate"] == "100.0%"
    console.drain()
    data = console.client.get("/console/data/health").json()
    assert data["pending"] == "0" and data["oldest_pending"] == "none waiting"
    assert data["processed"] == "3" and data["failed_rate"] == "25.0%"


def test_another_environment_has_its_own_figures(console: Api) -> None:
    send(console, "secret-subtype", 5)
    other = console.client.__class__(console.app)
    assert sign_in(other, console.other_env).status_code == 303
    assert "secret-subtype" not in other.get("/console/event-types").text
    assert other.get("/console/data/event-types/days").json()["series"] == {}
    assert other.get("/console/data/health").json()["pending"] == "0"
