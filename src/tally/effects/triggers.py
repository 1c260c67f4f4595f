"""What usage and identities trigger (pure): the usage-limit crossings of
SPEC §4 and the notices of identify events.

- ``entitlement.limit.warning`` fires when a company's usage of a feature
  first reaches ``warning_percent`` of a numeric allocation in one period;
  ``entitlement.limit.reached`` when it first reaches the allocation. "First"
  is per (company, feature, period kind, period start): the database holds one
  row per firing and only a won insert queues the webhook, so several workers
  never fire twice.
- A crossing belongs to the period of the event that made it: a trusted-clock
  event dated in a past period crosses (or not) in that period's counter,
  never in the current one.
- Backfill events move counters but fire nothing themselves. They do not
  silence a limit either: the first non-backfill event that finds a
  threshold already passed in its period (its counter stands at or past it
  right after the event) fires it, if it has not fired there yet. The rule
  here names every threshold a non-backfill event finds passed; the database
  row of the firing decides whether it is the first.
- Identify events notify ``company.created``/``user.created`` for the
  entities they create and ``company.updated``/``user.updated`` for those
  they change (name, traits or keys); a track event that creates a company or
  user notifies ``….created`` as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

LIMIT_WARNING = "entitlement.limit.warning"
LIMIT_REACHED = "entitlement.limit.reached"
LIMIT_ACTIONS = (LIMIT_WARNING, LIMIT_REACHED)
ENTITY_ACTIONS = ("company.created", "company.updated", "user.created", "user.updated")
DEFAULT_WARNING_PERCENT = 80.0


@dataclass(frozen=True, slots=True)
class EffectRules:
    """What processing must record besides counters (from the settings)."""

    warning_percent: float = DEFAULT_WARNING_PERCENT

    def __post_init__(self) -> None:
        if not 0 < self.warning_percent < 100 or not math.isfinite(self.warning_percent):
            raise ValueError("the warning share must be between 0 and 100 percent")


@dataclass(frozen=True, slots=True)
class Limit:
    """A numeric allocation: how much of one event feature a company may use
    per period."""

    allocation_id: str
    company_id: str
    feature_id: str
    subtype: str
    value: int
    metric_period: str
    month_reset: str | None


@dataclass(frozen=True, slots=True)
class Contribution:
    """One event's part of a watched counter."""

    event_id: str
    quantity: int
    captured_at: int
    backfill: bool


@dataclass(slots=True)
class Watch:
    """A usage counter that allocations watch, and what the batch added to it,
    oldest event first."""

    anchor: int | None  # the company's billing anchor (µs), for the period's end
    limits: list[Limit] = field(default_factory=list)
    contributions: list[Contribution] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Crossing:
    action: str
    limit: Limit
    threshold: int
    usage: int  # the counter right after the crossing event
    event: Contribution


@dataclass(frozen=True, slots=True)
class Notice:
    """A row of the webhook outbox: something happened that endpoints may
    want to hear about. The delivery loop builds the body from ``details``
    and the objects named by id."""

    environment_id: str
    action: str
    object_type: str
    object_id: str
    company_id: str | None = None
    feature_id: str | None = None
    event_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def warning_threshold(allocation: int, warning_percent: float) -> int:
    """The smallest usage that is at least ``warning_percent`` of ``allocation``."""
    share = Fraction(str(warning_percent)) / 100
    return max(1, math.ceil(allocation * share))


def thresholds(allocation: int, warning_percent: float) -> list[tuple[str, int]]:
    """(action, usage that fires it) of one allocation, warning first. An
    allocation of 0 grants nothing to warn about: it fires nothing."""
    if allocation <= 0:
        return []
    return [
        (LIMIT_WARNING, warning_threshold(allocation, warning_percent)),
        (LIMIT_REACHED, allocation),
    ]


def limit_crossings(before: int, watch: Watch, warning_percent: float) -> list[Crossing]:
    """The thresholds the batch's non-backfill events find passed on one
    counter that stood at ``before`` when the batch began: each threshold at
    most once, attributed to the first non-backfill event after which the
    counter stands at or past it (whether it crossed it or a backfill, a
    raised usage or a lowered allocation put it there before). Whether the
    threshold already fired in the period is the caller's to know."""
    out: list[Crossing] = []
    fired: set[tuple[str, str]] = set()
    plans = [(limit, thresholds(limit.value, warning_percent)) for limit in watch.limits]
    running = before
    for contribution in watch.contributions:
        running += contribution.quantity
        if contribution.backfill:
            continue
        for limit, marks in plans:
            for action, mark in marks:
                key = (limit.feature_id, action)
                if mark <= running and key not in fired:
                    fired.add(key)
                    out.append(Crossing(action, limit, mark, running, contribution))
    return out
