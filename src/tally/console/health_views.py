"""Event types (count, first and last seen, a sparkline of daily volume) and
pipeline health (backlog, oldest pending event, processing and failure
rates, delivery backlog over the last hour), refreshed live."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tally.clock import to_micros
from tally.console.format import DAY_US, daily_series, duration, iso, num
from tally.storage.base_console import ConsoleSession, PipelineHealth

if TYPE_CHECKING:
    from tally.console.app import Console

SPARK_DAYS = 30
WINDOW_SECONDS = 3600
MAX_TYPES = 500


async def event_types_page(c: Console, request: Request, session: ConsoleSession) -> Response:
    """The subtypes at once (an index-only read); their daily volumes, which
    read every event of 30 days, arrive after the page (``event_type_days``)."""
    stats = await c.storage.event_type_stats(session.key.environment_id, MAX_TYPES)
    return c.render(request, session, "event_types.html", rows=stats, days=SPARK_DAYS)


async def event_type_days(c: Console, request: Request, session: ConsoleSession) -> Response:
    """Events per subtype per UTC day over the last ``SPARK_DAYS`` days."""
    now = to_micros(c.clock.now())
    today = now - now % DAY_US
    daily = await c.storage.daily_event_counts(
        session.key.environment_id, today - (SPARK_DAYS - 1) * DAY_US
    )
    per_type: dict[str, dict[int, int]] = {}
    for d in daily:
        per_type.setdefault(d.name, {})[d.day_start] = d.count
    series = {
        subtype: [v for _, v in daily_series(points, today, SPARK_DAYS)]
        for subtype, points in per_type.items()
    }
    return JSONResponse(
        {"first_day": iso(today - (SPARK_DAYS - 1) * DAY_US)[:10], "series": series}
    )


def rate(count: int, seconds: int) -> str:
    """``count`` events over ``seconds`` as a rate in the unit that reads best."""
    per_second = count / seconds
    for value, unit in ((per_second, "s"), (per_second * 60, "min")):
        if value >= 1:
            return f"{_short(value)}/{unit}"
    return f"{_short(per_second * 3600)}/h"


def _short(value: float) -> str:
    rounded = round(value, 1)
    return num(int(rounded)) if rounded == int(rounded) else num(rounded)


def figures(health: PipelineHealth, now: int) -> dict[str, str]:
    """The health page's figures, formatted (the page and its live refresh)."""
    oldest = health.oldest_pending_at
    settled = health.processed + health.failed
    return {
        "pending": num(health.pending),
        "oldest_pending": duration(now - oldest) if oldest is not None else "none waiting",
        "processing_rate": rate(health.processed, WINDOW_SECONDS),
        "processed": num(health.processed),
        "received": num(health.received),
        "failed": num(health.failed),
        "failed_rate": f"{health.failed / settled * 100:.1f}%" if settled else "0.0%",
        "deliveries_pending": num(health.deliveries_pending),
        "deliveries_succeeded": num(health.deliveries_succeeded),
        "deliveries_failed": num(health.deliveries_failed),
    }


async def _figures(c: Console, session: ConsoleSession) -> tuple[dict[str, str], PipelineHealth]:
    now = to_micros(c.clock.now())
    health = await c.storage.pipeline_health(
        session.key.environment_id, now - WINDOW_SECONDS * 1_000_000
    )
    return figures(health, now), health


async def health_page(c: Console, request: Request, session: ConsoleSession) -> Response:
    shown, health = await _figures(c, session)
    return c.render(request, session, "health.html", figures=shown, health=health)


async def health_data(c: Console, request: Request, session: ConsoleSession) -> Response:
    shown, _ = await _figures(c, session)
    return JSONResponse(shown)


pages: list[Any] = [
    ("/event-types", event_types_page, ["GET"]),
    ("/health", health_page, ["GET"]),
]
data: list[Any] = [
    ("/health", health_data, ["GET"]),
    ("/event-types/days", event_type_days, ["GET"]),
]
