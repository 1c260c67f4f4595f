"""The event page says whether duplicates were dropped against its
idempotency key: none, then how many and when the last one came."""

from __future__ import annotations

import re

from tests.api.conftest import Api
from tests.console.test_console_events import track


def duplicates_line(page: str) -> str:
    found = re.search(r'<div id="duplicates">(.*?)</div>', page, re.S)
    assert found, page
    return found.group(1)


def test_event_page_counts_the_duplicates_dropped(console: Api) -> None:
    event_id = track(console, idempotency_key="order-7")
    page = console.client.get(f"/console/events/{event_id}").text
    assert "<code>order-7</code>" in page and duplicates_line(page) == "no duplicate dropped"
    for _ in range(2):
        answer = console.post(
            "/events",
            {
                "event_type": "track",
                "body": {"event": "api-call", "company": {"id": "acme"}, "quantity": 2},
                "idempotency_key": "order-7",
            },
        )
        assert answer.status_code == 201 and answer.json()["data"]["duplicate"] is True
    line = duplicates_line(console.client.get(f"/console/events/{event_id}").text)
    assert line.startswith("<strong>2 duplicates dropped</strong>, the last at <time datetime=")
    plain = track(console)
    assert (
        'Idempotency key</dt>\n    <dd><span class="muted">none'
        in console.client.get(f"/console/events/{plain}").text
    )
