"""The console in a real browser: headless Chromium (Debian's ``chromium``,
driven by Playwright with ``executable_path``; nothing is downloaded)
against a real ``tally serve``, with the real SDK sending the events.

Sign in (a wrong key and a publishable key are refused first), watch a
tracked event appear without a reload, filter, open it and read its
timeline and the duplicate dropped against its key, open the failed view,
a company's usage and chart, a user's activity, send a test
webhook to a local receiver, look at event types and health, sign out. The
test fails on any JavaScript console error (a CSP violation is one), on any
URL that carries the key, and on the key in the server's log.

Screenshots of the main pages go to ``$CONSOLE_SCREENSHOTS`` when set
(``docs/screenshots`` holds the committed ones), else to the test's tmp dir.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from schematic.client import Schematic, SchematicConfig

from tests.support.receiver import Receiver
from tests.support.server import Server, running_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = pytest.mark.slow


@pytest.fixture
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    env = {"TALLY_WEBHOOK_ALLOW_PRIVATE": "true", "TALLY_LOG_LEVEL": "info"}
    with running_server(tmp_path, extra_env=env) as srv:
        yield srv


class Watched:
    """A page whose console errors, page errors and visited URLs are kept."""

    def __init__(self, context: Any, shots: Path) -> None:
        self.page = context.new_page()
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.shots = shots
        self.page.on(
            "console",
            lambda msg: self.errors.append(msg.text) if msg.type in ("error", "warning") else None,
        )
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))
        self.page.on("request", lambda req: self.urls.append(req.url))
        self.page.on("framenavigated", lambda frame: self.urls.append(frame.url))

    def shot(self, name: str) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(self.shots / f"{name}.png"))


def admin(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url, headers={"X-Schematic-Api-Key": server.secret_key}, timeout=10
    )


def sdk(server: Server) -> Schematic:
    return Schematic(
        server.secret_key,
        SchematicConfig(base_url=server.base_url, event_capture_url=server.base_url, timeout=10.0),
    )


def wait_for(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_console_in_a_browser(
    chromium: Any, server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path / "shots")
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, timezone_id="UTC")
    w = Watched(context, shots)
    page = w.page
    base = server.base_url

    # -- sign-in: refusals first ---------------------------------------------------
    page.goto(base + "/")
    assert page.url == base + "/console/sign-in"
    page.fill("#key", "sch_dev_" + "0" * 32)
    page.click("button[type=submit]")
    assert "unknown or has been revoked" in page.inner_text("#sign-in-error")
    page.fill("#key", server.publishable_key)
    page.click("button[type=submit]")
    assert "publishable key" in page.inner_text("#sign-in-error")
    w.shot("sign-in")
    page.fill("#key", server.secret_key)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/console/events")
    assert "development" in page.inner_text(".env-banner")
    assert f'base_url="{base}"' in page.inner_text("#empty")

    # -- a tracked event appears live, without a reload ---------------------------------
    page.evaluate("window.__notReloaded = true")
    client = sdk(server)
    api = admin(server)
    try:
        client.identify(
            keys={"email": "wile@acme.test"},
            company={"keys": {"id": "acme"}, "name": "Acme Inc"},
            name="Wile E.",
        )
        client.track(
            event="api-call", company={"id": "acme"}, user={"email": "wile@acme.test"}, quantity=3
        )
        client.event_buffer.flush()
        page.wait_for_selector("table#events tbody tr td >> text=api-call", timeout=15_000)
        assert page.evaluate("window.__notReloaded") is True
        assert page.is_hidden("#empty")

        # a feature and an allocation, then more usage, a failed event and an endpoint
        feature = api.post(
            "/features",
            json={
                "name": "API calls",
                "description": "",
                "feature_type": "event",
                "event_subtype": "api-call",
            },
        ).json()["data"]
        company_id = wait_for(lambda: api.get("/companies", params={"q": "acme"}).json()["data"])[
            0
        ]["id"]
        override = api.post(
            "/company-overrides",
            json={
                "company_id": company_id,
                "feature_id": feature["id"],
                "value_type": "numeric",
                "value_numeric": 10,
                "metric_period": "current_month",
                "metric_period_month_reset": "first_of_month",
            },
        )
        assert override.status_code in (200, 201), override.text
        for quantity in (2, 4):
            client.track(event="api-call", company={"id": "acme"}, quantity=quantity)
        client.track(event="export", company={"id": "acme"}, quantity=1)
        client.event_buffer.flush()
    finally:
        client.shutdown()
    read_only = httpx.post(
        base + "/batch",
        json={"events": [{"type": "track", "event": "api-call", "company": {"id": "acme"}}]},
        headers={"X-Schematic-Api-Key": server.read_only_key},
    )
    assert read_only.status_code == 200
    hook = api.post(
        "/webhooks",
        json={
            "name": "Limits to Slack",
            "url": receiver.url,
            "request_types": ["entitlement.limit.reached", "entitlement.limit.warning"],
        },
    )
    assert hook.status_code in (200, 201), hook.text
    wait_for(lambda: page.locator("table#events tbody tr").count() >= 6)
    wait_for(lambda: page.inner_text("#count-failed") == "1")
    wait_for(
        lambda: (
            not api.get("/events", params={"limit": 250}).json()["data"]
            or all(
                e["status"] != "pending"
                for e in api.get("/events", params={"limit": 250}).json()["data"]
            )
        )
    )
    page.reload()
    w.shot("events")

    # -- filter ---------------------------------------------------------------------
    page.click("details.filters summary")
    page.fill("input[name=subtype]", "export")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**/console/events?*subtype=export*")
    subtypes = page.locator("table#events tbody tr td:nth-child(3)").all_inner_texts()
    assert subtypes == ["export"]

    # -- one event's journey -------------------------------------------------------------
    page.click("table#events tbody tr td a >> nth=0")
    page.wait_for_url("**/console/events/evt_*")
    timeline = page.inner_text("#timeline")
    for stage in ("sent_at", "captured_at", "loaded_at", "enriched_at", "updated_at"):
        assert stage in timeline
    assert "Acme Inc" in page.inner_text("main")
    assert "API calls" not in page.inner_text("main")  # an export is not an API call

    # -- a keyed event and the duplicate dropped against its key ----------------------------
    keyed = {
        "event_type": "track",
        "idempotency_key": "report-2026-03",
        "body": {
            "event": "report",
            "company": {"id": "acme"},
            "user": {"email": "wile@acme.test"},
            "quantity": 1,
            "traits": {"format": "pdf"},
        },
    }
    first = api.post("/events", json=keyed).json()["data"]
    retry = api.post("/events", json=keyed).json()["data"]
    assert retry["duplicate"] is True and retry["event_id"] == first["event_id"]
    page.goto(base + "/console/events?idempotency_key=report-2026-03")
    page.click("table#events tbody tr td a >> nth=0")
    page.wait_for_url(f"**/console/events/{first['event_id']}")
    assert "1 duplicate dropped, the last at" in page.inner_text("#duplicates")
    w.shot("event")

    # -- failed events, grouped -------------------------------------------------------
    page.click("header nav >> text=Failed")
    page.wait_for_url("**/console/failed")
    assert "read-only" in page.inner_text("#failed-groups")
    w.shot("failed")

    # -- a company: usage against its allocation, and its chart --------------------------
    page.click("header nav >> text=Companies")
    page.click("table#companies >> text=Acme Inc")
    page.wait_for_url("**/console/companies/comp_*")
    usage = page.inner_text("#usage")
    assert "API calls" in usage and "10 / current month" in usage and "9" in usage
    assert page.locator("svg.chart rect").count() == 30
    w.shot("company")

    # -- a user: its activity, its company's usage, the limit webhooks --------------------
    page.click("#company-users >> text=Wile E.")
    page.wait_for_url("**/console/users/user_*")
    assert "api-call" in page.inner_text("#user-activity")
    assert "10 / current month" in page.inner_text("#user-company-usage")
    assert page.locator("svg.chart rect").count() == 30
    w.shot("user")

    # -- webhooks: send a test to the receiver ------------------------------------------
    page.click("header nav >> text=Webhooks")
    page.click("#endpoints button[type=submit]")
    page.wait_for_selector("#test-result")
    assert "delivered, HTTP 200" in page.inner_text("#test-result")
    tests = [r for r in receiver.received() if r.json().get("action") == "test.send"]
    assert len(tests) == 1
    w.shot("webhooks")

    # -- event types and health ---------------------------------------------------------
    page.click("header nav >> text=Event types")
    assert "api-call" in page.inner_text("#event-types")
    page.wait_for_function(
        "document.querySelector('#event-types svg.spark polyline').getAttribute('points') !== ''"
    )
    w.shot("event-types")
    page.click("header nav >> text=Health")
    page.wait_for_selector("#health-events")
    page.wait_for_timeout(2500)  # one live refresh
    assert page.inner_text("[data-field=pending]") == "0"
    w.shot("health")

    # -- a phone-sized screen ----------------------------------------------------------
    phone = chromium.new_context(
        viewport={"width": 390, "height": 844}, storage_state=context.storage_state()
    )
    small = Watched(phone, shots)
    small.page.goto(base + "/console/events")
    small.shot("events-phone")
    assert small.page.evaluate("document.documentElement.scrollWidth") <= 400
    phone.close()

    # -- sign out --------------------------------------------------------------------------
    page.click("button:has-text('Sign out')")
    page.wait_for_url(base + "/console/sign-in")
    page.goto(base + "/console/events")
    assert page.url == base + "/console/sign-in"

    # -- what must never happen ------------------------------------------------------
    for key in (server.secret_key, server.publishable_key):
        assert not [u for u in w.urls + small.urls if key in u]
        assert key not in server.log()
    api.close()
    assert w.errors == [], w.errors
    assert small.errors == [], small.errors
    context.close()
