"""The portable-SQL adapter on a real PostgreSQL: ``?`` placeholders, and a
literal ``%`` with and without parameters."""

from __future__ import annotations

from tally.storage.postgres.adapter import PgConnection


def test_percent_signs_survive_with_and_without_parameters(postgres_url: str) -> None:
    conn = PgConnection.connect(postgres_url)
    try:
        assert conn.execute("SELECT '5%'").fetchone() == ("5%",)
        assert conn.execute("SELECT '5%' || ?", ("!",)).fetchone() == ("5%!",)
        assert conn.execute("SELECT 7 % 3").fetchone() == (1,)
        assert conn.execute("SELECT ? % 3", (7,)).fetchone() == (1,)
        conn.execute("BEGIN")
        assert conn.execute("SELECT '10%'").fetchone() == ("10%",)
        conn.execute("COMMIT")
    finally:
        conn.raw.close()
