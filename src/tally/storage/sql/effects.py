"""The side effects' part of a processing transaction (portable SQL, run by
``SqlUnitOfWork`` on both backends): what the snapshot reads for them, and
what ``apply`` writes after the counters moved — one outbox row holding the
batch's meter records, identity notices, and the limit crossings the new
counter totals reveal. Only that row (and a ``limit_triggers`` row per
crossing) is written on the processing path.

Limit crossings are decided here, not in the pure rules, because only the
database knows a counter's total once several workers move it at once: after
this transaction's upsert the counter row is locked by it until commit, so
the total read back is exact and ``before = total - what this batch added``.
The pure rules name every threshold a non-backfill event finds passed (so a
threshold a backfill passed silently fires with the next such event); the
ones already fired in their period are read in one query and skipped, and
each other one inserts one ``limit_triggers`` row per (company, feature,
period kind, period start, action) with ``ON CONFLICT DO NOTHING``; only an
insert that wins queues the notice, so it fires once whatever the workers
and whatever corrections move the counter down and up again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from tally import ids
from tally.batch import Changes, CounterKey
from tally.clock import from_micros, to_micros
from tally.effects import billing
from tally.effects.payloads import limit_details
from tally.effects.triggers import (
    Crossing,
    EffectRules,
    Limit,
    Notice,
    Watch,
    limit_crossings,
)
from tally.metering.periods import period_end
from tally.storage.sql import chunks, in_list

Conn = Any
_ENCODER = msgspec.json.Encoder()

_LIMITS = (
    "SELECT a.id, a.company_id, a.feature_id, f.event_subtype, a.value_numeric, "
    "a.metric_period, a.month_reset FROM allocations a JOIN features f ON f.id = a.feature_id "
    "WHERE a.value_type = 'numeric' AND f.feature_type = 'event' "
    "AND f.event_subtype IS NOT NULL AND a.metric_period IS NOT NULL AND "
)
_OUTBOX_INSERT = "INSERT INTO outbox (id, notices, meter_records, created_at) VALUES (?,?,?,?)"
_TRIGGER_INSERT = (
    "INSERT INTO limit_triggers (environment_id, company_id, feature_id, period, period_start, "
    "action, event_id, usage, created_at) VALUES (?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (company_id, feature_id, period, period_start, action) DO NOTHING"
)


# -- reads of the snapshot ---------------------------------------------------------
def load_limits(conn: Conn, company_ids: Sequence[str]) -> dict[tuple[str, str], list[Limit]]:
    """The numeric allocations of event features of these companies."""
    out: dict[tuple[str, str], list[Limit]] = {}
    for part in chunks(list(company_ids)):
        clause, args = in_list("a.company_id", part)
        for row in conn.execute(_LIMITS + clause + " ORDER BY a.id", args).fetchall():
            limit = Limit(row[0], row[1], row[2], row[3], int(row[4]), row[5], row[6])
            out.setdefault((limit.company_id, limit.subtype), []).append(limit)
    return out


def load_subscriptions(conn: Conn) -> set[tuple[str, str]]:
    """(environment, action) pairs some active endpoint subscribes to."""
    out: set[tuple[str, str]] = set()
    for env, types in conn.execute(
        "SELECT environment_id, request_types FROM webhooks WHERE status = 'active'"
    ).fetchall():
        out.update((env, t) for t in msgspec.json.decode(types))
    return out


def load_customer_keys(conn: Conn, company_ids: Sequence[str]) -> list[tuple[str, str, str]]:
    """(environment, value, company id) of these companies' ``stripe_customer_id`` keys."""
    out: list[tuple[str, str, str]] = []
    for part in chunks(list(company_ids)):
        clause, args = in_list("entity_id", part)
        out.extend(
            (r[0], r[1], r[2])
            for r in conn.execute(
                "SELECT environment_id, value, entity_id FROM company_keys WHERE key = ? AND "
                + clause,
                (billing.STRIPE_CUSTOMER_KEY, *args),
            ).fetchall()
        )
    return out


