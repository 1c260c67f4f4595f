"""Log lines, request ids and the /metrics access rule (tally.observe)."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from tally.errors import ConfigError
from tally.observe.exposition import access, is_loopback
from tally.observe.logs import Formatter, RequestInfo, current_request, log_config, redact
from tally.observe.requests import MAX_REQUEST_ID, request_id
from tally.settings import Settings


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("tally.test", logging.WARNING, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def test_json_line_has_time_level_role_and_request_fields() -> None:
    line = Formatter("json", "storage").format(
        record(
            "%s %s %d",
            "POST",
            "/events",
            201,
            request_id="r-1",
            method="POST",
            route="/events",
            status=201,
            duration_ms=1.5,
            environment_id="env_1",
            event_ids=["evt_1", "evt_2"],
        )
    )
    assert "\n" not in line
    fields = json.loads(line)
    assert fields["time"].endswith("Z") and fields["time"][10] == "T"
    assert fields["level"] == "warning"
    assert fields["role"] == "storage"
    assert fields["message"] == "POST /events 201"
    assert fields["request_id"] == "r-1"
    assert fields["route"] == "/events"
    assert fields["status"] == 201
    assert fields["duration_ms"] == 1.5
    assert fields["environment_id"] == "env_1"
    assert fields["event_ids"] == ["evt_1", "evt_2"]


def test_a_line_inside_a_request_carries_its_id_and_exceptions_stay_on_one_json_line() -> None:
    token = current_request.set(RequestInfo("req-9"))
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            rec = record("failed")
            rec.exc_info = sys.exc_info()
        fields = json.loads(Formatter("json", "http").format(rec))
    finally:
        current_request.reset(token)
    assert fields["request_id"] == "req-9"
    assert "ValueError: boom" in fields["exception"]
    text = Formatter("text", "worker").format(record("plain", request_id="r-2"))
    assert " WARNING  worker  tally.test: plain request_id=r-2" in text


@pytest.mark.parametrize(
    "secret",
    [
        "sch_dev_AbCdEf0123456789xyzXYZ01",
        "sch_prod_AbCdEf0123456789xyzXYZ01",
        "api_AbCdEf0123456789xyzXYZ01",
        "whsec_0123456789abcdef0123",
    ],
)
def test_keys_and_secrets_are_redacted(secret: str) -> None:
    for kind in ("json", "text"):
        line = Formatter(kind, "http").format(record("saw %s in a header", secret))
        assert secret not in line
        assert "[redacted]" in line


def test_bearer_tokens_and_url_passwords_are_redacted() -> None:
    assert "hunter2" not in redact("authorization: Bearer hunter2")
    assert "hunter2" not in redact("(b'authorization', b'bearer hunter2')")
    assert redact("POST https://user:hunter2@sink.example/records") == (
        "POST https://[redacted]@sink.example/records"
    )
    assert redact("an api_call event") == "an api_call event"  # words are left alone


def test_request_id_is_kept_only_when_short_and_safe() -> None:
    assert request_id([(b"x-request-id", b"abc-123:X_y.z")]) == "abc-123:X_y.z"
    for bad in (b"", b"has space", b'quote"', b"\xff", b"a" * (MAX_REQUEST_ID + 1), b"a\nb"):
        made = request_id([(b"x-request-id", bad)])
        assert made != bad.decode("latin-1")
        assert len(made) == 16 and int(made, 16) >= 0
    assert request_id([]) != request_id([])  # a new one each time


def test_log_config_sends_every_logger_through_one_formatter() -> None:
    config = log_config("debug", "json", "http")
    assert config["formatters"]["tally"]["kind"] == "json"
    assert config["root"]["level"] == logging.DEBUG
    assert config["loggers"]["uvicorn.access"]["propagate"] is False
    assert log_config("TRACE", "text", "worker")["root"]["level"] == 5


def test_metrics_access_rule() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.8.9.1")
    assert not is_loopback("10.0.0.1") and not is_loopback(None) and not is_loopback("testclient")
    # loopback: always, token or not
    assert access("127.0.0.1", None, "") is None
    assert access("::1", None, "s3cret") is None
    # off loopback without a token set: never
    refused = access("203.0.113.9", "Bearer anything", "")
    assert refused is not None and refused.status == 403
    # off loopback with a token set: only with it
    assert access("203.0.113.9", "Bearer s3cret", "s3cret") is None
    assert access("203.0.113.9", "bearer s3cret", "s3cret") is None
    for wrong in (None, "", "Bearer", "Bearer s3cre", "Basic s3cret", "Bearer s3cret2"):
        refused = access("203.0.113.9", wrong, "s3cret")
        assert refused is not None and refused.status == 401


def test_log_format_setting() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"TALLY_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="TALLY_LOG_FORMAT must be text or json"):
        Settings.from_env({"TALLY_LOG_FORMAT": "xml"})
