"""PostgreSQL's key look-up of processing is planned each time it runs, never
prepared (``PgUnitOfWork.key_lookup``): a generic plan made while the key
table was empty (inside the first batch of a fresh database) would scan the
whole table for every value once it has grown."""

from __future__ import annotations

from tally.storage.postgres.adapter import PgConnection
from tally.storage.postgres.schema import migrate
from tally.storage.postgres.storage import PgUnitOfWork


def test_the_key_look_up_is_never_prepared_and_finds_every_stored_key(postgres_url: str) -> None:
    conn = PgConnection.connect(postgres_url)
    try:
        migrate(conn)
        conn.execute(
            "INSERT INTO environments (id, name, kind, created_at) "
            "VALUES ('env_k', 'development', 'development', 0)"
        )
        conn.execute(
            "INSERT INTO users (id, environment_id, traits, created_at, updated_at) "
            "SELECT 'user_' || i, 'env_k', '{}', 0, 0 FROM generate_series(1, 600) AS i"
        )
        conn.execute(
            "INSERT INTO user_keys (environment_id, key, value, entity_id, created_at) "
            "SELECT 'env_k', 'id', 'u-' || i, 'user_' || i, 0 FROM generate_series(1, 600) AS i"
        )
        uow = PgUnitOfWork(conn)
        values = [f"u-{i}" for i in range(1, 501)] + ["nobody"]
        for _ in range(8):  # psycopg prepares a statement on its 5th run
            found = uow.key_lookup("user_keys", "env_k", "id", values)
        assert sorted(found) == sorted((f"u-{i}", f"user_{i}") for i in range(1, 501))
        prepared = [
            row[0]
            for row in conn.raw.execute("SELECT statement FROM pg_prepared_statements").fetchall()
        ]
        assert not [s for s in prepared if "CROSS JOIN LATERAL" in s], prepared
        # what the check would see if it were prepared (the test can fail)
        for _ in range(6):
            conn.execute("SELECT 1 FROM user_keys WHERE value = ?", ("u-1",))
        prepared = conn.raw.execute("SELECT statement FROM pg_prepared_statements").fetchall()
        assert any("user_keys" in row[0] for row in prepared)
    finally:
        conn.close()
