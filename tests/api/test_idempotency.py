"""SPEC §3 rule 4: an idempotency key holds for 24 hours per (environment,
event type); a duplicate is a success naming the kept event; a race stores one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from tally.clock import FrozenClock
from tests.api.conftest import NOW_TEXT, Api, open_api
from tests.api.helpers import assert_ok, assert_raw_event, body, track


def _send(
    api: Api,
    key: str,
    *,
    event_type: str = "track",
    api_key: str | None = "",
    sent: dict[str, Any] | None = None,
    **fields: Any,
) -> str:
    sent = sent if sent is not None else (track() if event_type == "track" else body(event_type))
    response = api.create(event_type, sent, key=api_key, idempotency_key=key, **fields)
    return assert_raw_event(assert_ok(response, 201, params={}))


def _stored(api: Api, key: str, *, api_key: str | None = "") -> list[dict[str, Any]]:
    return api.list_events(key=api_key, idempotency_key=key)


def test_same_key_twice_is_one_event(api: Api) -> None:
    first = api.create("track", track(), idempotency_key="k1")
    second = api.create("track", track(), idempotency_key="k1")
    first_data = assert_ok(first, 201, params={})
    second_data = assert_ok(second, 201, params={})
    assert assert_raw_event(second_data) == assert_raw_event(first_data)
    assert second_data["captured_at"] == first_data["captured_at"] == NOW_TEXT
    stored = _stored(api, "k1")
    assert [e["id"] for e in stored] == [first_data["event_id"]]
    assert len(api.list_events()) == 1


def test_duplicate_changes_nothing(api: Api) -> None:
    kept = _send(api, "k1", sent=track("original", quantity=2))
    api.clock.advance(timedelta(minutes=10))
    again = _send(api, "k1", sent=track("changed", quantity=99))
    assert again == kept
    (event,) = _stored(api, "k1")
    assert event["subtype"] == "original"
    assert event["quantity"] == 2
    assert event["captured_at"] == NOW_TEXT
    assert event["body"] == track("original", quantity=2)
    rows = assert_ok(api.get("/event-types"))
    assert [r["event_subtype"] for r in rows] == ["original"]


def test_duplicate_23h59m_later_is_still_dropped(api: Api) -> None:
    kept = _send(api, "k1")
    api.clock.advance(timedelta(hours=23, minutes=59))
    assert _send(api, "k1") == kept
    api.clock.advance(timedelta(seconds=59))  # 23:59:59 after the first
    assert _send(api, "k1") == kept
    assert [e["id"] for e in _stored(api, "k1")] == [kept]


def test_key_is_free_again_after_24_hours(api: Api) -> None:
    kept = _send(api, "k1")
    api.clock.advance(timedelta(hours=24, minutes=1))
    renewed = _send(api, "k1")
    assert renewed != kept
    assert [e["id"] for e in _stored(api, "k1")] == [renewed, kept]
    detail = assert_ok(api.get(f"/events/{renewed}"))
    assert detail["captured_at"] == "2026-03-16T12:01:00.000000Z"
    # and the new event now holds the key for its own 24 hours
    api.clock.advance(timedelta(hours=1))
    assert _send(api, "k1") == renewed
    assert len(_stored(api, "k1")) == 2


def test_window_counts_from_the_first_event_not_the_duplicates(api: Api) -> None:
    kept = _send(api, "k1")
    for step in (timedelta(hours=8), timedelta(hours=8), timedelta(hours=8, seconds=1)):
        api.clock.advance(step)  # 8h, 16h: duplicates; 24h 1s: past the first's window
        _send(api, "k1")
    stored = _stored(api, "k1")
    assert len(stored) == 2
    assert stored[-1]["id"] == kept


def test_window_is_receipt_time_not_sent_at(api: Api) -> None:
    """A backdated event holds its key for 24 hours from when it arrived."""
    kept = _send(api, "k1", sent_at="2026-02-20T00:00:00Z", trusted_client_clock=True)
    api.clock.advance(timedelta(hours=1))
    assert _send(api, "k1") == kept
    assert len(_stored(api, "k1")) == 1


def test_other_event_type_is_a_separate_event(api: Api) -> None:
    as_track = _send(api, "shared")
    as_identify = _send(api, "shared", event_type="identify")
    as_flag = _send(api, "shared", event_type="flag_check")
    assert len({as_track, as_identify, as_flag}) == 3
    stored = _stored(api, "shared")
    assert sorted(e["type"] for e in stored) == ["flag_check", "identify", "track"]
    # each type still dedupes on its own
    assert _send(api, "shared", event_type="identify") == as_identify
    assert len(_stored(api, "shared")) == 3


def test_other_environment_is_a_separate_event(api: Api) -> None:
    mine = _send(api, "shared")
    theirs = _send(api, "shared", api_key=api.other_env)
    assert mine != theirs
    assert [e["id"] for e in _stored(api, "shared")] == [mine]
    assert [e["id"] for e in _stored(api, "shared", api_key=api.other_env)] == [theirs]


def test_keys_of_one_environment_share_the_scope(api: Api) -> None:
    kept = _send(api, "k1")
    assert _send(api, "k1", api_key=api.publishable) == kept
    _, second_secret = api.new_key("development")
    assert _send(api, "k1", api_key=second_secret) == kept
    assert len(_stored(api, "k1")) == 1


def test_no_key_never_dedupes(api: Api) -> None:
    for _ in range(3):
        assert_ok(api.create("track", track()), 201)
    assert len(api.list_events()) == 3


def test_duplicates_inside_one_event_batch(api: Api) -> None:
    events = [
        {"event_type": "track", "body": track("a"), "idempotency_key": "dup"},
        {"event_type": "track", "body": track("b"), "idempotency_key": "dup"},
        {"event_type": "identify", "body": body("identify"), "idempotency_key": "dup"},
        {"event_type": "track", "body": track("c")},
    ]
    data = assert_ok(api.post("/event-batch", {"events": events}), 201)
    ids = [assert_raw_event(item) for item in data["events"]]
    assert ids[0] == ids[1]
    assert len({ids[0], ids[2], ids[3]}) == 3
    assert sorted(e["type"] for e in _stored(api, "dup")) == ["identify", "track"]
    assert len(api.list_events()) == 3
    assert [e["subtype"] for e in _stored(api, "dup") if e["type"] == "track"] == ["a"]


def test_duplicate_across_event_batch_calls(api: Api) -> None:
    payload = {"events": [{"event_type": "track", "body": track(), "idempotency_key": "b1"}]}
    first = assert_ok(api.post("/event-batch", payload), 201)["events"][0]["event_id"]
    second = assert_ok(api.post("/event-batch", payload), 201)["events"][0]["event_id"]
    assert first == second
    assert len(_stored(api, "b1")) == 1


def test_duplicates_in_capture_batch(api: Api) -> None:
    kept = _send(api, "cap")  # through POST /events first
    events = [
        {"type": "track", "body": track(), "idempotency_key": "cap"},
        {"type": "track", "body": track(), "idempotency_key": "cap2"},
        {"type": "track", "body": track(), "idempotency_key": "cap2"},
    ]
    data = assert_ok(api.post("/batch", {"events": events}), 200)
    results = data["events"]
    assert results[0]["event_id"] == kept
    assert results[0]["duplicate"] is True
    assert results[1]["status"] == "pending"
    assert results[1].get("duplicate", False) is False
    assert results[2]["event_id"] == results[1]["event_id"]
    assert results[2]["duplicate"] is True
    assert len(_stored(api, "cap")) == 1
    assert len(_stored(api, "cap2")) == 1
    assert len(api.list_events()) == 2


def test_failed_capture_event_does_not_take_the_key(api: Api) -> None:
    events = [{"type": "track", "body": {"quantity": 1}, "idempotency_key": "retry-me"}]
    data = assert_ok(api.post("/batch", {"events": events}), 200)
    assert data["events"][0]["status"] == "failed"
    fixed = _send(api, "retry-me")
    stored = api.list_events(idempotency_key="retry-me")
    assert [e["status"] for e in stored] == ["pending", "failed"]
    assert stored[0]["id"] == fixed


def test_refused_event_does_not_take_the_key(api: Api) -> None:
    response = api.create("track", track(quantity=0), idempotency_key="k1")
    assert response.status_code == 400
    kept = _send(api, "k1")
    assert [e["id"] for e in _stored(api, "k1")] == [kept]


# -- races --------------------------------------------------------------------


class InFlight:
    """An ASGI wrapper that records how many HTTP requests ran at once."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.now = 0
        self.most = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


