"""The SQL of the storage modules that SQLite and PostgreSQL share stays
portable: their source is read for constructs only SQLite accepts (numbered
or named placeholders, JSON functions, SQLite-only functions and syntax,
literal ``%``). Only string literals that look like SQL are checked — not
comments, docstrings, Python code or error messages.

Every module of ``storage/sql/`` runs on both backends, and every one is
checked: the writer threads, the batch's unit of work (``PgUnitOfWork``
subclasses it), the event rows, the entity, catalog, webhook and outbox
mixins of ``SqlStorage``. ``storage/sqlite/`` and ``storage/postgres/`` hold
what only their backend runs (schemas included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import tally.storage

STORAGE = Path(tally.storage.__file__).resolve().parent
SHARED = {
    "sql/__init__.py",
    "sql/batch.py",
    "sql/writer.py",
    "sql/catalog.py",
    "sql/catalog_rows.py",
    "sql/entities.py",
    "sql/entity_rows.py",
    "sql/entity_writes.py",
    "sql/usage.py",
    "sql/storage.py",
    "sql/effects.py",
    "sql/outbox.py",
    "sql/webhooks.py",
    "sql/event_rows.py",
}
MODULES = sorted(STORAGE.glob("sql/*.py"))


def _name(path: Path) -> str:
    return path.relative_to(STORAGE).as_posix()


# A literal is SQL when it holds an upper-case SQL keyword or a ``?`` placeholder.
_SQL_WORDS = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|WHERE|JOIN|VALUES|ORDER BY|GROUP BY|LIMIT|OFFSET"
    r"|UNION|EXISTS|LIKE|IN|AND|OR|NOT|NULL|COALESCE|CASE|ON CONFLICT|SET)\b|\?"
)
_FORBIDDEN = {
    # rule 1: positional ``?`` only
    "numbered placeholder ?N": re.compile(r"\?\d"),
    "named placeholder :name": re.compile(r"(?<![\w:]):[A-Za-z_]\w*"),
    "named placeholder @name/$name": re.compile(r"(?<![\w'])[@$]\w"),
    # rule 2: no JSON functions
    "JSON function": re.compile(r"\bjson\w*\s*\(", re.IGNORECASE),
    "JSON operator ->/->>": re.compile(r"->"),
    "empty IN ()": re.compile(r"\bIN\s*\(\s*\)", re.IGNORECASE),
    # rule 4: no SQLite-only functions or syntax
    "typeof()": re.compile(r"\btypeof\s*\(", re.IGNORECASE),
    "ifnull()": re.compile(r"\bifnull\s*\(", re.IGNORECASE),
    "rowid": re.compile(r"\b(_rowid_|rowid)\b", re.IGNORECASE),
    "last_insert_rowid()": re.compile(r"\blast_insert_rowid\b", re.IGNORECASE),
    "changes()": re.compile(r"\b(total_)?changes\s*\(", re.IGNORECASE),
    "INSERT OR …": re.compile(r"\bINSERT\s+OR\b", re.IGNORECASE),
    "REPLACE INTO": re.compile(r"\bREPLACE\s+INTO\b", re.IGNORECASE),
    "ON CONFLICT without a target": re.compile(r"\bON\s+CONFLICT\s+DO\b", re.IGNORECASE),
    "LIMIT -1": re.compile(r"\bLIMIT\s+-", re.IGNORECASE),
    "GLOB": re.compile(r"\bGLOB\b", re.IGNORECASE),
    "date function": re.compile(
        r"\b(strftime|julianday|unixepoch|datetime|date|time)\s*\(", re.IGNORECASE
    ),
    "comparison with TRUE/FALSE": re.compile(r"[=<>]\s*(TRUE|FALSE)\b", re.IGNORECASE),
    # rule 8: LIKE patterns go in parameters
    "literal %": re.compile(r"%"),
}
# rule 3: case-insensitive substring search the one portable way
_LIKE = re.compile(r"\bLIKE\b", re.IGNORECASE)
_PORTABLE_LIKE = re.compile(
    r"\blower\([\w.{}]+\)\s+LIKE\s+lower\(\?\)\s+ESCAPE\s+'\\'", re.IGNORECASE
)


def _two_argument_min_max(sql: str) -> bool:
    """A scalar ``max(a, b)``/``min(a, b)`` (the aggregates take one argument)."""
    for match in re.finditer(r"\b(max|min)\s*\(", sql, re.IGNORECASE):
        depth = 0
        for char in sql[match.end() :]:
            if char == "(":
                depth += 1
            elif char == ")":
                if depth == 0:
                    break
                depth -= 1
            elif char == "," and depth == 0:
                return True
    return False


def _docstrings(tree: ast.AST) -> set[int]:
    """The ``id`` of every docstring node."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                found.add(id(body[0].value))
    return found


