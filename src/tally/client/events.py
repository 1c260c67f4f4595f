"""Lines of an import file → bodies of ``POST /events`` (pure: no I/O).

An NDJSON line is one create-event body (``event_type``, ``body``,
``sent_at``, optional ``idempotency_key``); a CSV row becomes a ``track``
event through the ``--map`` of its columns. Either is checked with the
server's own rules (``tally.ingest.parse.build_event``), so a line refused
here is refused with the words the server would use. The rules that depend on
the server — its clock, the key's rights, its size settings — are left to the
server, except in a dry run, which applies them against this machine's clock.

An event without an ``idempotency_key`` gets one derived from the file's
identity and its line number: sending a line twice, from this run or from a
resumed one, stores it once (within the server's 24-hour key window).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from tally.errors import Invalid
from tally.ingest import rules, wire
from tally.ingest.parse import Context, KeyedRefusal, build_event, decode_json
from tally.ingest.timeparse import parse_timestamp
from tally.model import ApiKey

DEFAULT_MAX_EVENT_BODY_BYTES = 32 * 1024  # the server's default; a dry run checks against it
_ANY_SIZE = 2**62  # a real import leaves body sizes to the server's own setting
_ENCODER = msgspec.json.Encoder()


def _rule(
    ctx: Context,
    env: wire.CreateEventEnvelope,
    key: str,
    trusted: bool | None,
    backfill: bool | None,
) -> None:
    """The server's rules on one event; raises the ``TallyError`` that
    refuses it. (Every imported event has a key, which the server would look
    up before ruling, as a retry may hold it; here there is nothing to look
    up: the line is refused in the words the server would use.)"""
    try:
        build_event(ctx, env.event_type, env.body, env.sent_at, key, trusted, backfill)
    except KeyedRefusal as refusal:
        raise refusal.error from None


def derived_key(file_id: str, line: int) -> str:
    """The idempotency key of line ``line`` of the file whose content hash is
    ``file_id``: the same file and line give the same key on every run."""
    return f"import-{file_id[:32]}-{line}"


@dataclass(frozen=True)
class EventOptions:
    """How every event of the file is sent."""

    backfill: bool = False
    trusted_clock: bool = False
    publishable: bool = False  # the key is a publishable (api_…) one
    dry_run: bool = False  # also apply the clock and size rules, against ``now``


class EventMaker:
    """Checks a line and gives the JSON of the event to send; raises
    ``TallyError`` (with the server's wording) when the line is refused."""

    def __init__(self, file_id: str, options: EventOptions, now: Callable[[], datetime]) -> None:
        self._file_id = file_id
        self._options = options
        self._now = now
        key = ApiKey(
            id="key_import",
            environment_id="env_import",
            kind="publishable" if options.publishable else "secret",
            read_only=False,
            prefix="",
            created_at=0,
        )
        limit = DEFAULT_MAX_EVENT_BODY_BYTES if options.dry_run else _ANY_SIZE
        self._key = key
        self._limit = limit
        self._context = Context(key, now(), max_event_body_bytes=limit)

    def from_json(self, line: int, raw: bytes) -> bytes:
        """An NDJSON line → the JSON of its create-event body."""
        env = decode_json(raw, wire.CREATE_DECODER, "event")
        opts = self._options
        key = env.idempotency_key
        if key is None:
            key = derived_key(self._file_id, line)
        backfill = True if opts.backfill else env.backfill
        trusted = True if opts.trusted_clock else env.trusted_client_clock
        if opts.dry_run:
            ctx = Context(self._key, self._now(), max_event_body_bytes=self._limit)
            _rule(ctx, env, key, trusted, backfill)
        else:
            _rule(self._context, env, key, None, None)
            if trusted or backfill:
                if env.sent_at is None:
                    raise Invalid(rules.MSG_NEEDS_SENT_AT)
                parse_timestamp(env.sent_at)
        out = wire.CreateEventEnvelope(
            event_type=env.event_type,
            body=env.body,
            sent_at=env.sent_at,
            idempotency_key=key,
            trusted_client_clock=trusted,
            backfill=backfill,
        )
        return _ENCODER.encode(out)


# -- CSV ----------------------------------------------------------------------
_SCALARS = ("sent_at", "event", "quantity", "idempotency_key")
_GROUPS = ("company", "user", "traits")
_NAME = re.compile(r"^[^\s=]{1,255}$")


@dataclass
class CsvMap:
    """Which column holds what (``--map FIELD=COLUMN``): ``sent_at``,
    ``event`` (the track event's name), ``quantity``, ``idempotency_key``,
    ``company.KEY`` and ``user.KEY`` (their keys) and ``traits.NAME`` (the
    event's traits). Columns not named are ignored."""

    scalars: dict[str, str] = field(default_factory=dict)
    groups: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, str]:
        """Field → column, as the user wrote it (recorded in the checkpoint)."""
        out = dict(self.scalars)
        for group, pairs in self.groups.items():
            out.update({f"{group}.{name}": column for name, column in pairs})
        return dict(sorted(out.items()))


