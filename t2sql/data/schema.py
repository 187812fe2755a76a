"""Schemas as CREATE TABLE text: from Spider's tables.json, from a SQLite file, and the tables a query uses.

Every context the model sees (training records, evaluation, the web GUI's uploaded databases)
comes from here, so the serialisation is the same everywhere::

    CREATE TABLE head (head_ID NUMBER PRIMARY KEY, name TEXT, age NUMBER /* 67, 68 */);
    CREATE TABLE management (department_ID NUMBER, head_ID NUMBER, PRIMARY KEY (department_ID, head_ID),
    FOREIGN KEY (head_ID) REFERENCES head(head_ID))

Statements are joined by ``"; "`` on one line. Column types are Spider's coarse ones (TEXT, NUMBER,
TIME, BOOLEAN); SQLite files are mapped onto the same set by type affinity. Optional sample values
sit in ``/* */`` comments, so the context stays valid SQL that :func:`connect_schema` can run.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlglot
from sqlglot import exp

_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPIDER_TYPES = {"text": "TEXT", "number": "NUMBER", "time": "TIME", "boolean": "BOOLEAN", "others": "TEXT"}
_SAMPLE_CHARS = 40
_SAMPLE_QUERY_S = 2.0


@functools.lru_cache(maxsize=65536)
def _bare_ok(name: str) -> bool:
    """True when ``name`` works unquoted as a column in SQLite and sqlglot parses it as one."""
    if not _BARE.fullmatch(name):
        return False
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(f"CREATE TABLE t ({name} TEXT)")
        cur = conn.execute(f"SELECT {name} FROM t WHERE {name} = 1 ORDER BY {name}")
        if cur.description[0][0] != name:
            return False
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    try:
        tree = sqlglot.parse_one(f"SELECT {name} FROM t", read="sqlite")
    except sqlglot.errors.SqlglotError:
        return False
    col = tree.expressions[0] if isinstance(tree, exp.Select) and tree.expressions else None
    return isinstance(col, exp.Column) and col.name == name


# sqlglot's parse time doubles with every JOIN past about ten (16 chained JOINs: 1.2 s, 24: minutes);
# a model's degenerate output can chain dozens. Text with more is treated as unparseable.
MAX_PARSED_JOINS = 12
_JOIN = re.compile(r"\bJOIN\b", re.IGNORECASE)


def too_many_joins(sql: str) -> bool:
    """True when ``sql`` chains more than :data:`MAX_PARSED_JOINS` JOINs (refused before parsing)."""
    return len(_JOIN.findall(sql)) > MAX_PARSED_JOINS


def quote_identifier(name: str) -> str:
    """``name`` as written in SQL: bare when that is safe in SQLite, else in double quotes."""
    if _bare_ok(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def coarse_type(declared: str | None) -> str:
    """Map a SQLite declared column type onto Spider's coarse types (TEXT, NUMBER, TIME, BOOLEAN).

    Follows SQLite's affinity rules, with dates and booleans kept apart as Spider does.
    """
    t = (declared or "").upper()
    if "BOOL" in t:
        return "BOOLEAN"
    if "DATE" in t or "TIME" in t or "YEAR" in t:
        return "TIME"
    if "INT" in t:
        return "NUMBER"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "TEXT"
    if any(k in t for k in ("REAL", "FLOA", "DOUB", "NUM", "DEC", "BIT")):
        return "NUMBER"
    return "TEXT"


def _format_value(value: Any) -> str | None:
    if value is None or isinstance(value, (bytes, bytearray, memoryview)):
        return None
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    text = " ".join(str(value).split())
    if len(text) > _SAMPLE_CHARS:
        text = text[:_SAMPLE_CHARS].rstrip() + "..."
    text = text.replace("*/", "* /").replace("/*", "/ *")
    return "'" + text.replace("'", "''") + "'"


def _create_table(table: str, columns: Sequence[tuple[str, str | None, Sequence[Any]]], primary_key: Sequence[str],
                  foreign_keys: Iterable[tuple[str, str, str | None]]) -> str:
    """One CREATE TABLE statement from (name, type or None, sample values) columns and key constraints."""
    parts = []
    single_pk = primary_key[0] if len(primary_key) == 1 else None
    for name, ctype, samples in columns:
        piece = quote_identifier(name)
        if ctype:
            piece += f" {ctype}"
        if single_pk is not None and name == single_pk:
            piece += " PRIMARY KEY"
        shown = [v for v in (_format_value(s) for s in samples) if v is not None]
        if shown:
            piece += " /* " + ", ".join(shown) + " */"
        parts.append(piece)
    if len(primary_key) > 1:
        parts.append("PRIMARY KEY (" + ", ".join(quote_identifier(c) for c in primary_key) + ")")
    for col, ref_table, ref_col in foreign_keys:
        ref = quote_identifier(ref_table) + (f"({quote_identifier(ref_col)})" if ref_col else "")
        parts.append(f"FOREIGN KEY ({quote_identifier(col)}) REFERENCES {ref}")
    return f"CREATE TABLE {quote_identifier(table)} (" + ", ".join(parts) + ")"


def _flat_keys(keys: Iterable[Any]) -> list[int]:
    out: list[int] = []
    for k in keys:
        out.extend(k if isinstance(k, list) else [k])
    return out


def spider_create_tables(table_entry: Mapping[str, Any], only_tables: Iterable[str] | None = None,
                         with_types: bool = True,
                         samples: Mapping[tuple[str, str], Sequence[Any]] | None = None) -> str:
    """CREATE TABLE statements for one database entry of Spider's ``tables.json``.

    Args:
        table_entry: one element of tables.json (``table_names_original``, ``column_names_original``,
            ``column_types``, ``primary_keys``, ``foreign_keys``).
        only_tables: keep only these tables (names compared case-insensitively); foreign keys to
            tables left out are dropped. None keeps every table.
        with_types: write the column types.
        samples: optional sample values per ``(table, column)`` (lower-case names), shown in comments.

    Returns:
        The statements joined by ``"; "``.

    Raises:
        ValueError: the entry is malformed (the message names the db_id and the key).
    """
    db = table_entry.get("db_id", "?")
    try:
        tables = list(table_entry["table_names_original"])
        columns = [(int(t), str(c)) for t, c in table_entry["column_names_original"]]
        types = list(table_entry.get("column_types") or ["text"] * len(columns))
        pks = _flat_keys(table_entry.get("primary_keys") or [])
        fks = [(int(a), int(b)) for a, b in (table_entry.get("foreign_keys") or [])]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"tables.json entry {db!r}: malformed ({type(exc).__name__}: {exc})") from None
    if len(types) != len(columns):
        raise ValueError(f"tables.json entry {db!r}: column_types has {len(types)} items for {len(columns)} columns")
    keep = None if only_tables is None else {t.lower() for t in only_tables}
    samples = samples or {}
    statements = []
    for ti, table in enumerate(tables):
        if keep is not None and table.lower() not in keep:
            continue
        cols = []
        for ci, (owner, name) in enumerate(columns):
            if owner != ti:
                continue
            ctype = _SPIDER_TYPES.get(str(types[ci]).lower(), "TEXT") if with_types else None
            cols.append((name, ctype, samples.get((table.lower(), name.lower()), ())))
        pk = [columns[c][1] for c in pks if 0 <= c < len(columns) and columns[c][0] == ti]
        fk = []
        for a, b in fks:
            if not (0 <= a < len(columns) and 0 <= b < len(columns)) or columns[a][0] != ti:
                continue
            ref_table = tables[columns[b][0]]
            if keep is not None and ref_table.lower() not in keep:
                continue
            fk.append((columns[a][1], ref_table, columns[b][1]))
        statements.append(_create_table(table, cols, pk, fk))
    return "; ".join(statements)


def _connect_ro(db_path: str | os.PathLike[str]) -> sqlite3.Connection:
    path = Path(db_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"database not found: {path}")
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    return conn


def _distinct_values(conn: sqlite3.Connection, table: str, column: str, n: int,
                     text_chars: int | None = None) -> list[Any]:
    """Up to ``n`` distinct non-null values of a column (each query under a time limit; [] on error).

    With ``text_chars``, only text values of 2 to that many characters.
    """
    deadline = time.perf_counter() + _SAMPLE_QUERY_S
    conn.set_progress_handler(lambda: 1 if time.perf_counter() > deadline else 0, 1000)
    try:
        q, t = quote_identifier(column), quote_identifier(table)
        where = f"{q} IS NOT NULL" if text_chars is None else \
            f"typeof({q}) = 'text' AND length({q}) BETWEEN 2 AND {int(text_chars)}"
        rows = conn.execute(f"SELECT DISTINCT {q} FROM {t} WHERE {where} LIMIT {int(n)}").fetchall()
        return [r[0] for r in rows]
    except sqlite3.Error:
        return []
    finally:
        conn.set_progress_handler(None, 0)


def read_sample_values(db_path: str | os.PathLike[str], columns: Iterable[tuple[str, str]], n: int
                  ) -> dict[tuple[str, str], list[Any]]:
    """Up to ``n`` distinct non-null values of each ``(table, column)`` in a SQLite file.

    Args:
        db_path: the SQLite file, opened read-only.
        columns: ``(table, column)`` pairs as named in the schema.
        n: values per column.

    Returns:
        ``{(table.lower(), column.lower()): [values]}``; a column whose query fails (missing
        table, or over the per-query time limit) gets no values.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    out: dict[tuple[str, str], list[Any]] = {}
    if n <= 0:
        return out
    conn = _connect_ro(db_path)
    try:
        for table, column in columns:
            if column == "*":
                continue
            out[(table.lower(), column.lower())] = _distinct_values(conn, table, column, n)
    finally:
        conn.close()
    return out


