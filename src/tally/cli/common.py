"""What the commands share: the ``--database-url`` and metrics options, the
settings they read, a started storage, and stopping on SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tally.pipeline.processing import PIPELINE
from tally.settings import Settings
from tally.storage import open_storage
from tally.storage.base import Storage

T = TypeVar("T")
StorageFn = Callable[[Storage], Awaitable[T]]


def add_database(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="where events live (default sqlite:///./tally.db, or TALLY_DATABASE_URL)",
    )


def add_metrics(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics at /metrics on this port"
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the metrics port binds (default 127.0.0.1; others need TALLY_METRICS_TOKEN)",
    )


def settings_of(args: argparse.Namespace, **extra: Any) -> Settings:
    return Settings.from_env(database_url=getattr(args, "database_url", None), **extra)


async def with_storage(settings: Settings, fn: StorageFn[T]) -> T:
    """``fn(storage)`` on a started storage (starting it applies the
    migrations), closed afterwards."""
    storage = open_storage(settings, processing=PIPELINE)
    await storage.start()
    try:
        return await fn(storage)
    finally:
        await storage.close()


def observed(
    args: argparse.Namespace, settings: Settings, role: str, fn: StorageFn[T]
) -> StorageFn[T]:
    """``fn(storage)`` of a ``tally worker`` or ``tally deliver``: its logs
    set up for ``role``, its metrics served on ``--metrics-port`` meanwhile."""
    from tally.observe.logs import configure
    from tally.observe.metrics_server import serving_metrics

    configure(settings.log_level, settings.log_format, role)

    async def run(storage: Storage) -> T:
        backlog = storage.pending_backlog if role == "worker" else None
        port, host, token = args.metrics_port, args.metrics_host, settings.metrics_token
        async with serving_metrics(host, port, token, backlog):
            return await fn(storage)

    return run


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (in the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
