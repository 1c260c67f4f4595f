"""Every metric tally records: its name, its labels and what it means.

docs/monitoring.md explains each one to operators; a test checks that the
two lists agree. Labels take a few known values only (route templates, event
types, key kinds, outcomes): never an environment id, a key or a path.

One ``Metrics`` per process, reached through ``metrics()``. The processes of
one ``tally serve`` (its HTTP processes and its storage process) record into
files of a directory they share (``share_through``: prometheus_client's
multiprocess mode, where an increment is a write to a memory-mapped file),
and a scrape of any of them adds them all up. ``tally worker`` and ``tally
deliver`` keep theirs in memory.

Recording is cheap on purpose: an HTTP request and its events only update
a few plain counts, which the process writes into the metrics every
``FLUSH_SECONDS`` and before it answers a scrape (``flush``); a group commit
or a processing batch records once, and a batch's processing lags go into
the histogram in one step per bucket (``observe_many``), not one per event.
Labelled children are looked up in a dict rather than built per call.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import glob
import os
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.metrics import disable_created_metrics
from prometheus_client.multiprocess import MultiProcessCollector

from tally.model import EVENT_TYPES, FAILED, FAILING, IngestResult, NewEvent

# gauges computed when scraped (tally.observe.exposition), from the pending index
PENDING_GAUGES = {
    "tally_events_pending": "events stored and waiting to be processed",
    "tally_oldest_pending_event_age_seconds": (
        "seconds since the oldest pending event was stored (0 when none is pending)"
    ),
}

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_TYPES = frozenset(EVENT_TYPES)

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMMIT_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
FLUSH_SECONDS = 1.0  # how long an HTTP process holds its request and ingest counts
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The metrics of one process, and the one way each is recorded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.http_duration = Histogram(
            "tally_http_request_duration_seconds",
            "HTTP requests by method, route template and status, and how long each took "
            "(its _count is the number of requests)",
            ("method", "route", "status"),
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.events_ingested = Counter(
            "tally_events_ingested",
            "events received through the API by event type, key kind (secret, publishable) "
            "and outcome: accepted (stored pending), duplicate (dropped for its "
            "idempotency key), failed (stored failed: refused by a capture /batch)",
            ("type", "key_kind", "outcome"),
            registry=r,
        )
        self.commit_events = Histogram(
            "tally_group_commit_events",
            "events stored by one group commit",
            buckets=COMMIT_SIZE_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "tally_group_commit_duration_seconds",
            "how long one group commit took, from BEGIN to COMMIT",
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=r,
        )
        self.events_processed = Counter(
            "tally_events_processed",
            "events that left pending, by outcome: processed (counted into usage) or "
            "failed (refused by processing, or set aside after an internal error)",
            ("outcome",),
            registry=r,
        )
        self.processing_lag = Histogram(
            "tally_processing_lag_seconds",
            "per processed event, enriched_at - loaded_at: how long it waited to be processed",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.processing_errors = Counter(
            "tally_processing_errors",
            "processing batches that raised, by cause: event (retried one event at a time) "
            "or storage (the database was unavailable; retried after 1 s)",
            ("cause",),
            registry=r,
        )
        self.deliveries = Counter(
            "tally_deliveries",
            "delivery attempts by kind (webhook, meter_record) and outcome: delivered, "
            "retry (failed, tried again later) or failed (failed for good)",
            ("kind", "outcome"),
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "tally_delivery_duration_seconds",
            "how long one delivery attempt took, by kind",
            ("kind",),
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.endpoints_disabled = Counter(
            "tally_webhook_endpoints_disabled",
            "webhook endpoints switched off because most of their deliveries failed",
            registry=r,
        )
        self.database_errors = Counter(
            "tally_database_errors",
            "errors the database driver raised, by operation: group_commit (the write "
            "path), transaction (any other write) or read",
            ("operation",),
            registry=r,
        )
        self.database_retries = Counter(
            "tally_database_retries",
            "work done again after a database error or conflict, by operation: "
            "processing_conflict (a PostgreSQL batch met another transaction), "
            "processing (the worker waited for the database) or delivery",
            ("operation",),
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        # the hot path's figures, held until flush(): per (method, route,
        # status) the count per bucket of HTTP_BUCKETS (and +Inf), then the sum
        self._http: dict[tuple[str, str, int], list[Any]] = {}
        self._ingested: dict[tuple[str, str, str], int] = {}
        self._zero()

    def _zero(self) -> None:
        """Make every series of a known label set exist from the start, at 0
        (a rate over a series that appears late misses its first increase)."""
        for kind in (*EVENT_TYPES, "other"):
            for key_kind in ("secret", "publishable"):
                for outcome in ("accepted", "duplicate", "failed"):
                    self._child(self.events_ingested, kind, key_kind, outcome)
        for outcome in ("processed", "failed"):
            self._child(self.events_processed, outcome)
        for cause in ("event", "storage"):
            self._child(self.processing_errors, cause)
        for kind in ("webhook", "meter_record"):
            self._child(self.delivery_seconds, kind)
            for outcome in ("delivered", "retry", "failed"):
                self._child(self.deliveries, kind, outcome)
        for operation in ("group_commit", "transaction", "read"):
            self._child(self.database_errors, operation)
        for operation in ("processing_conflict", "processing", "delivery"):
            self._child(self.database_retries, operation)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- recorded by the parts above ----------------------------------------------
    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request (held in this process until ``flush``)."""
        if method not in _METHODS:
            method = "other"
        key = (method, route, status)
        row = self._http.get(key)
        if row is None:
            row = self._http[key] = [0] * (len(HTTP_BUCKETS) + 1) + [0.0]
        row[bisect.bisect_left(HTTP_BUCKETS, seconds)] += 1
        row[-1] += seconds  # the sum

    def ingested(
        self, key_kind: str, events: Sequence[NewEvent], results: Sequence[IngestResult]
    ) -> None:
        """One request's events by (type, outcome) (held in this process until ``flush``)."""
        counts = self._ingested
        for event, result in zip(events, results, strict=True):
            if result.duplicate:
                outcome = "duplicate"
            elif event.status == FAILING or event.status == FAILED:
                outcome = "failed"
            else:
                outcome = "accepted"
            key = (event.type if event.type in _TYPES else "other", key_kind, outcome)
            counts[key] = counts.get(key, 0) + 1

    def flush(self) -> None:
        """Write what ``http_request`` and ``ingested`` hold into the metrics.
        The HTTP processes call it every ``FLUSH_SECONDS`` and before
        answering a scrape: a request then costs a few dict updates, not
        three locked writes to shared memory. Both record and flush on the
        event loop's thread (no lock: swapping the dicts is one step there)."""
        if not self._http and not self._ingested:
            return
        http, ingested = self._http, self._ingested
        self._http, self._ingested = {}, {}
        for (method, route, status), row in http.items():
            child = self._child(self.http_duration, method, route, str(status))
            add_to_histogram(child, row[:-1], row[-1])
        for labels, n in ingested.items():
            self._child(self.events_ingested, *labels).inc(n)

    def group_commit(self, events: int, seconds: float) -> None:
        self.commit_events.observe(events)
        self.commit_seconds.observe(seconds)

    def processed(self, processed: int, failed: int, lags_us: Iterable[int]) -> None:
        """A processing batch: how many events it processed and failed, and
        each processed event's lag in microseconds."""
        if processed:
            self._child(self.events_processed, "processed").inc(processed)
        if failed:
            self._child(self.events_processed, "failed").inc(failed)
        observe_many(self.processing_lag, [lag / 1_000_000 for lag in lags_us])

    def set_aside(self) -> None:
        self._child(self.events_processed, "failed").inc()

    def processing_error(self, cause: str) -> None:
        self._child(self.processing_errors, cause).inc()

    def delivery(self, kind: str, outcome: str, seconds: float) -> None:
        self._child(self.deliveries, kind, outcome).inc()
        self._child(self.delivery_seconds, kind).observe(seconds)

    def database_error(self, operation: str) -> None:
        self._child(self.database_errors, operation).inc()

    def database_retry(self, operation: str) -> None:
        self._child(self.database_retries, operation).inc()


