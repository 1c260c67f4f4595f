"""``tally.settings.Settings``: typed settings from a mapping plus flag overrides."""

from __future__ import annotations

import pytest

from tally.errors import ConfigError
from tally.settings import DEFAULT_DATABASE_URL, ENV_VARS, Settings


def test_empty_environment_gives_the_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.key_cache_seconds == 5.0
    assert settings.sqlite_synchronous == "FULL"
    assert settings.commit_max_events == 5000
    assert settings.log_level == "warning"
    assert settings.max_request_bytes == 4 * 1024 * 1024
    assert settings.max_event_body_bytes == 32 * 1024
    assert settings.webhook_allow_private is False
    assert settings.http_header_timeout_seconds == 10.0
    assert settings.http_max_connections == 2048 > 256  # the bench's connections


def test_the_hostile_client_settings_are_read() -> None:
    settings = Settings.from_env(
        {
            "TALLY_WEBHOOK_ALLOW_PRIVATE": "true",
            "TALLY_HTTP_HEADER_TIMEOUT_SECONDS": "2.5",
            "TALLY_HTTP_MAX_CONNECTIONS": "300",
        }
    )
    assert settings.webhook_allow_private is True
    assert settings.http_header_timeout_seconds == 2.5
    assert settings.http_max_connections == 300
    assert Settings.from_env(settings.as_environ()) == settings


def test_every_variable_is_read_and_typed() -> None:
    settings = Settings.from_env(
        {
            "TALLY_DATABASE_URL": "sqlite:////var/lib/tally.db",
            "TALLY_HOST": "0.0.0.0",
            "TALLY_PORT": "9100",
            "TALLY_KEY_CACHE_SECONDS": "0.5",
            "TALLY_SQLITE_SYNCHRONOUS": "NORMAL",
            "TALLY_COMMIT_MAX_EVENTS": "250",
            "TALLY_LOG_LEVEL": "debug",
        }
    )
    assert settings.database_url == "sqlite:////var/lib/tally.db"
    assert settings.host == "0.0.0.0"
    assert settings.port == 9100
    assert isinstance(settings.port, int)
    assert settings.key_cache_seconds == 0.5
    assert isinstance(settings.key_cache_seconds, float)
    assert settings.sqlite_synchronous == "NORMAL"
    assert settings.commit_max_events == 250
    assert settings.log_level == "debug"


def test_every_setting_in_env_vars_is_a_field() -> None:
    names = set(Settings.__dataclass_fields__)
    for name, var, description in ENV_VARS:
        assert name in names
        assert var.startswith("TALLY_")
        assert description


def test_unrelated_and_empty_variables_are_ignored() -> None:
    settings = Settings.from_env({"TALLY_PORT": "", "PORT": "1", "TALLY_NOPE": "x"})
    assert settings.port == 8000


def test_overrides_win_over_the_environment() -> None:
    settings = Settings.from_env({"TALLY_PORT": "9100", "TALLY_HOST": "0.0.0.0"}, port=9200)
    assert settings.port == 9200
    assert settings.host == "0.0.0.0"


def test_none_overrides_are_ignored() -> None:
    settings = Settings.from_env({"TALLY_PORT": "9100"}, port=None, host=None)
    assert settings.port == 9100
    assert settings.host == "127.0.0.1"


def test_overrides_may_set_fields_without_a_variable() -> None:
    settings = Settings.from_env({}, max_event_body_bytes=1024)
    assert settings.max_event_body_bytes == 1024


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(TypeError):
        Settings.from_env({}, no_such_setting=1)


def test_reads_the_process_environment_when_given_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_PORT", "9300")
    monkeypatch.setenv("TALLY_LOG_LEVEL", "info")
    settings = Settings.from_env()
    assert settings.port == 9300
    assert settings.log_level == "info"


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("value", ["normal", "extra", "full"])
def test_synchronous_is_case_insensitive(value: str) -> None:
    assert Settings.from_env({"TALLY_SQLITE_SYNCHRONOUS": value}).sqlite_synchronous == value


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"TALLY_PORT": "eighty"}, "TALLY_PORT must be a number"),
        ({"TALLY_PORT": "80.5"}, "TALLY_PORT must be a number"),
        ({"TALLY_PORT": "0"}, "port must be between 1 and 65535"),
        ({"TALLY_PORT": "65536"}, "port must be between 1 and 65535"),
        ({"TALLY_PORT": "-1"}, "port must be between 1 and 65535"),
        ({"TALLY_KEY_CACHE_SECONDS": "soon"}, "TALLY_KEY_CACHE_SECONDS must be a number"),
        ({"TALLY_COMMIT_MAX_EVENTS": "many"}, "TALLY_COMMIT_MAX_EVENTS must be a number"),
        ({"TALLY_COMMIT_MAX_EVENTS": "0"}, "TALLY_COMMIT_MAX_EVENTS must be at least 1"),
        ({"TALLY_HTTP_HEADER_TIMEOUT_SECONDS": "0"}, "TALLY_HTTP_HEADER_TIMEOUT_SECONDS must be"),
        ({"TALLY_HTTP_HEADER_TIMEOUT_SECONDS": "inf"}, "TALLY_HTTP_HEADER_TIMEOUT_SECONDS must be"),
        ({"TALLY_HTTP_MAX_CONNECTIONS": "0"}, "TALLY_HTTP_MAX_CONNECTIONS must be at least 1"),
        ({"TALLY_WEBHOOK_ALLOW_PRIVATE": "maybe"}, "TALLY_WEBHOOK_ALLOW_PRIVATE must be on or off"),
        (
            {"TALLY_SQLITE_SYNCHRONOUS": "OFF"},
            "TALLY_SQLITE_SYNCHRONOUS must be FULL, NORMAL or EXTRA",
        ),
    ],
)
def test_bad_values_raise_config_error(environ: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(environ)
    assert needle in info.value.message


def test_bad_override_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="port"):
        Settings.from_env({}, port=70000)
    with pytest.raises(ConfigError, match="TALLY_COMMIT_MAX_EVENTS"):
        Settings.from_env({"TALLY_COMMIT_MAX_EVENTS": "10"}, commit_max_events=0)


def test_port_edges_are_accepted() -> None:
    assert Settings.from_env({"TALLY_PORT": "1"}).port == 1
    assert Settings.from_env({"TALLY_PORT": "65535"}).port == 65535


@pytest.mark.parametrize(
    "level", ["critical", "error", "warning", "info", "debug", "trace", "INFO"]
)
def test_known_log_levels_are_accepted(level: str) -> None:
    assert Settings.from_env({"TALLY_LOG_LEVEL": level}).log_level == level


def test_unknown_log_level_is_a_config_error() -> None:
    """The server hands log_level to uvicorn, which fails with a KeyError traceback
    on an unknown level; settings must refuse it up front, naming the variable."""
    with pytest.raises(ConfigError, match="TALLY_LOG_LEVEL"):
        Settings.from_env({"TALLY_LOG_LEVEL": "loud"})


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_key_cache_seconds_must_be_finite(value: str) -> None:
    """``inf`` would cache keys forever (a revoked key would keep working);
    ``nan`` is meaningless."""
    with pytest.raises(ConfigError, match="TALLY_KEY_CACHE_SECONDS"):
        Settings.from_env({"TALLY_KEY_CACHE_SECONDS": value})


def test_zero_key_cache_seconds_is_accepted() -> None:
    assert Settings.from_env({"TALLY_KEY_CACHE_SECONDS": "0"}).key_cache_seconds == 0.0
