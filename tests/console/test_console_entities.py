"""Companies and users in the console: search, a company's usage per
feature and period against its allocation, its 30-day chart and the limit
webhooks it fired; a user's page."""

from __future__ import annotations

import re

from tests.api.conftest import Api
from tests.console.conftest import metered_company, sign_in


def test_company_search_and_page(console: Api) -> None:
    company_id = metered_company(console)
    listing = console.client.get("/console/companies?q=acm").text
    assert f'href="/console/companies/{company_id}">Acme Corp<' in listing
    assert "No company matches" in console.client.get("/console/companies?q=zzz").text
    page = console.client.get(f"/console/companies/{company_id}").text
    usage = re.search(r'<table id="usage">(.*?)</table>', page, re.S)
    assert usage, page
    cells = re.findall(r"<td[^>]*>(.*?)</td>", usage.group(1), re.S)
    assert "API calls" in cells[0] and cells[1].startswith("5 / current month")
    assert "<strong>6</strong>" in cells[2] and 'max="5"' in cells[2]
    assert [c.strip() for c in cells[3:8]] == ["6", "6", "6", "6", "6"]  # day … all time
    assert 'class="over"' in usage.group(1)
    # the chart: 30 bars, one of them for today's 6
    chart = re.search(r'<svg class="chart".*?</svg>', page, re.S)
    assert chart and chart.group(0).count("<rect") == 30
    assert re.search(r"<title>2026-03-15: 6</title>", chart.group(0))
    firings = re.search(r'<ul class="plain" id="firings">(.*?)</ul>', page, re.S)
    assert firings and "reached" in firings.group(1) and "warning" in firings.group(1)
    assert 'href="/console/users/' in page
    assert console.client.get("/console/companies/comp_nope").status_code == 404


def test_user_page(console: Api) -> None:
    metered_company(console)
    listing = console.client.get("/console/users?q=u1").text
    user_id = re.search(r'href="/console/users/(user_[0-9a-f]+)"', listing)
    assert user_id, listing
    page = console.client.get(f"/console/users/{user_id.group(1)}").text
    assert ">Acme Corp</a>" in page and page.count('<tr data-id="evt_') == 3


def test_another_environment_sees_no_company(console: Api) -> None:
    company_id = metered_company(console)
    other = console.client.__class__(console.app)
    assert sign_in(other, console.other_env).status_code == 303
    assert "Acme" not in other.get("/console/companies").text
    assert "No companies yet" in other.get("/console/companies").text
    assert "No users yet" in other.get("/console/users").text
    assert other.get(f"/console/companies/{company_id}").status_code == 404


def test_events_filter_by_company_and_user_key_values(console: Api) -> None:
    company_id = metered_company(console)
    answer = console.post("/events", {"event_type": "track", "body": {"event": "solo"}})
    assert answer.status_code == 201
    by_id = console.client.get(f"/console/events?company={company_id}").text
    by_key = console.client.get("/console/events?company=acme").text
    rows = re.findall(r'<tr data-id="(evt_[0-9a-f]+)"', by_key)
    assert len(rows) == 3 and rows == re.findall(r'<tr data-id="(evt_[0-9a-f]+)"', by_id)
    assert (
        len(re.findall(r'<tr data-id="', console.client.get("/console/events?user=u1").text)) == 3
    )
    assert (
        re.findall(r'<tr data-id="', console.client.get("/console/events?company=acm").text) == []
    )