def parse_map(items: Sequence[str]) -> CsvMap:
    """``["event=name", "company.id=org", …]`` → a ``CsvMap``; raises
    ``Invalid`` naming the first item that is wrong."""
    mapping = CsvMap()
    seen: set[str] = set()
    for item in items:
        target, sep, column = item.partition("=")
        target, column = target.strip(), column.strip()
        if not sep or not target or not column:
            raise Invalid(f"--map takes FIELD=COLUMN, not {item[:64]!r}")
        if target in seen:
            raise Invalid(f"--map names {target!r} twice")
        seen.add(target)
        group, dot, name = target.partition(".")
        if not dot and target in _SCALARS:
            mapping.scalars[target] = column
        elif dot and group in _GROUPS and _NAME.match(name):
            if group != "traits" and "." in name:
                raise Invalid(_no_entity_traits(target))
            mapping.groups.setdefault(group, []).append((name, column))
        else:
            raise Invalid(
                f"--map field {target[:64]!r} is not one of sent_at, event, quantity, "
                "idempotency_key, company.KEY, user.KEY, traits.NAME"
            )
    if "event" not in mapping.scalars:
        raise Invalid("--map event=COLUMN is required for CSV: the column of the event name")
    return mapping


def _no_entity_traits(target: str) -> str:
    return (
        f"--map {target}: a track event carries traits of its own (traits.NAME), "
        "not its company's or user's; send identify events (NDJSON) to set those"
    )


class CsvRows:
    """A ``CsvMap`` bound to a header row: turns rows into NDJSON-equivalent
    create-event bodies (``track`` events)."""

    def __init__(self, mapping: CsvMap, header: Sequence[str]) -> None:
        index = {name.strip(): i for i, name in enumerate(header)}
        missing = [
            c
            for c in [*mapping.scalars.values()]
            + [c for pairs in mapping.groups.values() for _, c in pairs]
            if c not in index
        ]
        if missing:
            shown = ", ".join(repr(h) for h in header[:50])
            raise Invalid(f"the CSV header has no column {missing[0]!r} (its columns: {shown})")
        self.width = len(header)
        self._scalars = {f: (c, index[c]) for f, c in mapping.scalars.items()}
        self._groups = {
            g: [(name, c, index[c]) for name, c in pairs] for g, pairs in mapping.groups.items()
        }

    def to_json(self, row: Sequence[str]) -> bytes:
        """One row → the JSON of its create-event body; raises ``Invalid``."""
        if len(row) != self.width:
            raise Invalid(f"the row has {len(row)} cells, the header {self.width}")
        body: dict[str, Any] = {}
        event: dict[str, Any] = {"event_type": "track", "body": body}
        for target, (column, i) in self._scalars.items():
            value = row[i].strip()
            if not value:
                continue
            if target == "event":
                body["event"] = value
            elif target == "quantity":
                body["quantity"] = _integer(value, column)
            else:
                event[target] = value
        if "event" not in body:
            column = self._scalars["event"][0]
            raise Invalid(f"the event name (column {column!r}) is empty")
        for group, cells in self._groups.items():
            values = {name: row[i].strip() for name, _, i in cells if row[i].strip()}
            if values:
                body[group] = values
        return _ENCODER.encode(event)


def _integer(value: str, column: str) -> int:
    text = value.replace("_", "x")  # int() would accept 1_000
    try:
        return int(text)
    except ValueError:
        raise Invalid(
            f"quantity (column {column!r}) must be an integer, not {value[:64]!r}"
        ) from None
