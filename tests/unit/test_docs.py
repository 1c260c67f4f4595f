"""The README documents every setting and every command."""

from __future__ import annotations

import argparse
from pathlib import Path

from tally.cli import build_parser
from tally.settings import ENV_VARS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [var for _, var, _ in ENV_VARS if f"`{var}`" not in README]
    assert missing == []


def _commands(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(f"{prefix} {name}")
                found.extend(_commands(sub, f"{prefix} {name}"))
    return found


def test_every_command_is_documented() -> None:
    commands = _commands(build_parser(), "tally")
    assert commands, "the parser lists no commands"
    leaves = [c for c in commands if not any(o.startswith(c + " ") for o in commands)]
    missing = [c for c in leaves if f"`{c}" not in README]
    assert missing == []


def test_readme_gives_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:25])
    assert "make run" in first_screen
    assert "make test" in first_screen
