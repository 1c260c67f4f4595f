"""A user's page: its own activity over 30 days (per subtype and a daily
chart), the usage of its companies against their allocations, and the limit
webhooks fired for them, marked when the user's own event fired one."""

from __future__ import annotations

import re

import pytest

from tally.console import entity_views
from tests.api.conftest import Api
from tests.console.conftest import metered_company


def user_page(console: Api, key: str) -> str:
    listing = console.client.get(f"/console/users?q={key}").text
    user_id = re.search(r'href="/console/users/(user_[0-9a-f]+)"', listing)
    assert user_id, listing
    answer = console.client.get(f"/console/users/{user_id.group(1)}")
    assert answer.status_code == 200
    return answer.text


def test_user_page_shows_activity_company_usage_and_firings(console: Api) -> None:
    company_id = metered_company(console)
    page = user_page(console, "u1")
    activity = re.search(r'<table id="user-activity">(.*?)</table>', page, re.S)
    assert activity, page
    cells = re.findall(r"<td[^>]*>(.*?)</td>", activity.group(1), re.S)
    assert ">api-call</a>" in cells[0] and cells[1:3] == ["3", "6"]
    chart = re.search(r'<svg class="chart".*?</svg>', page, re.S)
    assert chart and chart.group(0).count("<rect") == 30
    assert "<title>2026-03-15: 6</title>" in chart.group(0)
    usage = re.search(rf'<table id="usage-{company_id}">(.*?)</table>', page, re.S)
    assert usage, page
    cells = re.findall(r"<td[^>]*>(.*?)</td>", usage.group(1), re.S)
    assert "API calls" in cells[0] and cells[1].startswith("5 / current month")
    assert "<strong>6</strong>" in cells[2]
    firings = re.search(r'<ul class="plain" id="firings">(.*?)</ul>', page, re.S)
    assert firings and "reached" in firings.group(1) and "warning" in firings.group(1)
    assert firings.group(1).count("fired by this user's event") == 2
    assert f'href="/console/companies/{company_id}">Acme Corp</a>' in firings.group(1)
    unknown = console.client.get(
        re.search(r'href="(/console/users/user_[0-9a-f]+)"', page).group(1) + "?subtype=nope"
    )
    # an unknown subtype shows every subtype
    assert unknown.status_code == 200 and "<title>2026-03-15: 6</title>" in unknown.text


def test_user_without_company_or_events(console: Api) -> None:
    answer = console.post("/events", {"event_type": "identify", "body": {"keys": {"id": "solo"}}})
    assert answer.status_code == 201
    while console.run(console.storage.process_pending, 100):
        pass
    page = user_page(console, "solo")
    assert "No track events of this user in the last 30 days." in page
    assert "Not a member of any company: usage is counted" in page
    assert "None: no allocation of their companies" in page


def test_user_activity_says_when_it_read_only_the_newest(
    console: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    metered_company(console)
    assert "Only the newest" not in user_page(console, "u1")
    monkeypatch.setattr(entity_views, "USER_EVENTS_READ", 2)
    page = user_page(console, "u1")
    assert "Only the newest 2 events are counted." in page
    assert "<title>2026-03-15: 4</title>" in page  # two of the three events of 2
