"""The ``tally import`` command line: its arguments, and the run."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    imp = sub.add_parser(
        "import",
        help="send files of events (NDJSON or CSV, gzip or not) to a tally through its API, "
        "exactly once and resumably",
    )
    imp.add_argument("files", nargs="+", type=Path, metavar="FILE")
    imp.add_argument(
        "--url", help="the tally to send to, e.g. http://127.0.0.1:8000 (or TALLY_URL)"
    )
    imp.add_argument("--key", help="an API key of the environment to fill (or TALLY_API_KEY)")
    clock = imp.add_mutually_exclusive_group()
    clock.add_argument(
        "--backfill",
        action="store_true",
        help="set backfill on every event: sent_at up to 365 days back, analytics only",
    )
    clock.add_argument(
        "--trusted-clock",
        action="store_true",
        help="set trusted_client_clock on every event: sent_at up to 34 days back",
    )
    imp.add_argument(
        "--format", choices=("ndjson", "csv"), help="default: csv for *.csv[.gz], else ndjson"
    )
    imp.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="CSV: the column of a field: sent_at, event, quantity, idempotency_key, "
        "company.KEY, user.KEY, traits.NAME (repeat; other columns are ignored)",
    )
    imp.add_argument(
        "--concurrency", type=int, default=4, help="requests in flight at once (default 4)"
    )
    imp.add_argument(
        "--dry-run", action="store_true", help="read and check every line locally; send nothing"
    )
    imp.add_argument(
        "--checkpoint",
        type=Path,
        help="where to keep what the server acknowledged (default FILE.checkpoint.json)",
    )
    imp.add_argument(
        "--give-up-after",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="stop when the server has taken no batch for this long (default 600)",
    )


def run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    from tally.client.importer import ImportOptions, run_import
    from tally.client.progress import reporter_for
    from tally.errors import Invalid

    env = os.environ if environ is None else environ
    if not 1 <= args.concurrency <= 64:
        raise Invalid("--concurrency must be between 1 and 64")
    if args.give_up_after <= 0:
        raise Invalid("--give-up-after must be more than 0 seconds")
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        raise Invalid(f"no such file: {missing[0]}")
    opts = ImportOptions(
        files=tuple(args.files),
        url=args.url or env.get("TALLY_URL", ""),
        key=args.key or env.get("TALLY_API_KEY", ""),
        format=args.format,
        mapping=tuple(args.map),
        backfill=args.backfill,
        trusted_clock=args.trusted_clock,
        concurrency=args.concurrency,
        dry_run=args.dry_run,
        checkpoint=args.checkpoint,
        give_up_after=args.give_up_after,
    )
    from tally.client.importer import file_format

    if opts.mapping and any(file_format(p, opts.format) != "csv" for p in opts.files):
        raise Invalid("--map is for CSV files (--format csv, or files named *.csv[.gz])")
    reporter = reporter_for(sys.stdout)
    try:
        return asyncio.run(run_import(opts, reporter))
    except KeyboardInterrupt:
        reporter.stop()
        print(
            "tally import: interrupted; what the server acknowledged is in the checkpoint: "
            "run the same command again to go on from there",
            file=sys.stderr,
        )
        return 130
