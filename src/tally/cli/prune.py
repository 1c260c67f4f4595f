"""``tally prune``: prune once what the retention settings let go
(``tally serve`` and ``tally worker`` do it every minute)."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from tally.cli.common import add_database, settings_of, with_storage
from tally.clock import SystemClock, to_micros
from tally.storage.base import Storage


def add_parser(sub: Any) -> None:
    prune = sub.add_parser(
        "prune",
        help="prune once what the retention settings let go (tally serve and tally worker "
        "do it every minute)",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="print how many rows would go, delete nothing"
    )
    add_database(prune)


def run(args: argparse.Namespace) -> int:
    from tally.retention.loop import Pruner

    settings = settings_of(args)
    policy = settings.retention

    async def on_storage(storage: Storage) -> int:
        if args.dry_run:
            cutoffs = policy.cutoffs(to_micros(SystemClock().now()))
            counts = await storage.count_prunable(cutoffs)
            for kind, count in counts.items():
                print(f"{kind}: {count} would be pruned")
            if "events" not in counts:
                print("events: kept forever (TALLY_EVENT_RETENTION_DAYS is 0)")
            return 0
        pruner = Pruner(storage, policy)
        started = time.perf_counter()
        totals = await pruner.prune_once()
        for kind, count in totals.items():
            print(f"{kind}: {count} pruned")
        print(
            f"in {time.perf_counter() - started:.2f} s; the longest transaction took "
            f"{pruner.longest_chunk_seconds * 1000:.1f} ms"
        )
        vacuumed = await storage.vacuum_dead_rows()
        if vacuumed:
            print(f"vacuumed {', '.join(vacuumed)}")
        return 0

    return asyncio.run(with_storage(settings, on_storage))
