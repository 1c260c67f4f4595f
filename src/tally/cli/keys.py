"""``tally keys create|list|revoke``: API keys, managed on the database."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from tally.cli.common import add_database, settings_of, with_storage
from tally.clock import format_micros
from tally.key_notice import announce, notice_path
from tally.keys import create_key
from tally.storage.base import Storage


def add_parser(sub: Any) -> None:
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
    add_database(create)
    listing = keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--environment", help="only this environment")
    add_database(listing)
    revoke = keys_sub.add_parser(
        "revoke", help="revoke a key by its id (key_…) or its shown prefix"
    )
    revoke.add_argument("key", help="the key's id or prefix, as `tally keys list` shows it")
    add_database(revoke)


def run(args: argparse.Namespace) -> int:
    command = {"create": _create, "list": _list, "revoke": _revoke}[args.keys_command]
    settings = settings_of(args)

    async def on_storage(storage: Storage) -> int:
        return await command(args, storage, notice_path(settings.database_url))

    return asyncio.run(with_storage(settings, on_storage))


async def _create(args: argparse.Namespace, storage: Storage, notice: str) -> int:
    record, plaintext, created = await create_key(
        storage, args.environment, publishable=args.publishable, read_only=args.read_only
    )
    announce(notice)  # servers forget unknown keys now
    if created:
        print(f"created environment {args.environment!r}")
    flags = [record.kind] + (["read-only"] if record.read_only else [])
    print(
        f"new {' '.join(flags)} key {record.id} for environment {args.environment!r}; it is shown once:"
    )
    print(plaintext)
    return 0


async def _list(args: argparse.Namespace, storage: Storage, notice: str) -> int:
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


async def _revoke(args: argparse.Namespace, storage: Storage, notice: str) -> int:
    record = await storage.revoke_api_key(args.key)
    if record is None:
        print(f"tally: no single active key has the id or prefix {args.key!r}", file=sys.stderr)
        return 1
    announce(notice)  # servers on this host drop it now
    print(
        f"revoked {record.kind} key {record.id} ({record.prefix}…) of environment {record.environment_name!r}"
    )
    return 0
