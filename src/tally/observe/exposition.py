"""What a scrape gets, and who may scrape.

The text is Prometheus's exposition format: this process's metrics (or, in
a ``tally serve``, every one of its processes', added up from the files they
share) and two gauges read from the database at scrape time: the pending
backlog and the age of its oldest event, both off the pending-events index.

Who may scrape (``access``): a loopback client always; any other client
only with ``Authorization: Bearer <TALLY_METRICS_TOKEN>``, and nobody else
when no token is set. The client address is the one uvicorn reports, which
honours ``X-Forwarded-For`` from a proxy on the same host.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from tally.model import PendingBacklog
from tally.observe.metrics import PENDING_GAUGES, metrics, shared_directory

CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 401 or 403
    message: str


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


def access(client_host: str | None, authorization: str | None, token: str) -> Refusal | None:
    """None when this client may read the metrics, else why not."""
    if is_loopback(client_host):
        return None
    if not token:
        return Refusal(
            403,
            "metrics are served to loopback clients only; set TALLY_METRICS_TOKEN "
            "to let other hosts scrape with a bearer token",
        )
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return Refusal(
            401,
            "scraping metrics from another host needs Authorization: Bearer <TALLY_METRICS_TOKEN>",
        )
    return None


class _Pending:
    """The scrape-time gauges."""

    def __init__(self, backlog: PendingBacklog, now_us: int) -> None:
        self._backlog = backlog
        self._now = now_us

    def collect(self) -> Iterator[Metric]:
        count_name, age_name = PENDING_GAUGES
        yield GaugeMetricFamily(count_name, PENDING_GAUGES[count_name], value=self._backlog.count)
        age = self._backlog.age_seconds(self._now)
        yield GaugeMetricFamily(age_name, PENDING_GAUGES[age_name], value=age)


class _Local:
    """This process's own metrics (outside a ``tally serve``)."""

    def collect(self) -> Iterator[Metric]:
        yield from metrics().registry.collect()


def render(backlog: PendingBacklog | None, now_us: int) -> bytes:
    """The exposition text: the recorded metrics plus, when ``backlog`` is
    given, the pending gauges."""
    metrics().flush()  # what this process holds; the others flush on their own
    registry = CollectorRegistry(auto_describe=False)
    directory = shared_directory()
    if directory is not None:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_Local())
    if backlog is not None:
        registry.register(_Pending(backlog, now_us))
    return generate_latest(registry)