def string_literals(
    source: str, skip_classes: frozenset[str] = frozenset()
) -> list[tuple[int, str]]:
    """(line, text) of each string literal but docstrings and those inside
    the classes named in ``skip_classes``; an f-string's replacement fields
    become ``{}``."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    out: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.ClassDef) and node.name in skip_classes:
            return
        if isinstance(node, ast.JoinedStr):
            text = ""
            for part in node.values:
                if isinstance(part, ast.Constant):
                    text += str(part.value)
                else:
                    text += "{}"
                    assert isinstance(part, ast.FormattedValue)
                    visit(part.value)
            out.append((node.lineno, text))
            return
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in skip:
                out.append((node.lineno, node.value))
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def problems(source: str, skip_classes: frozenset[str] = frozenset()) -> list[str]:
    """What in ``source``'s SQL literals PostgreSQL or SQLite would not run
    alike (leaving out the classes named in ``skip_classes``)."""
    found: list[str] = []
    for line, text in string_literals(source, skip_classes):
        if not _SQL_WORDS.search(text):
            continue
        names = [name for name, pattern in _FORBIDDEN.items() if pattern.search(text)]
        if _two_argument_min_max(text):
            names.append("two-argument max()/min()")
        if len(_LIKE.findall(text)) != len(_PORTABLE_LIKE.findall(text)):
            names.append("LIKE not written as lower(col) LIKE lower(?) ESCAPE '\\'")
        found.extend(f"line {line}: {name} in {text.strip()[:120]!r}" for name in names)
    tree = ast.parse(source)
    found.extend(
        f"line {node.lineno}: conn.total_changes (use cursor.rowcount)"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "total_changes"
    )
    return found


def test_the_shared_modules_are_all_checked() -> None:
    names = {_name(p) for p in MODULES}
    assert names >= SHARED
    assert all(n.startswith("sql/") for n in names)


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_module_sql_is_portable(path: Path) -> None:
    assert problems(path.read_text()) == []


def test_only_the_named_sqlite_only_classes_are_left_out() -> None:
    source = (
        'def shared(conn):\n    conn.execute("SELECT rowid FROM t")\n'
        "class SqliteStorage:\n"
        '    def _prune(self, conn):\n        conn.execute("SELECT rowid FROM t")\n'
    )
    assert len(problems(source)) == 2
    assert len(problems(source, frozenset({"SqliteStorage"}))) == 1


@pytest.mark.parametrize(
    "snippet",
    [
        'conn.execute("SELECT * FROM t WHERE a = ?1", (x,))',
        'conn.execute("SELECT * FROM t WHERE a = :company", {"company": x})',
        'sql = "WHERE id IN (SELECT value FROM json_each(?))"',
        "sql = \"SELECT json_extract(body, '$.a') FROM events\"",
        'sql = "DELETE FROM t WHERE id IN ()"',
        'sql = "SELECT typeof(quantity) FROM t"',
        'sql = "SELECT ifnull(name, id) FROM t"',
        'sql = "SELECT rowid FROM t"',
        'sql = "SELECT last_insert_rowid()"',
        'sql = "SELECT changes()"',
        'sql = "INSERT OR IGNORE INTO t (a) VALUES (?)"',
        'sql = "REPLACE INTO t (a) VALUES (?)"',
        'sql = "INSERT INTO t (a) VALUES (?) ON CONFLICT DO NOTHING"',
        'sql = "SELECT a FROM t LIMIT -1 OFFSET ?"',
        "sql = \"SELECT a FROM t WHERE a GLOB 'x*'\"",
        "sql = \"SELECT strftime('%s', 'now')\"",
        'sql = "SELECT max(a, b) FROM t"',
        'sql = "UPDATE t SET a = MIN(a, ?) WHERE id = ?"',
        'sql = "SELECT a FROM t WHERE read_only = FALSE"',
        "sql = \"SELECT a FROM t WHERE name LIKE 'x%'\"",
        "sql = \"SELECT a FROM t WHERE name LIKE ? ESCAPE '\\\\'\"",
        "n = conn.total_changes",
    ],
)
def test_the_checker_finds(snippet: str) -> None:
    assert problems(snippet) != [], snippet


@pytest.mark.parametrize(
    "snippet",
    [
        '"""A docstring about json_each(?) and ?1, INSERT OR IGNORE and 100%."""',
        "# a comment: SELECT rowid FROM t WHERE a = ?1\nx = 1",
        'raise Invalid(f"the keys name {n} companies; send keys of one company")',
        'pattern = f"%{escaped}%"',
        "text = json.dumps(values)",
        'sql = "SELECT MAX(subtype), COUNT(*) FROM t WHERE a = ? GROUP BY b"',
        'sql = f"SELECT 1 FROM t WHERE id IN ({placeholders(n)})"',
        "sql = \"SELECT 'company', e.id FROM companies e WHERE e.environment_id = ?\"",
        "sql = \"SELECT a FROM t WHERE lower(e.name) LIKE lower(?) ESCAPE '\\\\'\"",
        'sql = f"SELECT a FROM t WHERE {clause} AND b = ? ON CONFLICT (a, b) DO NOTHING"',
        "sql = \"SELECT COALESCE(NULLIF(c.name, ''), c.id) FROM companies c\"",
    ],
)
def test_the_checker_lets_pass(snippet: str) -> None:
    assert problems(snippet) == []
