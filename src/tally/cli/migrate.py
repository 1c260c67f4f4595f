"""``tally migrate``: bring the database schema up to date, then exit."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from tally.cli.common import add_database, settings_of, with_storage
from tally.storage.base import Storage


def add_parser(sub: Any) -> None:
    migrate = sub.add_parser("migrate", help="bring the database schema up to date, then exit")
    add_database(migrate)


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    async def on_storage(storage: Storage) -> int:  # starting storage applies the migrations
        print(f"the schema of {settings.database_url} is up to date")
        return 0

    return asyncio.run(with_storage(settings, on_storage))
