"""The pending backlog, off the pending-events index (``status = 'pending'``):
how many events wait to be processed and when the oldest was stored.

One query pair for everything that shows it: the metrics' pending gauges
and ``GET /health`` (every environment, the count bounded by a cap so that
a large backlog costs no more than ``cap`` index entries to count), and the
console's pipeline health (one environment).
"""

from __future__ import annotations

from typing import Any

from tally.model import PendingBacklog

_PENDING = "status = 'pending'"
# ``|| ''`` keeps the planner on the pending index rather than the
# environment's index of every event
_IN_ENVIRONMENT = " AND environment_id || '' = ?"


def pending_backlog(
    conn: Any, cap: int | None = None, environment_id: str | None = None
) -> PendingBacklog:
    """The backlog (of one environment, or of all); with ``cap``, a count
    over ``cap`` is reported as ``cap`` and ``capped``."""
    where, args = _PENDING, []
    if environment_id is not None:
        where += _IN_ENVIRONMENT
        args.append(environment_id)
    if cap is None:
        (count,) = conn.execute(f"SELECT COUNT(*) FROM events WHERE {where}", args).fetchone()
    else:
        (count,) = conn.execute(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE {where} LIMIT ?) AS waiting",
            [*args, cap + 1],
        ).fetchone()
    oldest = conn.execute(
        f"SELECT loaded_at FROM events WHERE {where} ORDER BY id LIMIT 1", args
    ).fetchone()
    capped = cap is not None and count > cap
    return PendingBacklog(
        cap if capped and cap is not None else int(count),
        oldest[0] if oldest else None,
        capped,
    )
