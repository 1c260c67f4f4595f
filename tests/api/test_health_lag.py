"""GET /health's lag figures through the app in-process: the pending backlog,
the age of its oldest event and the processing rate, unauthenticated and
holding counts and ages only. The real server with a stopped and started
worker is tests/e2e/test_lag_warning.py."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from tally.model import PendingBacklog
from tally.observe import lag
from tally.observe.lag import Lag, LagWatch
from tests.api.conftest import Api
from tests.api.helpers import track


def health(api: Api) -> dict[str, Any]:
    response = api.client.get("/health")  # no key
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_health_reports_the_backlog_and_the_age_of_its_oldest_event(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lag, "FRESH_SECONDS", 0.0)  # read again at every request
    assert health(api) == {
        "status": "ok",
        "pending": 0,
        "pending_capped": False,
        "oldest_pending_age_seconds": 0,
        "processing_rate": 0,
    }
    for _ in range(3):
        assert api.create("track", track()).status_code == 201
    api.clock.advance(timedelta(seconds=75))
    assert api.create("track", track()).status_code == 201
    found = health(api)
    assert found["pending"] == 4 and found["pending_capped"] is False
    assert found["oldest_pending_age_seconds"] == 75

    assert api.run(api.storage.process_pending, 100) == 4
    found = health(api)
    assert (found["pending"], found["oldest_pending_age_seconds"]) == (0, 0)
    assert found["processing_rate"] > 0  # 4 since the app started, a moment ago


def test_health_counts_the_backlog_up_to_a_cap(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lag, "FRESH_SECONDS", 0.0)
    monkeypatch.setattr(lag, "PENDING_CAP", 2)
    for _ in range(3):
        assert api.create("track", track()).status_code == 201
    found = health(api)
    assert (found["pending"], found["pending_capped"]) == (2, True)
    exact = api.run(api.storage.pending_backlog)
    assert (exact.count, exact.capped) == (3, False)


def test_health_reads_the_database_at_most_once_a_second(api: Api) -> None:
    assert health(api)["pending"] == 0
    assert api.create("track", track()).status_code == 201
    assert health(api)["pending"] == 0  # the reading of a moment ago


def test_health_holds_no_secret(api: Api) -> None:
    assert api.create("track", track()).status_code == 201
    text = api.client.get("/health").text
    for secret in (api.secret, api.secret[:12], api.environment_id, "acme"):
        assert secret not in text


def test_health_answers_without_figures_when_the_database_is_away(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def away(cap: int | None = None) -> PendingBacklog:
        raise OSError("the database is away")

    monkeypatch.setattr(api.app.state.tally.lag, "_backlog", away)
    for _ in range(3):
        found = health(api)
        assert found["status"] == "ok" and found["pending"] is None
        assert found["oldest_pending_age_seconds"] is None
    said = [r for r in caplog.records if "could not read the pending backlog" in r.getMessage()]
    assert len(said) == 1  # at most once a minute


def test_health_does_not_wait_for_a_slow_database(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def slow(cap: int | None = None) -> PendingBacklog:
        await asyncio.sleep(5)
        return PendingBacklog(0, None)

    monkeypatch.setattr(lag, "READ_TIMEOUT_SECONDS", 0.05)
    monkeypatch.setattr(api.app.state.tally.lag, "_backlog", slow)
    assert health(api)["pending"] is None


class Backlog:
    """A backlog to read, set by the test."""

    def __init__(self) -> None:
        self.value = PendingBacklog(0, None)

    async def __call__(self, cap: int) -> PendingBacklog:
        return self.value


def test_processing_rate_is_over_the_last_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    processed = [0.0]
    monkeypatch.setattr(lag.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(lag, "FRESH_SECONDS", 0.0)
    watch = LagWatch(Backlog(), lambda: 0, 60, processed=lambda: processed[0])

    def after(seconds: float, more: float) -> float:
        clock[0] += seconds
        processed[0] += more
        return asyncio.run(watch.current()).processing_rate

    assert after(10, 1000) == 100  # 1,000 in the 10 s since the start
    assert after(50, 5000) == 100  # 6,000 in 60 s
    assert after(30, 0) == pytest.approx(5000 / 80)  # the sample at 10 s is the start now
    assert after(60, 0) == 0  # nothing in the last minute


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "tally.lag"]


def test_warns_once_a_minute_while_late_and_says_when_caught_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="tally.lag")
    watch = LagWatch(Backlog(), lambda: 0, 60)
    late, fine = Lag(1234, False, 61.0, 0.0), Lag(0, False, 0.0, 500.0)
    watch.judge(fine, 0)
    assert records(caplog) == []
    watch.judge(late, 10)
    watch.judge(late, 40)
    watch.judge(late, 69)
    assert [level for level, _ in records(caplog)] == ["WARNING"]
    (_, message), *_ = records(caplog)
    assert "61 s ago" in message and "1234 events pending" in message
    assert "TALLY_LAG_WARNING_SECONDS=60" in message
    watch.judge(late, 70)  # a minute on, and still late
    watch.judge(fine, 75)
    watch.judge(fine, 80)
    assert [level for level, _ in records(caplog)] == ["WARNING", "WARNING", "INFO"]
    assert "caught up" in records(caplog)[-1][1]


def test_a_threshold_of_zero_never_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="tally.lag")
    LagWatch(Backlog(), lambda: 0, 0).judge(Lag(5, False, 10_000.0, 0.0), 0)
    assert records(caplog) == []
