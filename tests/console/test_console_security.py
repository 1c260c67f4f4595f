"""The console's guards: no page and no data without a session, CSRF on
every POST, the security headers, sign-in refusals, sign-out, expiry and
revocation, and TALLY_CONSOLE=off."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from starlette.routing import Mount, Route

from tally.api.app import create_app
from tally.console.headers import CSP
from tally.settings import Settings
from tests.api.conftest import Api, TestClient
from tests.console.conftest import csrf_of, sign_in


def console_routes(api: Api) -> list[tuple[str, str]]:
    """(method, path) of every route under /console, path parameters filled."""
    mount = next(r for r in api.app.routes if isinstance(r, Mount) and r.path == "/console")
    out = []
    for route in mount.routes:
        if isinstance(route, Route):
            path = re.sub(r"\{[^}]+\}", "x", "/console" + route.path)
            for method in route.methods or ():
                if method != "HEAD":
                    out.append((method, path))
    return out


def test_no_page_or_data_without_a_session(api: Api) -> None:
    routes = console_routes(api)
    assert ("GET", "/console/events") in routes and ("GET", "/console/data/events") in routes
    for method, path in routes:
        if path == "/console/sign-in":
            continue
        answer = api.client.request(method, path, follow_redirects=False)
        if path.startswith("/console/data/"):
            assert answer.status_code == 401, (method, path)
            assert answer.json() == {"error": "sign in to the console first"}
        else:
            assert answer.status_code == 303, (method, path, answer.status_code)
            assert answer.headers["location"] == "/console/sign-in"
    # a made-up cookie is no session
    api.client.cookies.set("tally_console", "forged")
    assert api.client.get("/console/data/events").status_code == 401


def test_the_api_keeps_its_keys(console: Api) -> None:
    """A console session is no API key: the JSON API still wants its header."""
    assert console.client.get("/events").status_code == 401


def test_every_post_needs_the_csrf_token(console: Api) -> None:
    posts = [p for m, p in console_routes(console) if m == "POST" and p != "/console/sign-in"]
    assert "/console/sign-out" in posts
    token = csrf_of(console.client)
    for path in posts:
        for data in ({}, {"csrf_token": "wrong"}, {"csrf_token": token[:-1]}):
            answer = console.client.post(path, data=data, follow_redirects=False)
            assert answer.status_code == 403, (path, data)
        answer = console.client.post(path, headers={"X-CSRF-Token": "wrong"})
        assert answer.status_code == 403
    # still signed in: none of them did anything
    assert console.client.get("/console/data/events").status_code == 200


def test_headers_on_every_console_response(console: Api) -> None:
    for path in ("/", "/console/sign-in", "/console/events", "/console/static/console.js"):
        answer = console.client.get(path, follow_redirects=False)
        assert answer.headers["content-security-policy"] == CSP, path
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert "frame-ancestors 'none'" in CSP
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert console.client.get("/console/events").headers["cache-control"] == "no-store"


def test_pages_have_no_inline_script_or_style(console: Api) -> None:
    page = console.client.get("/console/events").text
    assert "<script src=" in page
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert " style=" not in page and "<style" not in page and " on" + "click=" not in page


def test_session_cookie_flags(api: Api) -> None:
    answer = sign_in(api.client, api.secret)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/events"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("tally_console=")
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=43200" in cookie
    assert api.secret not in cookie
    assert "Secure" not in cookie  # plain http here; https sets it (next test)


def test_secure_cookie_over_https(tmp_path: Path, api: Api) -> None:
    client = TestClient(api.app, base_url="https://testserver")
    answer = sign_in(client, api.secret)
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("tally_console=")
    )
    assert "Secure" in cookie


def test_wrong_and_publishable_keys_are_refused(api: Api) -> None:
    wrong = sign_in(api.client, "sch_dev_" + "x" * 32)
    assert wrong.status_code == 200 and "tally_console=" not in wrong.headers.get("set-cookie", "")
    assert "unknown or has been revoked" in wrong.text
    public = sign_in(api.client, api.publishable)
    assert public.status_code == 200 and 'role="alert"' in public.text
    assert "publishable key" in public.text and "secret key" in public.text
    assert api.publishable not in public.text  # never echoed back
    assert api.client.get("/console/data/events").status_code == 401


def test_sign_in_needs_its_form_token(api: Api) -> None:
    answer = api.client.post(
        "/console/sign-in", data={"key": api.secret, "sign_in_token": "x"}, follow_redirects=False
    )
    assert answer.status_code == 403
    assert api.client.get("/console/data/events").status_code == 401


def test_read_only_key_can_look(api: Api) -> None:
    assert sign_in(api.client, api.read_only).status_code == 303
    page = api.client.get("/console/events")
    assert page.status_code == 200 and "read-only" in page.text


def test_sign_out_ends_the_session(console: Api) -> None:
    stolen = dict(console.client.cookies)
    token = csrf_of(console.client)
    answer = console.client.post(
        "/console/sign-out", data={"csrf_token": token}, follow_redirects=False
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/console/sign-in"
    assert console.client.get("/console/data/events").status_code == 401
    # the old cookie, replayed, is dead too: the session is gone from the database
    replay = TestClient(console.app, cookies=stolen)
    assert replay.get("/console/data/events").status_code == 401


def test_revoking_the_key_ends_its_sessions(console: Api) -> None:
    assert console.client.get("/console/data/events").status_code == 200
    console.revoke(console.secret_id)
    assert console.client.get("/console/data/events").status_code == 401


def test_sessions_expire_after_12_hours(console: Api) -> None:
    console.clock.advance(timedelta(hours=11, minutes=59))
    assert console.client.get("/console/data/events").status_code == 200
    console.clock.advance(timedelta(minutes=2))
    assert console.client.get("/console/data/events").status_code == 401


def test_console_off(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/off.db", console=False, worker=False)
    with TestClient(create_app(settings)) as client:
        assert client.get("/").status_code == 404
        assert client.get("/console/sign-in").status_code == 404
        assert Settings.from_env({"TALLY_CONSOLE": "off"}).console is False


def test_key_never_in_a_redirect(api: Api) -> None:
    answer = sign_in(api.client, api.secret)
    assert api.secret not in answer.headers["location"]


def test_the_environment_kind_is_unmistakable(api: Api) -> None:
    _, production = api.new_key("production")
    assert sign_in(api.client, production).status_code == 303
    page = api.client.get("/console/events").text
    assert '<div class="env-banner env-production" role="status">' in page
    assert '<span class="env-kind">production</span>' in page
    other = TestClient(api.app)
    assert sign_in(other, api.other_env).status_code == 303
    assert '<div class="env-banner env-staging"' in other.get("/console/events").text
