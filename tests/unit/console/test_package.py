"""The console's templates and static files are package data: every one of
them matches a ``package-data`` pattern of pyproject.toml, so an installed
tally (not only a checkout) serves the console."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CONSOLE = ROOT / "src" / "tally" / "console"


def test_every_console_asset_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["tally.console"]
    assets = [
        p.relative_to(CONSOLE).as_posix()
        for folder in ("templates", "static")
        for p in (CONSOLE / folder).rglob("*")
        if p.is_file()
    ]
    assert "templates/base.html" in assets and "static/console.js" in assets
    missing = [a for a in assets if not any(fnmatch.fnmatch(a, pat) for pat in patterns)]
    assert missing == []
    # the pattern's "*" does not cross folders: none may hide in a subfolder
    assert all(a.count("/") == 1 for a in assets)
