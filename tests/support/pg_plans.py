"""Check the PostgreSQL plans of the statements tally really runs.

``Recorder`` is a ``PgConnection.tracer``: it keeps every distinct statement
the code under test ran (its ``?`` text, the parameters of its first run, and
the ``SET LOCAL`` settings it ran under). ``check_plans`` then runs each one
again as ``EXPLAIN (ANALYZE, FORMAT JSON)`` in a transaction that is rolled
back, with its custom plan (what psycopg's first five runs get) or, through
``PREPARE``/``EXPLAIN EXECUTE`` under ``plan_cache_mode = force_generic_plan``,
with the generic plan psycopg's prepared statements may switch to, and
applies these rules to the plan (``plan_findings``):

- no ``Seq Scan`` on a big table;
- no scan reads more rows of a big table than the statement needs
  (``READ_FLOOR`` plus ``READ_FACTOR`` per row it returns or writes): this
  catches an index scan that filters every key of an environment as surely
  as a sequential scan, whatever the plan's shape;
- the pending claim (``FOR UPDATE SKIP LOCKED`` on ``events``) sorts nothing;
- a look-up in ``company_keys``/``user_keys`` by a list of values or entity
  ids never filters the list row by row.

One allowance (``_informed_scan``): a custom plan may read a table of at most
``LIST_SHARE`` rows per value it looks up, hashing the list: at such sizes
that costs less than an index probe per value, and the planner, which sees
the values and the table's size, takes the index once the table is larger.
A generic plan gets no allowance. Known findings are accepted explicitly by
the test (``Accepted``), each with its reason.

A statement that cannot run again (an ``INSERT`` of a row that exists now) is
explained without ``ANALYZE``: the structural rules still apply to it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.adapt import PyFormat, Transformer

from tally.storage.postgres.adapter import PgConnection, translate

READ_FLOOR = 2_000  # rows any statement may read of a big table
READ_FACTOR = 2  # and as many per row it returns (or writes)
TIMEOUT_MS = 20_000  # a statement slower than this is a finding of its own

_PLANNED = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)
_SET_LOCAL = re.compile(r"^\s*SET LOCAL (\w+)\s*=\s*(\S+)\s*$", re.IGNORECASE)
_END = re.compile(r"^\s*(COMMIT|ROLLBACK)\s*$", re.IGNORECASE)
_TOKENS = re.compile(r"'(?:[^']|'')*'|\?")
_IN_LIST = re.compile(r"\bIN\s*\((?:\s*\?\s*,)*\s*\?\s*\)", re.IGNORECASE)
KEY_TABLES = ("company_keys", "user_keys")
KEY_LIST_COLUMNS = ("value", "entity_id")
LIST_SHARE = 100  # rows per value looked up: see ``_informed_scan``
_SCANS = ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Tid Scan")


@dataclass
class Statement:
    sql: str  # as tally wrote it, with ``?`` placeholders
    params: tuple[Any, ...]  # of its first run
    settings: tuple[tuple[str, str], ...]  # SET LOCAL in force when it ran
    path: str  # the hot path that first ran it
    runs: int = 1

    @property
    def short(self) -> str:
        text = " ".join(self.sql.split())
        return text if len(text) <= 160 else text[:157] + "..."


class Recorder:
    """A ``PgConnection.tracer`` that keeps the distinct statements run while
    ``recording(path)`` is open (from any thread)."""

    def __init__(self) -> None:
        self.statements: dict[tuple[str, tuple[tuple[str, str], ...]], Statement] = {}
        self.path: str | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def __call__(self, sql: str, params: Sequence[Any]) -> None:
        settings: dict[str, str] = getattr(self._local, "settings", {})
        match = _SET_LOCAL.match(sql)
        if match:
            self._local.settings = {**settings, match.group(1).lower(): match.group(2)}
            return
        if _END.match(sql):
            self._local.settings = {}
            return
        if self.path is None or not _PLANNED.match(sql):
            return
        key = (sql, tuple(sorted(settings.items())))
        with self._lock:
            known = self.statements.get(key)
            if known is None:
                self.statements[key] = Statement(sql, tuple(params), key[1], self.path)
            else:
                known.runs += 1

    @contextmanager
    def recording(self, path: str) -> Iterator[None]:
        self.path = path
        try:
            yield
        finally:
            self.path = None

    @contextmanager
    def installed(self) -> Iterator[Recorder]:
        PgConnection.tracer = self
        try:
            yield self
        finally:
            PgConnection.tracer = None


@dataclass(frozen=True)
class Accepted:
    """Findings that are known and accepted, and why: regular expressions
    searched in the statement's text (``sql``), the rule and the mode, and the
    table's name."""

    sql: str
    tables: tuple[str, ...]
    reason: str
    rule: str = ""  # any rule
    mode: str = ""  # any mode

    def covers(self, finding: Finding) -> bool:
        return (
            finding.table in self.tables
            and re.search(self.rule, finding.rule) is not None
            and re.search(self.mode, finding.mode) is not None
            and re.search(self.sql, finding.statement.sql, re.DOTALL) is not None
        )


