"""The events pages through the app: the list and its filters, the live
data, one event's journey, the failed view, and that a key of one
environment sees nothing of another's."""

from __future__ import annotations

import json
import re
from datetime import timedelta

from tests.api.conftest import Api
from tests.console.conftest import sign_in


def track(api: Api, subtype: str = "api-call", *, key: str = "", **fields: object) -> str:
    body = {"event": subtype, "company": {"id": "acme"}, "quantity": 2}
    answer = api.post(
        "/events",
        {"event_type": "track", "body": body, **fields},
        key=key,
    )
    assert answer.status_code == 201, answer.text
    event_id: str = answer.json()["data"]["event_id"]
    return event_id


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-id="(evt_[0-9a-f]+)"', html)


def test_empty_list_shows_the_sdk_snippet(console: Api) -> None:
    page = console.client.get("/console/events").text
    assert "No events yet" in page
    assert 'base_url="http://testserver"' in page and "client.track(" in page


def test_list_newest_first_with_counts_and_filters(console: Api) -> None:
    a = track(console, "api-call")
    b = track(console, "export", idempotency_key="k-1")
    answer = console.post("/events", {"event_type": "identify", "body": {"keys": {"id": "u2"}}})
    assert answer.status_code == 201, answer.text
    page = console.client.get("/console/events").text
    ids = row_ids(page)
    assert ids[1:] == [b, a] and len(ids) == 3
    assert re.search(r'id="count-pending">3<', page) and re.search(r'id="count-total">3<', page)
    assert row_ids(console.client.get("/console/events?subtype=export").text) == [b]
    assert row_ids(console.client.get("/console/events?type=track").text) == [b, a]
    assert row_ids(console.client.get("/console/events?idempotency_key=k-1").text) == [b]
    assert row_ids(console.client.get("/console/events?status=failed").text) == []
    assert len(row_ids(console.client.get("/console/events?status=pending").text)) == 3
    assert row_ids(console.client.get("/console/events?to=2000-01-01T00:00:00Z").text) == []
    assert len(row_ids(console.client.get("/console/events?from=2000-01-01T00:00Z").text)) == 3
    bad = console.client.get("/console/events?status=nope")
    assert bad.status_code == 400 and "status must be one of" in bad.text


def test_live_data_returns_what_is_new(console: Api) -> None:
    first = track(console)
    data = console.client.get("/console/data/events?counts=1").json()
    assert [r["id"] for r in data["rows"]] == [first] and data["new"] == 1
    assert data["counts"] == {"pending": 1, "processed": 0, "failed": 0} and data["total"] == 1
    assert console.client.get(f"/console/data/events?newer_than={first}").json() == {
        "rows": [],
        "new": 0,
        "newest": first,
    }
    second = track(console, "export")
    data = console.client.get(f"/console/data/events?newer_than={first}").json()
    assert [r["id"] for r in data["rows"]] == [second] and data["rows"][0]["subtype"] == "export"
    assert "counts" not in data
    # filtered like the list
    data = console.client.get(f"/console/data/events?newer_than={first}&subtype=api-call").json()
    assert data["rows"] == []


def test_live_data_samples_under_a_burst(console: Api) -> None:
    events = [{"event_type": "track", "body": {"event": "burst"}} for _ in range(120)]
    assert console.post("/event-batch", {"events": events}).status_code == 201
    data = console.client.get("/console/data/events?newer_than=evt_0").json()
    assert len(data["rows"]) == 50 and data["new"] == 120


def test_event_page_shows_its_journey(console: Api) -> None:
    sent = (console.clock.now() - timedelta(minutes=2)).isoformat()
    event_id = track(console, sent_at=sent, trusted_client_clock=True, idempotency_key="order-7")
    page = console.client.get(f"/console/events/{event_id}").text
    for stage in ("sent_at", "captured_at", "loaded_at", "enriched_at", "updated_at"):
        assert f"<code>{stage}</code>" in page
    assert "trusted_client_clock" in page and "waiting to be processed" in page
    assert "+2 min 0 s" in page  # captured (client clock) → loaded
    assert "<code>order-7</code>" in page
    body = re.search(r'<pre class="body" id="body"><code>(.*?)</code>', page, re.S)
    assert body and json.loads(body.group(1).replace("&#34;", '"'))["event"] == "api-call"
    assert console.client.get("/console/events/evt_nope").status_code == 404


def test_failed_view_groups_by_message(console: Api) -> None:
    batch = [{"type": "track", "event": "x", "company": {"id": "acme"}}]
    for _ in range(3):
        answer = console.post("/batch", {"events": batch}, key=console.read_only)
        assert answer.status_code == 200
    page = console.client.get("/console/failed").text
    rows = re.findall(r'<td class="message">(.*?)</td><td class="num">([\d,]+)</td>', page)
    assert len(rows) == 1 and rows[0][1] == "3", page
    assert "read-only" in rows[0][0]
    assert console.client.get("/console/failed?range=bogus").status_code == 400


def test_another_environment_sees_none_of_it(console: Api) -> None:
    event_id = track(console, "secret-subtype")
    console.post("/batch", {"events": [{"type": "track", "event": "x"}]}, key=console.read_only)
    other = console.client.__class__(console.app)
    assert sign_in(other, console.other_env).status_code == 303
    for path in ("/console/events", "/console/failed", "/console/data/events?counts=1"):
        answer = other.get(path)
        assert answer.status_code == 200, path
        assert event_id not in answer.text and "secret-subtype" not in answer.text, path
    assert 'id="failed-groups"' in console.client.get("/console/failed").text
    assert 'id="failed-groups"' not in other.get("/console/failed").text
    assert other.get(f"/console/events/{event_id}").status_code == 404
    assert "staging" in other.get("/console/events").text


def test_hostile_values_are_escaped(console: Api) -> None:
    hostile = "<script>alert(1)</script>"
    body = {"event": hostile, "company": {"id": hostile}, "traits": {"x": "</code>" + hostile}}
    answer = console.post("/events", {"event_type": "track", "body": body})
    assert answer.status_code == 201, answer.text
    event_id = answer.json()["data"]["event_id"]
    console.drain()
    pages = [
        "/console/events",
        f"/console/events/{event_id}",
        "/console/event-types",
        "/console/companies",
    ]
    for path in pages:
        text = console.client.get(path).text
        assert hostile not in text, path
        assert "&lt;script&gt;" in text, path


def test_older_events_page_by_page(console: Api) -> None:
    events = [{"event_type": "track", "body": {"event": "page"}} for _ in range(120)]
    assert console.post("/event-batch", {"events": events}).status_code == 201
    first = console.client.get("/console/events?subtype=page").text
    seen = row_ids(first)
    older = re.search(r'href="/console/events\?([^"]+)" id="older"', first)
    assert len(seen) == 50 and older
    second = console.client.get("/console/events?" + older.group(1).replace("&amp;", "&")).text
    more = row_ids(second)
    assert len(more) == 50 and more[0] < seen[-1] and not set(more) & set(seen)
    assert "subtype=page" in older.group(1) and "Newest" in second
