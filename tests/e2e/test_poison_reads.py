"""No stored value can break a read. A company and a user whose traits were
stored nesting far past the limit — as an older tally let them be — are
planted straight in the database; every route that reads them answers,
through the real server and its storage process, on both backends."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.server import Server

pytestmark = pytest.mark.slow

POISON = "[" * 5_000 + "1" + "]" * 5_000  # past pickle's and every JSON parser's recursion


def plant(server: Server, table: str, entity_id: str) -> None:
    traits = '{"plan": "pro", "poison": ' + POISON + "}"
    sql = f"UPDATE {table} SET traits = {{}} WHERE id = {{}}"
    if server.database_url.startswith("postgresql"):
        with psycopg.connect(server.database_url) as conn:
            conn.execute(sql.format("%s", "%s"), (traits, entity_id))  # type: ignore[arg-type]
    else:
        with sqlite3.connect(server.db_path) as conn:
            conn.execute(sql.format("?", "?"), (traits, entity_id))


def data(response: httpx.Response) -> Any:
    assert response.status_code == 200, (response.status_code, response.text[:300])
    return response.json()["data"]


def assert_readable(entity: dict[str, Any]) -> None:
    assert entity["traits"]["plan"] == "pro"
    assert entity["traits"]["poison"] == POISON  # shown as its JSON text
    shown = {t["definition"]["display_name"]: t["value"] for t in entity["entity_traits"]}
    assert shown["poison"] == POISON


def test_every_read_of_a_poisoned_entity_answers(server: Server) -> None:
    with httpx.Client(
        base_url=server.base_url, headers={"X-Schematic-Api-Key": server.secret_key}, timeout=30
    ) as client:
        company = data(client.post("/companies", json={"keys": {"id": "acme"}}))
        user = data(client.post("/users", json={"keys": {"id": "wile"}, "company": {"id": "acme"}}))
        plant(server, "companies", company["id"])
        plant(server, "users", user["id"])

        for entity in (
            *data(client.get("/companies")),
            data(client.get(f"/companies/{company['id']}")),
            data(client.get("/companies/lookup", params={"keys[id]": "acme"})),
            *data(client.get("/users")),
            data(client.get(f"/users/{user['id']}")),
            data(client.get("/users/lookup", params={"keys": '{"id": "wile"}'})),
        ):
            assert_readable(entity)
        assert data(client.get("/companies/count"))["count"] == 1
        assert len(data(client.get("/company-memberships"))) == 1

        # processing an identify merges into the poisoned traits
        sent = client.post(
            "/events",
            json={"event_type": "identify", "body": {"keys": {"id": "wile"}, "traits": {"x": 1}}},
        )
        assert sent.status_code == 201, sent.text
        event_id = sent.json()["data"]["event_id"]
        deadline = time.monotonic() + 30
        while data(client.get(f"/events/{event_id}"))["status"] == "pending":
            assert time.monotonic() < deadline, "the identify was not processed"
            time.sleep(0.1)
        assert data(client.get(f"/events/{event_id}"))["status"] == "processed"
        merged = data(client.get(f"/users/{user['id']}"))
        assert merged["traits"]["x"] == 1 and merged["traits"]["plan"] == "pro"

        assert data(client.post("/users/delete", json={"keys": {"id": "wile"}}))["id"] == user["id"]
        deleted = data(client.post("/companies/delete", json={"keys": {"id": "acme"}}))
        assert deleted["id"] == company["id"]
        assert data(client.get("/companies")) == []
        assert client.get("/health").status_code == 200
