"""``tally serve`` (the default command): the HTTP server, and on a first
start the development environment and its keys."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
from dataclasses import replace
from typing import Any

from tally.cli.common import add_database, settings_of, with_storage
from tally.keys import create_key
from tally.settings import Settings
from tally.storage.base import Storage


def add_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the HTTP server (the default command)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1, or TALLY_HOST)")
    serve.add_argument("--port", type=int, help="port to bind (default 8000, or TALLY_PORT)")
    serve.add_argument(
        "--workers",
        type=int,
        help="HTTP server processes sharing the port (default 1, or TALLY_HTTP_WORKERS)",
    )
    add_database(serve)


async def _bootstrap(storage: Storage) -> tuple[str, str] | None:
    """On a first start (no environment yet): a development environment with a
    secret and a publishable key. Returns the two keys, shown once."""
    if await storage.list_environments():
        return None
    _, secret, _ = await create_key(storage, "development")
    _, publishable, _ = await create_key(storage, "development", publishable=True)
    return secret, publishable


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args, host=args.host, port=args.port, http_workers=args.workers)
    first = asyncio.run(with_storage(settings, _bootstrap))
    _greet(settings, first)
    # every process of this server records its metrics into files here; a
    # scrape of any HTTP process adds them up (tally/observe/metrics.py)
    metrics_dir = tempfile.mkdtemp(prefix="tally-metrics-")
    settings = replace(settings, metrics_dir=metrics_dir)
    storage_process = None
    if settings.storage_process:
        # the writer, the worker and the delivery loop run beside the HTTP
        # server, not in it (tally/storage/process/server.py says why)
        from tally.storage.process.client import StorageProcess

        try:
            storage_process = StorageProcess(settings.as_environ())
        except BaseException:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            raise
        settings = replace(
            settings, storage_socket=storage_process.socket_path, worker=False, deliver=False
        )
    try:
        _run_uvicorn(settings)
    finally:
        if storage_process is not None:
            storage_process.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _greet(settings: Settings, first: tuple[str, str] | None) -> None:
    """Where it serves; on a first start, the new keys and how to use them."""
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = f"http://{shown_host}:{settings.port}"
    print(f"tally serving {base} on {settings.database_url}", flush=True)
    if first is None:
        return
    secret, publishable = first
    print(
        "\nFirst start: created the 'development' environment. Its keys are shown once:\n"
        f"  secret key:      {secret}\n"
        f"  publishable key: {publishable}\n\n"
        "Point the official SDK (pip install schematichq) at it:\n"
        "  from schematic.client import Schematic, SchematicConfig\n"
        f'  client = Schematic("{secret}", SchematicConfig(base_url="{base}", event_capture_url="{base}"))\n'
        '  client.track(event="api-call", company={"id": "acme"}, user={"id": "u1"})\n',
        flush=True,
    )


def _run_uvicorn(settings: Settings) -> None:
    import uvicorn

    from tally.api.app import create_app
    from tally.api.connections import protocol
    from tally.observe.logs import log_config

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": log_config(settings.log_level, settings.log_format, "http"),
        "access_log": False,
        "loop": "auto",
        "http": protocol(settings),  # head timeout, connection cap
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
    }
    if settings.http_workers > 1:
        # each process builds its own app from the environment: hand the
        # settings down through it
        os.environ.update(settings.as_environ())
        uvicorn.run(
            "tally.api.app:app_from_environment",
            factory=True,
            workers=settings.http_workers,
            **options,
        )
    else:
        uvicorn.run(create_app(settings, serving=True), **options)