def _race(n: int, fire: Callable[[], Any]) -> list[Any]:
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            out[i] = fire()
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return out


def test_racing_identical_events_store_one(tmp_path: Path, clock: FrozenClock) -> None:
    rounds = 5
    wrappers: list[InFlight] = []

    def wrap(app: Any) -> InFlight:
        wrappers.append(InFlight(app))
        return wrappers[-1]

    with open_api(tmp_path, clock, wrap=wrap) as api:
        for round_ in range(rounds):
            key = f"race-{round_}"
            payload = {"event_type": "track", "body": track(), "idempotency_key": key}
            responses = _race(16, lambda p=payload: api.post("/events", p))
            ids = {assert_raw_event(assert_ok(r, 201)) for r in responses}
            assert len(ids) == 1
            stored = api.list_events(idempotency_key=key)
            assert [e["id"] for e in stored] == list(ids)
        # the requests really overlapped: the test client does not serialize them
        assert wrappers[0].most > 1
        assert len(api.list_events()) == rounds


def test_racing_capture_batches_store_one(tmp_path: Path, clock: FrozenClock) -> None:
    wrappers: list[InFlight] = []

    def wrap(app: Any) -> InFlight:
        wrappers.append(InFlight(app))
        return wrappers[-1]

    with open_api(tmp_path, clock, wrap=wrap) as api:
        payload = {
            "events": [
                {"type": "track", "body": track(), "idempotency_key": "cap-race"},
                {"type": "identify", "body": body("identify"), "idempotency_key": "cap-race"},
            ]
        }
        responses = _race(12, lambda: api.post("/batch", payload))
        results = [assert_ok(r, 200)["events"] for r in responses]
        assert len({r[0]["event_id"] for r in results}) == 1
        assert len({r[1]["event_id"] for r in results}) == 1
        assert sum(1 for r in results if not r[0].get("duplicate", False)) == 1
        assert sum(1 for r in results if not r[1].get("duplicate", False)) == 1
        assert wrappers[0].most > 1
        stored = api.list_events(idempotency_key="cap-race")
        assert sorted(e["type"] for e in stored) == ["identify", "track"]


def test_racing_mixed_endpoints_store_one(tmp_path: Path, clock: FrozenClock) -> None:
    with open_api(tmp_path, clock) as api:
        single = {"event_type": "track", "body": track(), "idempotency_key": "mixed"}
        batch = {"events": [single]}
        capture = {"events": [{"type": "track", "body": track(), "idempotency_key": "mixed"}]}
        calls = [
            lambda: assert_ok(api.post("/events", single), 201)["event_id"],
            lambda: assert_ok(api.post("/event-batch", batch), 201)["events"][0]["event_id"],
            lambda: assert_ok(api.post("/batch", capture), 200)["events"][0]["event_id"],
        ]
        counter = iter(range(10_000))
        lock = threading.Lock()

        def fire() -> Any:
            with lock:
                i = next(counter)
            return calls[i % len(calls)]()

        ids = set(_race(15, fire))
        assert len(ids) == 1
        assert [e["id"] for e in api.list_events(idempotency_key="mixed")] == list(ids)
