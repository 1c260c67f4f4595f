"""Companies and users: search by name or key, a company's keys, traits,
users, usage per feature and period against its allocation, 30 days of
daily usage, and the limit webhooks fired; a user's keys, traits, companies
and events."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from tally.clock import to_micros
from tally.console.event_views import row
from tally.console.format import DAY_US, bars, daily_series, iso
from tally.errors import Invalid, NotFound
from tally.jsontext import read_object
from tally.metering.catalog import UsageFilter
from tally.metering.periods import ALL_TIME, BILLING, DAY, MONTH, WEEK
from tally.model import EventFilter
from tally.storage.base_console import ConsoleSession, UserDay
from tally.storage.base_entities import EntityFilter

if TYPE_CHECKING:
    from tally.console.app import Console

PERIODS = (
    (DAY, "today"),
    (WEEK, "this week"),
    (MONTH, "this month"),
    (BILLING, "billing cycle"),
    (ALL_TIME, "all time"),
)
LIST_ROWS = 50
CHART_DAYS = 30
USER_COMPANIES = 5  # a user page shows the usage of at most this many of its companies
USER_EVENTS_READ = 20_000  # a user's activity reads at most its newest events (~0.1 s)


def _search(request: Request) -> str | None:
    q = (request.query_params.get("q") or "").strip()
    if len(q) > 200:
        raise Invalid("search text must be at most 200 characters")
    return q or None


async def _recent_events(c: Console, env: str, where: EventFilter) -> list[dict[str, Any]]:
    events = await c.storage.list_events(env, where)
    names = await c.storage.preview_names(
        env,
        [],
        [e.company_id for e in events if e.company_id],
        [e.user_id for e in events if e.user_id],
    )
    return [row(e, names) for e in events]


def _traits(stored: str) -> list[tuple[str, str]]:
    """Traits as (name, text) rows, from the stored JSON text (``read_object``:
    a value nested deeper than the limit shows as its JSON text)."""
    return [
        (name, value if isinstance(value, str) else json.dumps(value))
        for name, value in sorted(read_object(stored).items())
    ]


async def companies_page(c: Console, request: Request, session: ConsoleSession) -> Response:
    env = session.key.environment_id
    q = _search(request)
    where = EntityFilter(q=q, limit=LIST_ROWS)
    companies = await c.storage.list_companies(env, where)
    total = await c.storage.count_companies(env, where)
    return c.render(request, session, "companies.html", companies=companies, total=total, q=q or "")


def usage_rows(
    usage: list[Any], counters: tuple[Any, ...], has_anchor: bool
) -> list[dict[str, Any]]:
    """One row per feature: its allocation, the usage in the allocation's
    period, and the usage of each current period (from the counters; without
    a billing anchor the billing cycle is the calendar month)."""
    by_subtype: dict[str, dict[str, int]] = {}
    for counter in counters:
        by_subtype.setdefault(counter.subtype, {})[counter.kind] = counter.quantity
    out = []
    for u in usage:
        feature = u.feature
        allocation = u.allocation
        limit = allocation.value_numeric if allocation is not None else None
        periods = dict(by_subtype.get(feature.event_subtype or "", {}))
        if not has_anchor and MONTH in periods:
            periods[BILLING] = periods[MONTH]
        out.append(
            {
                "feature": feature,
                "allocation": allocation,
                "limit": limit,
                "period": u.period,
                "usage": u.usage,
                "over": limit is not None and u.usage is not None and u.usage >= limit,
                "periods": [periods.get(kind) for kind, _ in PERIODS],
            }
        )
    return out


def _chart(points: dict[int, int], today: int) -> dict[str, Any]:
    """The template values of a 30-day bar chart of ``points`` (day → value)."""
    series = daily_series(points, today, CHART_DAYS)
    return {
        "chart_bars": bars(series),
        "chart_total": sum(v for _, v in series),
        "chart_top": max(v for _, v in series),
        "chart_first_day": iso(series[0][0])[:10],
        "chart_last_day": iso(series[-1][0])[:10],
    }


def _chosen(request: Request, subtypes: list[str]) -> str:
    chosen = request.query_params.get("subtype") or ""
    return chosen if chosen in subtypes else ""


def _today(c: Console) -> tuple[int, int]:
    """Now, and the start of its UTC day (µs)."""
    now = to_micros(c.clock.now())
    return now, now - now % DAY_US


async def company_usage(c: Console, env: str, company_id: str, now: int) -> list[dict[str, Any]]:
    """``usage_rows`` of a company (empty when it is gone)."""
    company = await c.storage.get_company(env, company_id)
    if company is None:
        return []
    usage = await c.storage.feature_usage(env, company.id, UsageFilter(limit=None), now)
    return usage_rows(usage, company.counters, company.billing_anchor is not None)


async def company_page(c: Console, request: Request, session: ConsoleSession) -> Response:
    env = session.key.environment_id
    company_id = request.path_params["company_id"][:64]
    company = await c.storage.get_company(env, company_id)
    if company is None:
        raise NotFound(f"company {company_id!r} was not found in this environment")
    now, today = _today(c)
    since = today - (CHART_DAYS - 1) * DAY_US
    usage = await c.storage.feature_usage(env, company.id, UsageFilter(limit=None), now)
    daily = await c.storage.company_daily_usage(env, company.id, since)
    subtypes = sorted({d.name for d in daily})
    chosen = _chosen(request, subtypes)
    points: dict[int, int] = {}
    for d in daily:
        if not chosen or d.name == chosen:
            points[d.day_start] = points.get(d.day_start, 0) + d.count
    firings = await c.storage.company_limit_firings(env, company.id, 50)
    names = await c.storage.preview_names(env, [f.feature_id for f in firings], [], [])
    users = await c.storage.list_users(env, EntityFilter(company_id=company.id, limit=LIST_ROWS))
    return c.render(
        request,
        session,
        "company.html",
        company=company,
        traits=_traits(company.traits),
        usage=usage_rows(usage, company.counters, company.billing_anchor is not None),
        periods=PERIODS,
        **_chart(points, today),
        subtypes=subtypes,
        chosen=chosen,
        firings=[(f, names.get(("feature", f.feature_id), f.feature_id)) for f in firings],
        users=users,
        events=await _recent_events(c, env, EventFilter(company_id=company.id, limit=10)),
        nav="companies",
    )


async def users_page(c: Console, request: Request, session: ConsoleSession) -> Response:
    env = session.key.environment_id
    q = _search(request)
    where = EntityFilter(q=q, limit=LIST_ROWS)
    users = await c.storage.list_users(env, where)
    total = await c.storage.count_users(env, where)
    return c.render(request, session, "users.html", users=users, total=total, q=q or "")


def activity(days: list[UserDay], chosen: str) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """A user's activity: per subtype its events and quantity, and the
    quantity per day (of ``chosen``, or of every subtype)."""
    totals: dict[str, dict[str, Any]] = {}
    points: dict[int, int] = {}
    for d in days:
        t = totals.setdefault(d.subtype, {"subtype": d.subtype, "events": 0, "quantity": 0})
        t["events"] += d.events
        t["quantity"] += d.quantity
        if not chosen or d.subtype == chosen:
            points[d.day_start] = points.get(d.day_start, 0) + d.quantity
    return sorted(totals.values(), key=lambda t: (-t["quantity"], t["subtype"])), points


async def user_page(c: Console, request: Request, session: ConsoleSession) -> Response:
    env = session.key.environment_id
    user_id = request.path_params["user_id"][:64]
    user = await c.storage.get_user(env, user_id)
    if user is None:
        raise NotFound(f"user {user_id!r} was not found in this environment")
    now, today = _today(c)
    since = today - (CHART_DAYS - 1) * DAY_US
    days = await c.storage.user_daily_activity(env, user.id, since, USER_EVENTS_READ)
    subtypes = sorted({d.subtype for d in days})
    chosen = _chosen(request, subtypes)
    totals, points = activity(days, chosen)
    companies = [m.company for m in user.memberships if m.company is not None]
    firings = await c.storage.firings_of_companies(
        env, [m.id for m in companies[:LIST_ROWS]], user.id, 20
    )
    names = await c.storage.preview_names(env, [f.firing.feature_id for f in firings], [], [])
    return c.render(
        request,
        session,
        "user.html",
        user=user,
        traits=_traits(user.traits),
        totals=totals,
        capped=sum(d.events for d in days) >= USER_EVENTS_READ,
        read_most=USER_EVENTS_READ,
        **_chart(points, today),
        subtypes=subtypes,
        chosen=chosen,
        company_usage=[
            (m, await company_usage(c, env, m.id, now)) for m in companies[:USER_COMPANIES]
        ],
        more_companies=max(len(companies) - USER_COMPANIES, 0),
        periods=PERIODS,
        company_names={m.id: m.name for m in companies},
        firings=[
            (f, names.get(("feature", f.firing.feature_id), f.firing.feature_id)) for f in firings
        ],
        events=await _recent_events(c, env, EventFilter(user_id=user.id, limit=20)),
        nav="users",
    )


pages = [
    ("/companies", companies_page, ["GET"]),
    ("/companies/{company_id}", company_page, ["GET"]),
    ("/users", users_page, ["GET"]),
    ("/users/{user_id}", user_page, ["GET"]),
]
data: list[Any] = []
