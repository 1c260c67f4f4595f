"""The metric definitions and their cheap recording paths (tally.observe.metrics)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tally.model import IngestResult, NewEvent
from tally.observe.metrics import HTTP_BUCKETS, LAG_BUCKETS, Metrics, observe_many


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_gives_the_samples_of_one_observe_each() -> None:
    rng = random.Random(7)
    amounts = [
        rng.choice([0.0, *LAG_BUCKETS, 1e6]) * rng.choice([1, 0.5, 1.0001]) for _ in range(500)
    ]
    one_by_one, at_once = CollectorRegistry(), CollectorRegistry()
    a = Histogram("lag", "h", buckets=LAG_BUCKETS, registry=one_by_one)
    b = Histogram("lag", "h", buckets=LAG_BUCKETS, registry=at_once)
    for amount in amounts:
        a.observe(amount)
    observe_many(b, amounts)
    observe_many(b, [])
    got, want = samples(at_once), samples(one_by_one)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == value if not key[0].endswith("_sum") else abs(got[key] - value) < 1e-6


def _event(kind: str, status: str = "pending") -> NewEvent:
    return NewEvent("env_1", kind, status, "{}", 1, 1, 1)


KEY = (("key_kind", "publishable"), ("outcome", "accepted"), ("type", "track"))


def test_ingested_counts_each_outcome_by_type_and_key_kind() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry)
    events = [
        _event("track"),
        _event("track"),
        _event("identify"),
        _event("track", "failed"),
        _event("no-such-type", "failed"),
    ]
    results = [
        IngestResult("evt_1", 1, False),
        IngestResult("evt_0", 1, True),
        IngestResult("evt_2", 1, False),
        IngestResult("evt_3", 1, False),
        IngestResult("evt_4", 1, False),
    ]
    m.ingested("publishable", events, results)
    held = samples(registry)
    assert held[("tally_events_ingested_total", KEY)] == 0  # held until flushed
    m.flush()
    got = samples(registry)

    def count(kind: str, key_kind: str, outcome: str) -> float:
        labels = (("key_kind", key_kind), ("outcome", outcome), ("type", kind))
        return got[("tally_events_ingested_total", labels)]

    assert count("track", "publishable", "accepted") == 1
    assert count("track", "publishable", "duplicate") == 1
    assert count("track", "publishable", "failed") == 1
    assert count("identify", "publishable", "accepted") == 1
    assert count("other", "publishable", "failed") == 1  # an unknown type is no new label
    assert count("track", "secret", "accepted") == 0  # every known series exists from the start


def test_http_label_values_stay_bounded() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry)
    m.http_request("BREW", "unmatched", 405, 0.002)
    m.http_request("GET", "/events/{event_id}", 200, 0.002)
    m.flush()
    labels = {
        dict(key[1])["method"]
        for key in samples(registry)
        if key[0] == "tally_http_request_duration_seconds_count"
    }
    assert labels == {"other", "GET"}


def test_processed_counts_outcomes_and_lags_in_seconds() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry)
    m.processed(3, 1, [2_000_000, 20_000, 700_000_000])
    m.set_aside()
    got = samples(registry)
    assert got[("tally_events_processed_total", (("outcome", "processed"),))] == 3
    assert got[("tally_events_processed_total", (("outcome", "failed"),))] == 2
    assert got[("tally_processing_lag_seconds_count", ())] == 3
    assert abs(got[("tally_processing_lag_seconds_sum", ())] - 702.02) < 1e-9
    assert got[("tally_processing_lag_seconds_bucket", (("le", "2.5"),))] == 2
    assert got[("tally_processing_lag_seconds_bucket", (("le", "300.0"),))] == 2
    assert got[("tally_processing_lag_seconds_bucket", (("le", "900.0"),))] == 3


def test_flushed_http_requests_give_the_samples_of_one_observe_each() -> None:
    rng = random.Random(3)
    durations = [rng.choice(HTTP_BUCKETS) * rng.choice([0.5, 1, 1.01, 30]) for _ in range(300)]
    registry, plain = CollectorRegistry(), CollectorRegistry()
    m = Metrics(registry)
    h = Histogram(
        "tally_http_request_duration_seconds",
        "h",
        ("method", "route", "status"),
        buckets=HTTP_BUCKETS,
        registry=plain,
    )
    for i, seconds in enumerate(durations):
        status = 201 if i % 3 else 400
        m.http_request("POST", "/events", status, seconds)
        h.labels("POST", "/events", str(status)).observe(seconds)
        if i == 100:
            m.flush()  # flushing twice adds up
    m.flush()
    m.flush()  # nothing held: nothing added
    want = samples(plain)
    got = {k: v for k, v in samples(registry).items() if k[0].startswith("tally_http")}
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) < 1e-9, key


def test_outside_tally_serve_metrics_stay_in_memory_whatever_the_environment_says(
    tmp_path: Path,
) -> None:
    """A stray PROMETHEUS_MULTIPROC_DIR (a tally worker started from a shell
    that has one) neither breaks recording nor writes files there."""
    script = (
        "from tally.observe.metrics import metrics\n"
        "from tally.observe.exposition import render\n"
        "metrics().processing_error('event')\n"
        "print(render(None, 0).decode())\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert 'tally_processing_errors_total{cause="event"} 1.0' in done.stdout
    assert list(tmp_path.iterdir()) == []
