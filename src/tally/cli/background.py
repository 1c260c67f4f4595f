"""``tally worker`` and ``tally deliver``: the background work (processing
pending events; delivering webhooks and billing meter records) without
serving HTTP, until stopped or, with ``--burst``, until nothing is left."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import replace
from typing import Any

from tally.cli.common import (
    add_database,
    add_metrics,
    observed,
    settings_of,
    stop_on_signals,
    with_storage,
)
from tally.gc_pause import freeze_startup
from tally.storage.base import Storage


def _add(sub: Any, name: str, help: str, burst: str) -> None:
    parser = sub.add_parser(name, help=help)
    parser.add_argument("--burst", action="store_true", help=burst)
    add_database(parser)
    add_metrics(parser)


def add_worker_parser(sub: Any) -> None:
    _add(
        sub,
        "worker",
        "process pending events (without serving HTTP)",
        "process every pending event, then exit",
    )


def add_deliver_parser(sub: Any) -> None:
    _add(
        sub,
        "deliver",
        "deliver webhooks and billing meter records (without serving HTTP)",
        "deliver everything due now, then exit (retries due later are left)",
    )


def run_worker(args: argparse.Namespace) -> int:
    from tally.pipeline.worker import Worker
    from tally.retention.loop import Pruner

    settings = settings_of(args)

    async def on_storage(storage: Storage) -> int:
        worker = Worker(
            storage,
            batch_size=settings.worker_batch_size,
            linger_seconds=settings.worker_linger_ms / 1000,
        )
        if args.burst:
            started = time.perf_counter()
            done = await worker.run_until_idle()
            seconds = time.perf_counter() - started
            print(f"processed {done} events in {seconds:.2f} s ({done / max(seconds, 1e-9):.0f}/s)")
            return 0
        stop = stop_on_signals()
        freeze_startup()  # a long-running process: start-up stays out of GC passes
        print(f"tally worker processing {settings.database_url}", flush=True)
        loops = [worker.run_forever(stop)]
        if settings.prune:
            loops.append(Pruner(storage, settings.retention).run_forever(stop))
        await asyncio.gather(*loops)
        print(f"stopped after processing {worker.processed} events")
        return 0

    return asyncio.run(with_storage(settings, observed(args, settings, "worker", on_storage)))


def run_deliver(args: argparse.Namespace) -> int:
    from tally.effects.delivery import Deliverer, DeliveryConfig

    # Delivery is background work: it yields the CPU to event processing on
    # a shared machine, and on SQLite its bookkeeping commits skip the fsync
    # (a commit lost to a power cut only means a delivery is made again, which
    # at-least-once delivery allows; processing commits stay FULL).
    settings = replace(settings_of(args), sqlite_synchronous="NORMAL")
    if settings.delivery_nice and hasattr(os, "nice"):
        os.nice(settings.delivery_nice)

    async def on_storage(storage: Storage) -> int:
        deliverer = Deliverer(storage, DeliveryConfig.from_settings(settings))
        if args.burst:
            started = time.perf_counter()
            made = await deliverer.run_until_idle()
            seconds = time.perf_counter() - started
            print(
                f"made {made} delivery attempts ({deliverer.delivered} delivered) "
                f"in {seconds:.2f} s"
            )
            await _report_billing_backlog(storage, settings.billing_sink_url)
            return 0
        stop = stop_on_signals()
        freeze_startup()  # a long-running process: start-up stays out of GC passes
        sink = settings.billing_sink_url or "no billing sink"
        print(f"tally deliver on {settings.database_url} ({sink})", flush=True)
        await _report_billing_backlog(storage, settings.billing_sink_url)
        await deliverer.run_forever(stop)
        print(f"stopped after {deliverer.attempts} attempts ({deliverer.delivered} delivered)")
        return 0

    return asyncio.run(with_storage(settings, observed(args, settings, "deliver", on_storage)))


async def _report_billing_backlog(storage: Storage, sink_url: str) -> None:
    """Without a sink, say how many meter records wait for one (processing
    writes them whatever the settings; nothing billable is dropped)."""
    if sink_url:
        return
    waiting = (await storage.delivery_counts()).get(("billing", "pending"), 0)
    if waiting:
        print(
            f"{waiting} billing meter records wait for TALLY_BILLING_SINK_URL "
            "(they are sent, oldest first, once it is set)",
            flush=True,
        )
