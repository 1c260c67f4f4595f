"""Deep pages of ``GET /events`` at keyset speed, with ``offset`` meaning
exactly what it meant (the SDK pages with ``limit`` and ``offset`` only).

A page at ``offset`` N is the N+1th newest matching event and those after
it. ``OFFSET N`` makes the database step over N rows; this module remembers
where served pages began and ended, so that the next page of a client that
pages on (N, N+100, N+200 …), or asks for the same page again, starts from
an id instead:

- ``PageCursors`` maps (environment, filters, offset) to the id of the event
  at that position, and the newest matching id when it was seen (``head``),
  in a small LRU per storage (reader threads share it).
- A hit is checked before it is used: the events newer than ``head`` that
  match now (new arrivals, found through the index the filter uses) push
  every position down by their number, so the page is read from the id they
  point back to. More arrivals than a page, or an anchor event that is gone
  (retention pruned it), and the page is read with ``OFFSET`` as before.
- Only filters on what never changes after ingest are remembered (type,
  subtype, idempotency key, flag, id range): processing ties pending events to
  their company and user and settles their status, which would move events
  into the middle of a filtered list.

Without a hit, the page's ids are found with ``OFFSET`` on the ids alone (an
index-only scan when an index covers the filters), and then read by id.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from tally.model import EventFilter

CURSORS = 512  # remembered positions per storage
MIN_OFFSET = 200  # shallower pages are cheap with OFFSET

Key = tuple[str, EventFilter, int]


@dataclass(frozen=True, slots=True)
class Anchor:
    event_id: str  # the event at the position
    head: str  # the newest matching event then


def remembered(where: EventFilter) -> bool:
    """Whether pages of ``where`` may start from a remembered position."""
    return where.company_id is None and where.user_id is None and where.status is None


class PageCursors:
    """A bounded, thread-safe LRU of positions in filtered event lists."""

    def __init__(self, size: int = CURSORS) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._anchors: OrderedDict[Key, Anchor] = OrderedDict()

    @staticmethod
    def key(environment_id: str, where: EventFilter, offset: int) -> Key:
        return (environment_id, replace(where, limit=0, offset=0), offset)

    def get(self, key: Key) -> Anchor | None:
        with self._lock:
            anchor = self._anchors.get(key)
            if anchor is not None:
                self._anchors.move_to_end(key)
            return anchor

    def put(self, key: Key, anchor: Anchor) -> None:
        with self._lock:
            self._anchors[key] = anchor
            self._anchors.move_to_end(key)
            while len(self._anchors) > self._size:
                self._anchors.popitem(last=False)


def page_ids(
    conn: Any,
    cursors: PageCursors,
    environment_id: str,
    where: EventFilter,
    clauses: list[str],
    args: list[Any],
) -> list[str] | None:
    """The ids of the page ``where`` asks for (newest first), or None when it
    is shallow enough for a plain ``OFFSET`` read."""
    if where.offset < MIN_OFFSET:
        return None
    cond = " AND ".join(clauses)
    head = ""
    found = None
    remember = remembered(where)
    if remember:
        head_row = conn.execute(
            f"SELECT id FROM events WHERE {cond} ORDER BY id DESC LIMIT 1", args
        ).fetchone()
        if head_row is None:
            return []
        head = str(head_row[0])
        found = _from_anchor(conn, cursors, environment_id, where, cond, args)
    if found is None:
        found = [
            str(r[0])
            for r in conn.execute(
                f"SELECT id FROM events WHERE {cond} ORDER BY id DESC LIMIT ? OFFSET ?",
                [*args, where.limit, where.offset],
            ).fetchall()
        ]
    if remember and found:
        cursors.put(cursors.key(environment_id, where, where.offset), Anchor(found[0], head))
        if len(found) == where.limit:
            # the next page starts right after this one's last event: remember
            # it as "the next one older than the last", found by that read
            nxt = conn.execute(
                f"SELECT id FROM events WHERE {cond} AND id < ? ORDER BY id DESC LIMIT 1",
                [*args, found[-1]],
            ).fetchone()
            if nxt is not None:
                cursors.put(
                    cursors.key(environment_id, where, where.offset + len(found)),
                    Anchor(str(nxt[0]), head),
                )
    return found


def _from_anchor(
    conn: Any,
    cursors: PageCursors,
    environment_id: str,
    where: EventFilter,
    cond: str,
    args: list[Any],
) -> list[str] | None:
    anchor = cursors.get(cursors.key(environment_id, where, where.offset))
    if anchor is None:
        return None
    if (
        conn.execute(
            f"SELECT 1 FROM events WHERE {cond} AND id = ?", [*args, anchor.event_id]
        ).fetchone()
        is None
    ):
        return None  # gone: positions before it may have moved
    arrived = [
        str(r[0])
        for r in conn.execute(
            f"SELECT id FROM events WHERE {cond} AND id > ? ORDER BY id LIMIT ?",
            [*args, anchor.head, where.limit + 1],
        ).fetchall()
    ]
    shift = len(arrived)
    if shift > where.limit:
        return None
    # ``shift`` new events push the list down: the page begins ``shift``
    # events newer than the anchor (the oldest ones of the anchor's own page)
    newer = (
        [
            str(r[0])
            for r in conn.execute(
                f"SELECT id FROM events WHERE {cond} AND id > ? ORDER BY id LIMIT ?",
                [*args, anchor.event_id, shift],
            ).fetchall()
        ]
        if shift
        else []
    )
    if len(newer) < shift:
        return None
    rest = [
        str(r[0])
        for r in conn.execute(
            f"SELECT id FROM events WHERE {cond} AND id <= ? ORDER BY id DESC LIMIT ?",
            [*args, anchor.event_id, where.limit - shift],
        ).fetchall()
    ]
    return list(reversed(newer)) + rest
