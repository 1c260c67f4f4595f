"""The start-up warnings about PostgreSQL settings that leave tally's tables
unmanaged (``tally.storage.postgres.stats.settings_warnings``)."""

from __future__ import annotations

from typing import Any

import pytest

from tally.storage.postgres.stats import settings_warnings


class _Settings:
    """Answers ``SHOW name`` from a dict, as a PostgreSQL connection would."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def execute(self, sql: str, params: Any = ()) -> _Settings:
        self.row = (self.values[sql.removeprefix("SHOW ")],)
        return self

    def fetchone(self) -> tuple[str]:
        return self.row


def test_defaults_warn_about_nothing() -> None:
    assert settings_warnings(_Settings({"autovacuum": "on", "track_counts": "on"})) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("setting", ["autovacuum", "track_counts"])
def test_a_setting_off_is_named_with_its_consequence(setting: str) -> None:
    values = {"autovacuum": "on", "track_counts": "on", setting: "off"}
    (warning,) = settings_warnings(_Settings(values))  # type: ignore[arg-type]
    assert warning.startswith(f"PostgreSQL setting {setting} is off: ")
    assert "vacuum" in warning