def observe_many(histogram: Any, amounts: Sequence[float]) -> None:
    """``histogram.observe(a)`` for each amount, as one increment per bucket
    and one of the sum (the same samples; far fewer locked writes)."""
    if not amounts:
        return
    bounds = histogram._upper_bounds
    per_bucket = [0] * len(bounds)
    for amount in amounts:
        per_bucket[bisect.bisect_left(bounds, amount)] += 1
    add_to_histogram(histogram, per_bucket, sum(amounts))


def add_to_histogram(histogram: Any, per_bucket: Sequence[int], total: float) -> None:
    """Add observations counted per bucket (one count per upper bound, the
    last for +Inf) and their ``total`` to a histogram (or labelled child)."""
    for bucket, n in zip(histogram._buckets, per_bucket, strict=True):
        if n:
            bucket.inc(n)
    histogram._sum.inc(total)


_current: Metrics | None = None
_directory: str | None = None


def metrics() -> Metrics:
    """This process's metrics (in memory unless ``share_through`` was called)."""
    global _current
    if _current is None:
        # in memory, whatever PROMETHEUS_MULTIPROC_DIR the environment holds
        values.ValueClass = values.MutexValue
        disable_created_metrics()
        _current = Metrics(CollectorRegistry(auto_describe=True))
    return _current


def share_through(directory: str) -> None:
    """From now on record into files in ``directory``, which the other
    processes of this ``tally serve`` share (they call this too)."""
    global _current, _directory
    if _directory == directory:
        return
    # prometheus_client's multiprocess mode finds its directory through this
    # variable when it opens this process's files
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.MultiProcessValue()
    disable_created_metrics()
    _directory = directory
    _current = Metrics(CollectorRegistry())


async def flush_every(stop: asyncio.Event, seconds: float = FLUSH_SECONDS) -> None:
    """Flush this process's held counts every ``seconds`` until ``stop``, then once more."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        metrics().flush()


def processed_total() -> float:
    """Events that left pending (processed or failed) so far: in a ``tally
    serve``, by every process of it that processes (its storage process, or
    its HTTP processes' worker loops), read from the files they share; else
    by this process."""
    name = "tally_events_processed_total"
    if _directory is None:
        families = metrics().events_processed.collect()
    else:
        families = MultiProcessCollector.merge(
            glob.glob(os.path.join(_directory, "counter_*.db")), accumulate=False
        )
    return sum(
        sample.value for family in families for sample in family.samples if sample.name == name
    )


def shared_directory() -> str | None:
    """The directory ``share_through`` set, if any."""
    return _directory
