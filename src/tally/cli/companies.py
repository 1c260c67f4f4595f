"""``tally companies set-billing-anchor``: set or clear a company's billing
anchor and recount its billing-cycle usage."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from typing import Any

from tally.cli.common import add_database, settings_of, with_storage
from tally.clock import SystemClock, format_time, to_micros
from tally.ingest.timeparse import parse_timestamp
from tally.metering.periods import billing_end, billing_start
from tally.storage.base import Storage


def add_parser(sub: Any) -> None:
    companies = sub.add_parser("companies", help="manage companies")
    companies_sub = companies.add_subparsers(dest="companies_command", required=True)
    anchor = companies_sub.add_parser(
        "set-billing-anchor",
        help="set or clear the company's billing anchor and recount its billing-cycle usage",
    )
    anchor.add_argument(
        "--company",
        required=True,
        metavar="ID_OR_KEY=VALUE",
        help="the company: its id (comp_…) or one of its keys as KEY=VALUE (e.g. id=acme)",
    )
    anchor.add_argument(
        "--anchor",
        required=True,
        metavar="ISO8601",
        help="when its billing cycle starts (it restarts on that day and time each month; "
        "a time without zone is UTC), or 'none' to clear it",
    )
    anchor.add_argument(
        "--environment", help="environment name (needed when the key exists in several)"
    )
    add_database(anchor)


def run(args: argparse.Namespace) -> int:
    ref = args.company.strip()
    key, sep, value = ref.partition("=")
    keys = {key.strip(): value.strip()} if sep else {"id": ref}
    if not all(keys) or not all(keys.values()):
        print(f"tally: --company must be an id or KEY=VALUE, not {ref!r}", file=sys.stderr)
        return 2
    clear = args.anchor.strip().lower() in ("none", "null", "")
    anchor_at = None if clear else parse_timestamp(args.anchor, "--anchor")

    async def on_storage(storage: Storage) -> int:
        return await _set_anchor(storage, args.environment, keys, anchor_at)

    return asyncio.run(with_storage(settings_of(args), on_storage))


async def _set_anchor(
    storage: Storage, environment: str | None, keys: dict[str, str], anchor_at: datetime | None
) -> int:
    environment_id = None
    if environment is not None:
        named = [e for e in await storage.list_environments() if e.name == environment]
        if not named:
            print(f"tally: there is no environment named {environment!r}", file=sys.stderr)
            return 1
        environment_id = named[0].id
    anchor = to_micros(anchor_at) if anchor_at is not None else None
    company = await storage.set_billing_anchor(environment_id, keys, anchor)
    who = f"company {company.id} ({company.display_name})"
    if anchor_at is None:
        print(f"cleared the billing anchor of {who}; its billing cycle is the calendar month")
        return 0
    start = billing_start(SystemClock().now(), anchor_at)
    print(
        f"set the billing anchor of {who} to {format_time(anchor_at)}; current billing "
        f"period {format_time(start)} to {format_time(billing_end(start, anchor_at))}, "
        "billing-cycle usage recounted"
    )
    return 0