def sqlite_create_tables(db_path: str | os.PathLike[str], sample_values: int = 0, with_types: bool = True) -> str:
    """CREATE TABLE statements for every table of a SQLite file, in the same form as Spider's.

    Args:
        db_path: the SQLite file (opened read-only; never modified).
        sample_values: distinct sample values per column shown in comments (0: none).
        with_types: write the column types (mapped onto TEXT, NUMBER, TIME, BOOLEAN).

    Returns:
        The statements joined by ``"; "``; an empty string for a database without tables.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable SQLite database (the message names it).
    """
    conn = _connect_ro(db_path)
    try:
        try:
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{db_path}: not a readable SQLite database ({exc})") from None
        statements = []
        for table in tables:
            qt = quote_identifier(table)
            info = conn.execute(f"PRAGMA table_info({qt})").fetchall()  # cid, name, type, notnull, dflt, pk
            pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            fks = []
            for r in conn.execute(f"PRAGMA foreign_key_list({qt})").fetchall():  # id, seq, table, from, to, ...
                fks.append((r[3], r[2], r[4]))
            cols = []
            for r in info:
                samples = _distinct_values(conn, table, r[1], sample_values) if sample_values > 0 else []
                cols.append((r[1], coarse_type(r[2]) if with_types else None, samples))
            statements.append(_create_table(table, cols, pk, fks))
        return "; ".join(statements)
    finally:
        conn.close()


def parse_query(sql: str) -> exp.Expression:
    """Parse one SQL query (SQLite dialect) with sqlglot.

    Raises:
        ValueError: the text does not parse, or is not a query (SELECT or a set operation).
    """
    try:
        trees = sqlglot.parse(sql, read="sqlite")
    except sqlglot.errors.SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"SQL does not parse: {first}") from None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise ValueError(f"expected one SQL statement, got {len(trees)}")
    tree = trees[0]
    if not isinstance(tree, exp.Query):
        raise ValueError(f"not a query: parsed as {type(tree).__name__}")
    return tree


def tables_in(tree: exp.Expression) -> set[str]:
    """Lower-case names of the tables a parsed query reads (common table expressions excluded)."""
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    return {t.name.lower() for t in tree.find_all(exp.Table) if t.name and t.name.lower() not in ctes}


def tables_used(sql: str) -> set[str]:
    """Lower-case names of the tables a SQL query reads, found with sqlglot.

    Raises:
        ValueError: the SQL does not parse or is not a query.
    """
    return tables_in(parse_query(sql))
