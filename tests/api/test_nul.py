"""The NUL character (``%00`` in a URL, ``\\u0000`` in JSON) is refused with a
400 on every route, on both backends: PostgreSQL cannot store it in text,
and before this check it answered 500 (and one such event in a commit failed
every request sharing that commit)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tally.api.app import create_app
from tally.clock import FrozenClock
from tally.keys import create_key
from tally.settings import Settings
from tests.api.conftest import NOW, TestClient
from tests.api.helpers import assert_error, assert_ok


@pytest.fixture(params=["sqlite", "postgres"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    url = (
        request.getfixturevalue("postgres_url")
        if request.param == "postgres"
        else f"sqlite:///{tmp_path}/t.db"
    )
    settings = Settings(database_url=url, key_cache_seconds=0, worker=False, deliver=False)
    app = create_app(settings, clock=FrozenClock(NOW))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        storage = app.state.tally.storage
        _, key, _ = test_client.portal.call(functools.partial(create_key, storage, "development"))
        yield test_client, key


GETS = [
    "/companies?q=%00",
    "/companies?ids=a%00",
    "/companies/lookup?keys[id]=%00",
    "/companies/%00",
    "/events?company_id=%00",
    "/events/evt%00",
    "/users?company_id=%00",
    "/features?q=%00",
    "/webhook-events?webhook_id=%00",
    "/usage-by-company?keys[id]=%00",
]


@pytest.mark.parametrize("url", GETS)
def test_nul_in_a_url_is_400(client: tuple[TestClient, str], url: str) -> None:
    test_client, key = client
    assert_error(test_client.get(url, headers={"X-Schematic-Api-Key": key}), 400, contains="NUL")


NUL = "\\u0000"
POSTS: list[tuple[str, str]] = [
    ("/events", '{"event_type":"track","body":{"event":"a@"}}'),
    ("/events", '{"event_type":"track","idempotency_key":"@","body":{"event":"x"}}'),
    ("/event-batch", '{"events":[{"event_type":"track","body":{"event":"a@"}}]}'),
    ("/companies", '{"keys":{"id":"a@"}}'),
    ("/companies", '{"keys":{"id":"a"},"traits":{"t":"@"}}'),
    ("/company-traits", '{"keys":{"id":"a"},"trait":"t","set":"@"}'),
    ("/users", '{"keys":{"id":"@"}}'),
    ("/features", '{"name":"@","feature_type":"boolean"}'),
    ("/webhooks", '{"name":"@","url":"https://x.test/","request_types":["company.created"]}'),
]


@pytest.mark.parametrize(("path", "template"), POSTS)
def test_nul_in_a_json_body_is_400(
    client: tuple[TestClient, str], path: str, template: str
) -> None:
    test_client, key = client
    response = test_client.post(
        path, content=template.replace("@", NUL).encode(), headers={"X-Schematic-Api-Key": key}
    )
    assert_error(response, 400, contains="NUL")


def test_nul_in_a_map_given_as_json_text_is_400(client: tuple[TestClient, str]) -> None:
    test_client, key = client
    response = test_client.get(
        "/companies/lookup",
        params={"keys": '{"id":"@"}'.replace("@", NUL)},
        headers={"X-Schematic-Api-Key": key},
    )
    assert_error(response, 400, contains="NUL")


def test_a_capture_event_with_nul_fails_alone_and_keeps_nothing(
    client: tuple[TestClient, str],
) -> None:
    test_client, key = client
    raw = (
        '{"events":[{"type":"track","body":{"event":"ok"}},'
        '{"type":"tr@ack","idempotency_key":"k@","body":{"event":"a@"}}]}'
    ).replace("@", NUL)
    headers: dict[str, Any] = {"X-Schematic-Api-Key": key}
    results = assert_ok(test_client.post("/batch", content=raw.encode(), headers=headers))
    assert [r["status"] for r in results["events"]] == ["pending", "failed"]
    assert "NUL" in results["events"][1]["error_message"]
    stored = assert_ok(
        test_client.get(f"/events/{results['events'][1]['event_id']}", headers=headers)
    )
    assert (stored["type"], stored["body"], stored.get("idempotency_key")) == ("unknown", {}, None)


def test_an_escaped_backslash_before_u0000_is_plain_text(client: tuple[TestClient, str]) -> None:
    test_client, key = client
    raw = '{"keys":{"id":"a"},"traits":{"path":"C:\\\\u0000"}}'
    company = assert_ok(
        test_client.post("/companies", content=raw.encode(), headers={"X-Schematic-Api-Key": key})
    )
    assert company["traits"] == {"path": "C:\\u0000"}