@dataclass
class Finding:
    mode: str
    statement: Statement
    rule: str
    table: str
    detail: str

    def __str__(self) -> str:
        detail = self.detail if len(self.detail) <= 300 else self.detail[:297] + "..."
        return (
            f"[{self.mode}] {self.rule} on {self.table}: {detail}\n"
            f"    ({self.statement.path}, ran {self.statement.runs}x) {self.statement.short}"
        )


@dataclass
class Outcome:
    findings: list[Finding] = field(default_factory=list)
    accepted: list[tuple[Finding, Accepted]] = field(default_factory=list)
    explained: int = 0
    analyzed: int = 0  # of those, how many ran (EXPLAIN ANALYZE)


def dollar_sql(sql: str) -> str:
    """``?`` → ``$1``, ``$2``, … (string literals left alone): for ``PREPARE``."""
    count = 0

    def swap(match: re.Match[str]) -> str:
        nonlocal count
        if match.group(0) != "?":
            return match.group(0)
        count += 1
        return f"${count}"

    return _TOKENS.sub(swap, sql)


def _param_types(conn: psycopg.Connection[Any], params: Sequence[Any]) -> list[str]:
    """The types psycopg sends ``params`` with (``unknown``: the server infers)."""
    tx = Transformer(conn)
    tx.dump_sequence(params, [PyFormat.AUTO] * len(params))
    names = []
    for oid in tx.types or ():
        info = conn.adapters.types.get(oid) if oid else None
        names.append(info.name if info is not None else "unknown")
    return names


def explain(
    conn: psycopg.Connection[Any], st: Statement, *, generic: bool, analyze: bool
) -> dict[str, Any]:
    """The JSON plan of ``st`` (custom, or generic when ``generic``), run in a
    transaction that is rolled back when ``analyze``."""
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    conn.execute("BEGIN")
    try:
        conn.execute(f"SET LOCAL statement_timeout = {TIMEOUT_MS}")
        for name, value in st.settings:
            conn.execute(f"SET LOCAL {name} = {value}")
        if generic:
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            types = _param_types(conn, st.params)
            declared = f"({', '.join(types)})" if types else ""
            conn.execute(f"PREPARE tally_plan{declared} AS {dollar_sql(st.sql)}")
            # EXECUTE's arguments as literals: a parameter of a utility
            # statement has no type to be inferred from
            args = pgsql.SQL(", ").join(pgsql.Literal(v) for v in st.params)
            query = pgsql.SQL("EXPLAIN ({}) EXECUTE tally_plan").format(pgsql.SQL(options))
            if st.params:
                query = pgsql.Composed([query, pgsql.SQL("("), args, pgsql.SQL(")")])
            row = conn.execute(query).fetchone()
        elif st.params:
            row = conn.execute(f"EXPLAIN ({options}) {translate(st.sql)}", st.params).fetchone()
        else:
            row = conn.execute(f"EXPLAIN ({options}) {st.sql}").fetchone()
    finally:
        conn.execute("ROLLBACK")
        conn.execute("DEALLOCATE ALL")
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def _rows_out(plan: dict[str, Any]) -> int:
    """Rows the statement returns, or (a write) the rows it writes."""
    if plan["Node Type"] == "ModifyTable" and plan.get("Plans"):
        plan = plan["Plans"][0]
    return int(plan.get("Actual Rows", 0)) * int(plan.get("Actual Loops", 1))


def _rows_read(node: dict[str, Any]) -> int:
    seen = (
        int(node.get("Actual Rows", 0))
        + int(node.get("Rows Removed by Filter", 0))
        + int(node.get("Rows Removed by Index Recheck", 0))
    )
    return seen * int(node.get("Actual Loops", 1))


def _index_condition(node: dict[str, Any]) -> str:
    """The index condition of a scan (a bitmap scan's from its index scans)."""
    parts = [node.get("Index Cond", "")]
    for child in nodes(node):
        if child["Node Type"] == "Bitmap Index Scan":
            parts.append(child.get("Index Cond", ""))
    return " ".join(p for p in parts if p)


