"""Command line: ``tally serve`` (default), ``tally migrate``, ``tally worker``,
``tally deliver``, ``tally prune``, ``tally keys create|list|revoke``,
``tally companies set-billing-anchor``, ``tally import``."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tally.client import command as import_command
from tally.clock import SystemClock, format_micros, format_time, to_micros
from tally.errors import TallyError
from tally.key_notice import announce, notice_path
from tally.keys import create_key
from tally.settings import Settings
from tally.storage import open_storage
from tally.storage.base import Storage


def _add_database(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="where events live (default sqlite:///./tally.db, or TALLY_DATABASE_URL)",
    )


def _add_metrics(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics at /metrics on this port"
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the metrics port binds (default 127.0.0.1; others need TALLY_METRICS_TOKEN)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tally",
        description="Event ingestion and usage metering that speaks the Schematic API.",
    )
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the HTTP server (the default command)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1, or TALLY_HOST)")
    serve.add_argument("--port", type=int, help="port to bind (default 8000, or TALLY_PORT)")
    serve.add_argument(
        "--workers",
        type=int,
        help="HTTP server processes sharing the port (default 1, or TALLY_HTTP_WORKERS)",
    )
    _add_database(serve)

    migrate = sub.add_parser("migrate", help="bring the database schema up to date, then exit")
    _add_database(migrate)

    worker = sub.add_parser("worker", help="process pending events (without serving HTTP)")
    worker.add_argument(
        "--burst", action="store_true", help="process every pending event, then exit"
    )
    _add_database(worker)
    _add_metrics(worker)

    deliver = sub.add_parser(
        "deliver", help="deliver webhooks and billing meter records (without serving HTTP)"
    )
    deliver.add_argument(
        "--burst",
        action="store_true",
        help="deliver everything due now, then exit (retries due later are left)",
    )
    _add_database(deliver)
    _add_metrics(deliver)

    prune = sub.add_parser(
        "prune",
        help="prune once what the retention settings let go (tally serve and tally worker "
        "do it every minute)",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="print how many rows would go, delete nothing"
    )
    _add_database(prune)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key; prints it alone on the last line")
    create.add_argument(
        "--environment", required=True, help="environment name (created when missing)"
    )
    create.add_argument(
        "--publishable",
        action="store_true",
        help="a publishable (api_…) key instead of a secret one",
    )
    create.add_argument(
        "--read-only", action="store_true", help="a key that can read but not write"
    )
    _add_database(create)
    listing = keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--environment", help="only this environment")
    _add_database(listing)
    revoke = keys_sub.add_parser(
        "revoke", help="revoke a key by its id (key_…) or its shown prefix"
    )
    revoke.add_argument("key", help="the key's id or prefix, as `tally keys list` shows it")
    _add_database(revoke)
    _add_companies(sub)
    import_command.add_parser(sub)
    return parser


def _add_companies(sub: Any) -> None:
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
    _add_database(anchor)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "serve"
    try:
        if command == "serve":
            return serve(args)
        if command == "keys":
            return asyncio.run(_keys(args))
        if command == "migrate":
            return asyncio.run(_migrate(args))
        if command == "worker":
            return asyncio.run(_worker(args))
        if command == "deliver":
            return asyncio.run(_deliver(args))
        if command == "prune":
            return asyncio.run(_prune(args))
        if command == "companies":
            return asyncio.run(_companies(args))
        if command == "import":
            return import_command.run(args)
    except TallyError as err:
        print(f"tally: {err.message}", file=sys.stderr)
        return 2
    parser.print_help()
    return 2


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return Settings.from_env(database_url=getattr(args, "database_url", None), **extra)


def _observed(args: argparse.Namespace, settings: Settings, role: str, fn: Any) -> Any:
    """``fn(storage)`` of a ``tally worker`` or ``tally deliver``: its logs
    set up for ``role``, its metrics served on ``--metrics-port`` meanwhile."""
    from tally.observe.logs import configure
    from tally.observe.metrics_server import serving_metrics

    configure(settings.log_level, settings.log_format, role)

    async def run(storage: Storage) -> Any:
        backlog = storage.pending_backlog if role == "worker" else None
        port, host, token = args.metrics_port, args.metrics_host, settings.metrics_token
        async with serving_metrics(host, port, token, backlog):
            return await fn(storage)

    return run


async def _with_storage(settings: Settings, fn: Any) -> Any:
    storage = open_storage(settings)
    await storage.start()
    try:
        return await fn(storage)
    finally:
        await storage.close()


async def _keys(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.keys_command == "create":

        async def run_create(storage: Storage) -> int:
            record, plaintext, created = await create_key(
                storage, args.environment, publishable=args.publishable, read_only=args.read_only
            )
            announce(notice_path(settings.database_url))  # servers forget unknown keys now
            if created:
                print(f"created environment {args.environment!r}")
            flags = [record.kind] + (["read-only"] if record.read_only else [])
            print(
                f"new {' '.join(flags)} key {record.id} for environment {args.environment!r}; it is shown once:"
            )
            print(plaintext)
            return 0

        result: int = await _with_storage(settings, run_create)
        return result
    if args.keys_command == "list":

        async def run_list(storage: Storage) -> int:
            keys = await storage.list_api_keys(args.environment)
            print(
                f"{'id':<34} {'environment':<14} {'kind':<12} {'prefix':<16} {'rights':<10} {'created':<28} revoked"
            )
            for k in keys:
                rights = "read-only" if k.read_only else "read-write"
                revoked = format_micros(k.revoked_at) if k.revoked_at else "-"
                print(
                    f"{k.id:<34} {k.environment_name:<14} {k.kind:<12} {k.prefix + '…':<16} {rights:<10} {format_micros(k.created_at):<28} {revoked}"
                )
            return 0

        result = await _with_storage(settings, run_list)
        return result

    async def run_revoke(storage: Storage) -> int:
        record = await storage.revoke_api_key(args.key)
        if record is None:
            print(f"tally: no single active key has the id or prefix {args.key!r}", file=sys.stderr)
            return 1
        announce(notice_path(settings.database_url))  # servers on this host drop it now
        print(
            f"revoked {record.kind} key {record.id} ({record.prefix}…) of environment {record.environment_name!r}"
        )
        return 0

    result = await _with_storage(settings, run_revoke)
    return result


async def _companies(args: argparse.Namespace) -> int:
    from tally.clock import to_micros
    from tally.ingest.timeparse import parse_timestamp
    from tally.metering.periods import billing_end, billing_start

    settings = _settings(args)
    ref = args.company.strip()
    key, sep, value = ref.partition("=")
    keys = {key.strip(): value.strip()} if sep else {"id": ref}
    if not all(keys) or not all(keys.values()):
        print(f"tally: --company must be an id or KEY=VALUE, not {ref!r}", file=sys.stderr)
        return 2
    clear = args.anchor.strip().lower() in ("none", "null", "")
    anchor_at = None if clear else parse_timestamp(args.anchor, "--anchor")

    async def run(storage: Storage) -> int:
        environment_id = None
        if args.environment is not None:
            named = [e for e in await storage.list_environments() if e.name == args.environment]
            if not named:
                print(f"tally: there is no environment named {args.environment!r}", file=sys.stderr)
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

    result: int = await _with_storage(settings, run)
    return result


async def _worker(args: argparse.Namespace) -> int:
    import signal

    from tally.pipeline.worker import Worker
    from tally.retention.loop import Pruner

    settings = _settings(args)

    async def run(storage: Storage) -> int:
        worker = Worker(storage, batch_size=settings.worker_batch_size)
        if args.burst:
            started = time.perf_counter()
            done = await worker.run_until_idle()
            seconds = time.perf_counter() - started
            print(f"processed {done} events in {seconds:.2f} s ({done / max(seconds, 1e-9):.0f}/s)")
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"tally worker processing {settings.database_url}", flush=True)
        loops = [worker.run_forever(stop)]
        if settings.prune:
            loops.append(Pruner(storage, settings.retention).run_forever(stop))
        await asyncio.gather(*loops)
        print(f"stopped after processing {worker.processed} events")
        return 0

    result: int = await _with_storage(settings, _observed(args, settings, "worker", run))
    return result


async def _deliver(args: argparse.Namespace) -> int:
    import signal
    from dataclasses import replace

    from tally.effects.delivery import Deliverer, DeliveryConfig

    # Delivery is background work: it yields the CPU to event processing on
    # a shared machine, and on SQLite its bookkeeping commits skip the fsync
    # (a commit lost to a power cut only means a delivery is made again, which
    # at-least-once delivery allows; processing commits stay FULL).
    settings = replace(_settings(args), sqlite_synchronous="NORMAL")
    if settings.delivery_nice and hasattr(os, "nice"):
        os.nice(settings.delivery_nice)

    async def run(storage: Storage) -> int:
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
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sink = settings.billing_sink_url or "no billing sink"
        print(f"tally deliver on {settings.database_url} ({sink})", flush=True)
        await _report_billing_backlog(storage, settings.billing_sink_url)
        await deliverer.run_forever(stop)
        print(f"stopped after {deliverer.attempts} attempts ({deliverer.delivered} delivered)")
        return 0

    result: int = await _with_storage(settings, _observed(args, settings, "deliver", run))
    return result


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


async def _prune(args: argparse.Namespace) -> int:
    from tally.retention.loop import Pruner

    settings = _settings(args)
    policy = settings.retention

    async def run(storage: Storage) -> int:
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

    result: int = await _with_storage(settings, run)
    return result


async def _migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def run(storage: Storage) -> int:  # starting storage applies the migrations
        print(f"the schema of {settings.database_url} is up to date")
        return 0

    result: int = await _with_storage(settings, run)
    return result


async def _bootstrap(storage: Storage) -> tuple[str, str] | None:
    """On a first start (no environment yet): a development environment with a
    secret and a publishable key. Returns the two keys, shown once."""
    if await storage.list_environments():
        return None
    _, secret, _ = await create_key(storage, "development")
    _, publishable, _ = await create_key(storage, "development", publishable=True)
    return secret, publishable


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tally.api.app import create_app
    from tally.api.connections import protocol
    from tally.observe.logs import log_config

    settings = _settings(args, host=args.host, port=args.port, http_workers=args.workers)
    first = asyncio.run(_with_storage(settings, _bootstrap))
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = f"http://{shown_host}:{settings.port}"
    print(f"tally serving {base} on {settings.database_url}", flush=True)
    if first is not None:
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
    # every process of this server records its metrics into files here; a
    # scrape of any HTTP process adds them up (tally/observe/metrics.py)
    metrics_dir = tempfile.mkdtemp(prefix="tally-metrics-")
    settings = replace(settings, metrics_dir=metrics_dir)
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
    storage_process = None
    if settings.storage_process:
        # the writer, the worker and the delivery loop run beside the HTTP
        # server, not in it (tally/storage/process.py says why)
        from tally.storage.process import StorageProcess

        try:
            storage_process = StorageProcess(settings.as_environ())
        except BaseException:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            raise
        settings = replace(
            settings, storage_socket=storage_process.socket_path, worker=False, deliver=False
        )
    try:
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
            uvicorn.run(create_app(settings), **options)
    finally:
        if storage_process is not None:
            storage_process.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
