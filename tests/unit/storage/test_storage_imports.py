"""Storage never imports the pipeline (issue 10, item 6). The pipeline drives a
batch through the transactional interface storage provides
(``tally.storage.base_batch``), and storage is handed the pipeline's
processing by the code that opens it; an import the other way would make an
event's path run storage → pipeline → storage again. Every import statement
counts, at module level or inside a function, ``TYPE_CHECKING`` included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tally.storage

STORAGE = Path(tally.storage.__file__).resolve().parent
FORBIDDEN = "tally.pipeline"


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """(line, module name) of every import in ``source``, the source of
    ``module`` (relative imports resolved against it)."""
    package = module.rsplit(".", 1)[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.append((node.lineno, base))
            # ``from tally import pipeline`` names the package in the alias
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def forbidden(source: str, module: str) -> list[str]:
    return [
        f"line {line}: {name}"
        for line, name in imported_modules(source, module)
        if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")
    ]


def _module(path: Path) -> str:
    parts = path.relative_to(STORAGE.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(STORAGE.rglob("*.py"))


def test_every_storage_module_is_checked() -> None:
    names = {_module(p) for p in MODULES}
    assert {
        "tally.storage",
        "tally.storage.base_batch",
        "tally.storage.sql.batch",
        "tally.storage.sqlite.stored_processing",
        "tally.storage.postgres.storage",
        "tally.storage.process.server",
    } <= names


@pytest.mark.parametrize("path", MODULES, ids=_module)
def test_storage_does_not_import_the_pipeline(path: Path) -> None:
    assert forbidden(path.read_text(), _module(path)) == []


@pytest.mark.parametrize(
    "source",
    [
        "import tally.pipeline.rules\n",
        "from tally.pipeline.rules import process_events\n",
        "from tally.pipeline import rules\n",
        "from tally import pipeline\n",
        "def f():\n    from tally.pipeline.processing import PIPELINE\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tally.pipeline\n",
        "from ...pipeline import rules\n",
    ],
)
def test_each_way_of_importing_the_pipeline_is_found(source: str) -> None:
    assert forbidden(source, "tally.storage.sql.batch") != []


@pytest.mark.parametrize(
    "source",
    [
        "from tally.batch import Changes\n",
        "from tally.storage.base_batch import Processing\n",
        "import tally.pipelines_elsewhere\n",
        '"""Mentions tally.pipeline in a docstring."""\n',
    ],
)
def test_what_storage_may_import_passes(source: str) -> None:
    assert forbidden(source, "tally.storage.sql.batch") == []
