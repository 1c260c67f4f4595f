"""Waiting for a PostgreSQL lock wait: how a race test knows that the
transaction it started is blocked on the one it holds open."""

from __future__ import annotations

import time
from typing import Any


def wait_for_a_lock_wait(conn: Any, timeout: float = 20.0) -> None:
    """Until some other connection of this database waits on a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        ).fetchone()
        if row[0]:
            return
        time.sleep(0.02)
    raise AssertionError(f"no other connection waited on a lock within {timeout:g} s")