# -- writes after the counters -----------------------------------------------------
def write_effects(conn: Conn, changes: Changes, now: int, rules: EffectRules) -> None:
    """One outbox row holds the batch's notices and meter records; the
    delivery loop expands it into deliveries, off the processing path."""
    notices = list(changes.notices)
    if changes.watches:
        notices.extend(_limit_notices(conn, changes, now, rules))
    records = changes.meter_records
    if notices or records:
        conn.execute(
            _OUTBOX_INSERT,
            (
                ids.new_id("obx"),
                _ENCODER.encode(notices).decode() if notices else None,
                _ENCODER.encode(records).decode() if records else None,
                now,
            ),
        )


def _totals(conn: Conn, keys: Iterable[CounterKey]) -> dict[CounterKey, int]:
    """The stored quantity of each counter, grouped into few queries."""
    groups: dict[tuple[str, int], list[CounterKey]] = {}
    for key in keys:
        groups.setdefault((key[3], key[4]), []).append(key)
    found: dict[CounterKey, int] = {}
    for (kind, start), members in groups.items():
        wanted = set(members)
        for part in chunks(sorted({k[1] for k in members})):
            clause, args = in_list("company_id", part)
            subtypes = sorted({k[2] for k in members})
            sub_clause, sub_args = in_list("subtype", subtypes)
            rows = conn.execute(
                "SELECT environment_id, company_id, subtype, quantity FROM usage_counters "
                f"WHERE period = ? AND period_start = ? AND {clause} AND {sub_clause}",
                (kind, start, *args, *sub_args),
            ).fetchall()
            for env, company, subtype, quantity in rows:
                key = (env, company, subtype, kind, start)
                if key in wanted:
                    found[key] = int(quantity)
    return found


FiringKey = tuple[str, str, str, int, str]  # company, feature, period kind, start, action


def _fired(conn: Conn, keys: Iterable[CounterKey]) -> set[FiringKey]:
    """The limit firings already recorded for these counters' companies and
    periods (a superset is harmless: callers look their own keys up)."""
    groups: dict[tuple[str, int], set[str]] = {}
    for key in keys:
        groups.setdefault((key[3], key[4]), set()).add(key[1])
    out: set[FiringKey] = set()
    for (kind, start), companies in sorted(groups.items()):
        for part in chunks(sorted(companies)):
            clause, args = in_list("company_id", part)
            for company, feature, action in conn.execute(
                "SELECT company_id, feature_id, action FROM limit_triggers "
                f"WHERE period = ? AND period_start = ? AND {clause}",
                (kind, start, *args),
            ).fetchall():
                out.add((company, feature, kind, start, action))
    return out


def _limit_notices(conn: Conn, changes: Changes, now: int, rules: EffectRules) -> list[Notice]:
    totals = _totals(conn, changes.watches)
    crossings: list[tuple[CounterKey, Watch, Crossing]] = []
    for key, watch in sorted(changes.watches.items()):
        added = changes.counters[key][0]
        before = totals.get(key, added) - added
        crossings.extend(
            (key, watch, c) for c in limit_crossings(before, watch, rules.warning_percent)
        )
    if not crossings:
        return []
    fired = _fired(conn, {key for key, _, _ in crossings})
    notices: list[Notice] = []
    for key, watch, crossing in crossings:
        env, company_id, _subtype, kind, start = key
        limit = crossing.limit
        if (company_id, limit.feature_id, kind, start, crossing.action) in fired:
            continue  # fired before in this period
        won = conn.execute(
            _TRIGGER_INSERT,
            (
                env,
                company_id,
                limit.feature_id,
                kind,
                start,
                crossing.action,
                crossing.event.event_id,
                crossing.usage,
                now,
            ),
        ).rowcount
        if not won:
            continue  # another worker fired it a moment ago
        anchor = None if watch.anchor is None else from_micros(watch.anchor)
        end = period_end(kind, from_micros(start), anchor)
        details = limit_details(
            crossing, kind, start, None if end is None else to_micros(end), rules.warning_percent
        )
        notices.append(
            Notice(
                env,
                crossing.action,
                "entitlement",
                limit.allocation_id,
                company_id=company_id,
                feature_id=limit.feature_id,
                event_id=crossing.event.event_id,
                details=details,
            )
        )
    return notices