def is_claim(st: Statement) -> bool:
    text = " ".join(st.sql.split()).lower()
    return "skip locked" in text and "from events" in text and "pending" in text


def report(findings: Sequence[Finding]) -> str:
    """The findings grouped by statement, rule and table, with the modes."""
    groups: dict[tuple[str, str, str], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.statement.sql, f.rule, f.table), []).append(f)
    lines = []
    for group in groups.values():
        first = group[0]
        modes = "; ".join(f.mode for f in group)
        lines.append(f"{first.rule} on {first.table} [{modes}]: {str(first).split(': ', 1)[1]}")
    return "\n".join(lines)


def list_length(st: Statement) -> int:
    """The longest list of values the statement looks up: an ``IN (?,…)``
    list, or a list passed as one parameter (``= ANY(?)``)."""
    longest = max((m.group(0).count("?") for m in _IN_LIST.finditer(st.sql)), default=0)
    arrays = (len(p) for p in st.params if isinstance(p, list | tuple))
    return max(longest, max(arrays, default=0))


def _informed_scan(node: dict[str, Any], rows: int, listed: int, generic: bool) -> bool:
    """A custom plan's sequential scan of a table of at most ``LIST_SHARE``
    rows per value looked up, the values hashed in its filter: the planner saw
    the values and the table's size, and reading the table costs less than
    probing the index for each value; on a table of real size it takes the
    index. (A generic plan sees no values: it gets no such allowance.)"""
    return (
        not generic
        and node["Node Type"] == "Seq Scan"
        and "= ANY (" in node.get("Filter", "")
        and 0 < rows <= LIST_SHARE * listed
    )


def plan_findings(
    st: Statement,
    plan: dict[str, Any],
    sizes: dict[str, int],
    *,
    analyzed: bool,
    generic: bool,
) -> list[tuple[str, str, str]]:
    """(rule, table, detail) of every rule ``plan`` breaks; ``sizes``: the
    rows of each big table."""
    found: list[tuple[str, str, str]] = []
    budget = READ_FLOOR + READ_FACTOR * _rows_out(plan) if analyzed else 0
    listed = list_length(st)
    for node in nodes(plan):
        kind = node["Node Type"]
        table = node.get("Relation Name", "")
        if kind == "Sort" and is_claim(st):
            found.append(("sort in claim", "events", f"Sort on {node.get('Sort Key')}"))
        if kind not in _SCANS or table not in sizes:
            continue
        if _informed_scan(node, sizes[table], listed, generic):
            continue
        where = f"index cond {node.get('Index Cond', '-')}; filter {node.get('Filter', '-')}"
        if kind == "Seq Scan":
            found.append(("seq scan", table, f"Seq Scan; {where}"))
        if analyzed and _rows_read(node) > budget:
            found.append(
                (
                    "rows read",
                    table,
                    f"{kind} {node.get('Index Name', '')} read {_rows_read(node):,} rows "
                    f"(budget {budget:,}); {where}",
                )
            )
        if table in KEY_TABLES:
            # a list of values or entities filtered row by row, not looked up
            filtered = [c for c in KEY_LIST_COLUMNS if f"({c} = ANY (" in node.get("Filter", "")]
            if filtered:
                found.append(
                    (
                        "key look-up",
                        table,
                        f"{kind} {node.get('Index Name', '')} filters {filtered} row by row "
                        f"(index cond {_index_condition(node) or 'none'})",
                    )
                )
    return found


def check_plans(
    conn: psycopg.Connection[Any],
    statements: Sequence[Statement],
    sizes: dict[str, int],
    mode: str,
    *,
    generic: bool,
    exceptions: Sequence[Accepted],
) -> Outcome:
    """Explain every statement in one mode and apply the rules."""
    out = Outcome()
    conn.prepare_threshold = None  # the only prepared statement is ``tally_plan``
    for st in statements:
        try:
            plan = explain(conn, st, generic=generic, analyze=True)
            analyzed = True
        except psycopg.errors.QueryCanceled:
            out.findings.append(Finding(mode, st, "timeout", "-", f"over {TIMEOUT_MS} ms"))
            continue
        except psycopg.Error:  # cannot run again: plan it only
            plan = explain(conn, st, generic=generic, analyze=False)
            analyzed = False
        out.explained += 1
        out.analyzed += analyzed
        found = plan_findings(st, plan, sizes, analyzed=analyzed, generic=generic)
        for rule, table, detail in found:
            finding = Finding(mode, st, rule, table, detail)
            known = next((e for e in exceptions if e.covers(finding)), None)
            if known is None:
                out.findings.append(finding)
            else:
                out.accepted.append((finding, known))
    return out
