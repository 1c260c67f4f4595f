"""What tally prunes, and the cutoffs, as pure functions of the settings and
``now`` (µs since the epoch, UTC).

- **Deliveries** (webhooks and billing meter records) that finished
  (delivered, or given up) more than ``delivery_log_days`` ago, with their
  attempts; a webhook notice goes with the last delivery that sends it.
  A billing meter record that was given up is **kept**: it is the only trace
  of usage that never reached billing.
- **Limit triggers** (one row per limit that fired in a period) of periods
  that ended more than ``limit_trigger_days`` ago. The row is what keeps a
  limit from firing twice in a period, and an event with a trusted client
  clock may land up to 34 days late (``MAX_PAST_TRUSTED``), so the setting
  may not go below ``MIN_LIMIT_TRIGGER_DAYS``. The default, 90 days, also
  keeps a quarter of firings in the console's company view.
- **Raw events** stored (``loaded_at``, the time their id encodes) more than
  ``event_days`` ago, when set (0: kept forever). Pending events are never
  pruned. Usage counters, companies, users, memberships and event summaries
  are kept: they are the money record and what reads aggregate.

Never pruned: usage counters of closed periods (the record of what was
billed), pending events, deliveries not yet finished, the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass

from tally.ingest.rules import MAX_PAST_TRUSTED

DAY_US = 86_400_000_000
DEFAULT_DELIVERY_LOG_DAYS = 30
DEFAULT_LIMIT_TRIGGER_DAYS = 90
MIN_LIMIT_TRIGGER_DAYS = MAX_PAST_TRUSTED.days + 1  # 35
# the longest a period of each kind lasts (a month or a billing cycle is at
# most 31 days); all_time never ends, so its triggers are never pruned
PERIOD_SPAN_DAYS: tuple[tuple[str, int], ...] = (
    ("day", 1),
    ("week", 7),
    ("month", 31),
    ("billing", 31),
)
# what one prune transaction deletes at most, and the pause between two;
# a chunk that took longer than TARGET_CHUNK_SECONDS (the write lock held,
# or a wait behind busy writers) halves the next one, down to MIN_CHUNK_ROWS,
# and a quick one doubles it again, up to CHUNK_ROWS
CHUNK_ROWS = 1000
MIN_CHUNK_ROWS = 100
TARGET_CHUNK_SECONDS = 0.05
PAUSE_SECONDS = 0.05
# how often the loop looks for something to prune
EVERY_SECONDS = 60.0

EVENTS, DELIVERIES, LIMIT_TRIGGERS = "events", "deliveries", "limit_triggers"
KINDS = (DELIVERIES, LIMIT_TRIGGERS, EVENTS)


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one prune transaction deleted: how many rows, and where the next
    chunk of the same pass starts (after the last row it deleted, so that it
    never walks again the index entries this one left behind; None: from the
    start)."""

    rows: int
    resume_after: tuple[str | int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """What is old enough to prune at one moment."""

    deliveries_finished_before: int
    # (period kind, periods that started before this) of prunable limit triggers
    triggers_started_before: tuple[tuple[str, int], ...]
    events_loaded_before: int | None  # None: events are kept forever


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    delivery_log_days: int = DEFAULT_DELIVERY_LOG_DAYS
    limit_trigger_days: int = DEFAULT_LIMIT_TRIGGER_DAYS
    event_days: int = 0  # 0: forever

    def cutoffs(self, now_us: int) -> Cutoffs:
        triggers = tuple(
            (kind, now_us - (self.limit_trigger_days + span) * DAY_US)
            for kind, span in PERIOD_SPAN_DAYS
        )
        return Cutoffs(
            deliveries_finished_before=now_us - self.delivery_log_days * DAY_US,
            triggers_started_before=triggers,
            events_loaded_before=now_us - self.event_days * DAY_US if self.event_days else None,
        )

    def kinds(self) -> tuple[str, ...]:
        """What this policy prunes, in the order the loop prunes it."""
        return KINDS if self.event_days else (DELIVERIES, LIMIT_TRIGGERS)
