"""Pure formatting for the console's pages: numbers, times, delays, charts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from tally.clock import format_micros

DAY_US = 86_400_000_000


def num(value: int | float | None) -> str:
    """``1234567`` → ``1,234,567``; floats keep one decimal."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def iso(micros: int | None) -> str:
    return format_micros(micros) if micros is not None else ""


def when(micros: int | None) -> Markup:
    """A ``<time>`` the page's script shows in the viewer's time zone, with
    the UTC time on hover (and as the text before the script runs)."""
    if micros is None:
        return Markup('<span class="muted">—</span>')
    text = iso(micros)
    readable = text[:19].replace("T", " ") + " UTC"
    return Markup('<time datetime="{0}" title="{1}">{1}</time>').format(text, readable)


def duration(us: int | None) -> str:
    """A delay in words: ``850 ms``, ``12.4 s``, ``3 min 5 s``, ``2 h 4 min``, ``3 d 2 h``."""
    if us is None:
        return "—"
    sign = "-" if us < 0 else ""
    us = abs(us)
    if us < 1_000_000:
        return f"{sign}{us / 1000:.0f} ms" if us >= 1000 else f"{sign}{us} µs"
    seconds = us / 1_000_000
    if seconds < 60:
        return f"{sign}{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{sign}{minutes} min {sec} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{sign}{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{sign}{days} d {hours} h"


def pretty_json(text: str) -> str:
    """JSON text indented for reading (as received when it does not parse)."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return text


def daily_series(points: dict[int, int], end_day: int, days: int) -> list[tuple[int, int]]:
    """(day start µs, value) for each of the ``days`` UTC days ending with
    the day starting at ``end_day`` (days without a value count 0)."""
    first = end_day - (days - 1) * DAY_US
    return [(first + i * DAY_US, points.get(first + i * DAY_US, 0)) for i in range(days)]


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str


def bars(series: Sequence[tuple[int, int]], width: int = 600, height: int = 120) -> list[Bar]:
    """SVG bars of a daily series, scaled to the tallest."""
    if not series:
        return []
    top = max(v for _, v in series) or 1
    step = width / len(series)
    out = []
    for i, (day, value) in enumerate(series):
        h = value / top * (height - 4) if value else 0.0
        label = f"{iso(day)[:10]}: {num(value)}"
        out.append(
            Bar(
                round(i * step + 1, 2), round(height - h, 2), round(step - 2, 2), round(h, 2), label
            )
        )
    return out


def register(env: object) -> None:
    """Make these the filters and globals of a Jinja environment."""
    filters = env.filters  # type: ignore[attr-defined]
    filters.update(num=num, when=when, duration=duration, iso=iso, pretty_json=pretty_json)
    env.globals.update(escape=escape)  # type: ignore[attr-defined]
