"""Command line: ``tally serve`` (default), ``tally migrate``, ``tally worker``,
``tally deliver``, ``tally prune``, ``tally keys create|list|revoke``,
``tally companies set-billing-anchor``, ``tally import``.

One module per command (group), each with ``add_parser(sub)`` and
``run(args) -> int``; ``tally import`` lives with its client
(``tally.client.command``). What they share is in ``tally.cli.common``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tally.cli import background, companies, keys, migrate, prune, serve
from tally.client import command as import_command
from tally.errors import TallyError

# in the order ``tally --help`` lists them: name → (add_parser, run)
COMMANDS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], int]]] = {
    "serve": (serve.add_parser, serve.run),
    "migrate": (migrate.add_parser, migrate.run),
    "worker": (background.add_worker_parser, background.run_worker),
    "deliver": (background.add_deliver_parser, background.run_deliver),
    "prune": (prune.add_parser, prune.run),
    "keys": (keys.add_parser, keys.run),
    "companies": (companies.add_parser, companies.run),
    "import": (import_command.add_parser, import_command.run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tally",
        description="Event ingestion and usage metering that speaks the Schematic API.",
    )
    sub = parser.add_subparsers(dest="command")
    for add_parser, _ in COMMANDS.values():
        add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # ``tally`` alone serves, with serve's defaults
        args = parser.parse_args(["serve"])
    _, run = COMMANDS[args.command]
    try:
        return run(args)
    except TallyError as err:
        print(f"tally: {err.message}", file=sys.stderr)
        return 2
