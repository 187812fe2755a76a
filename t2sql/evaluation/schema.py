"""Database schemas as the evaluation sees them: tables, columns, types and foreign keys.

A schema comes from a SQLite file, from CREATE TABLE statements (a record's ``context``) or from an
entry of Spider's ``tables.json``. Names are lower-cased, as in Spider's evaluation, so ``Singer.Name``
and ``singer.name`` are the same column.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlglot
from sqlglot import exp


@dataclass
class DbSchema:
    """Tables and columns of one database, lower-cased, in declaration order.

    Attributes:
        tables: table -> its columns.
        types: (table, column) -> declared type (upper-case, may be empty).
        foreign_keys: ((table, column), (referenced table, referenced column)) pairs.
        primary_keys: (table, column) pairs that belong to a primary key.
        not_null: (table, column) pairs declared NOT NULL.
    """

    tables: dict[str, list[str]] = field(default_factory=dict)
    types: dict[tuple[str, str], str] = field(default_factory=dict)
    foreign_keys: list[tuple[tuple[str, str], tuple[str, str]]] = field(default_factory=list)
    primary_keys: set[tuple[str, str]] = field(default_factory=set)
    not_null: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._kmap: dict[str, str] | None = None

    def __bool__(self) -> bool:
        return bool(self.tables)

    def has_table(self, table: str) -> bool:
        return table.lower() in self.tables

    def has_column(self, table: str, column: str) -> bool:
        return column.lower() in self.tables.get(table.lower(), ())

    def column_ids(self) -> list[str]:
        """Spider's column identifiers in order: ``__all__`` then ``__table.column__`` for every column."""
        ids = ["__all__"]
        for table, columns in self.tables.items():
            ids.extend(f"__{table}.{c}__" for c in columns)
        return ids

    def foreign_key_map(self) -> dict[str, str]:
        """Spider's foreign-key map: every column of a key group maps to the group's first column.

        Groups are built the way Spider's ``build_foreign_key_map`` builds them: each (column,
        referenced column) pair joins the first group holding either of them, else starts a new one.
        """
        if self._kmap is not None:
            return self._kmap
        ids = self.column_ids()
        index = {cid: i for i, cid in enumerate(ids)}
        groups: list[set[int]] = []
        for (t1, c1), (t2, c2) in self.foreign_keys:
            k1, k2 = index.get(f"__{t1}.{c1}__"), index.get(f"__{t2}.{c2}__")
            if k1 is None or k2 is None:
                continue
            group = next((g for g in groups if k1 in g or k2 in g), None)
            if group is None:
                group = set()
                groups.append(group)
            group.update((k1, k2))
        kmap: dict[str, str] = {}
        for group in groups:
            members = sorted(group)
            for i in members:
                kmap[ids[i]] = ids[members[0]]
        self._kmap = kmap
        return kmap

    def create_statements(self) -> str:
        """CREATE TABLE statements for this schema (types kept, constraints dropped)."""
        parts = []
        for table, columns in self.tables.items():
            cols = ", ".join(f'"{c}" {self.types.get((table, c), "")}'.rstrip() for c in columns)
            parts.append(f'CREATE TABLE "{table}" ({cols});')
        return "\n".join(parts)


def schema_from_connection(conn: sqlite3.Connection) -> DbSchema:
    """Read tables, columns, types, keys and NOT NULL flags from an open SQLite connection.

    The connection must allow PRAGMA statements (do not pass one with the reads-only authorizer).
    """
    schema = DbSchema()
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
    pending_fks: list[tuple[str, str, str, str | None]] = []
    for name in names:
        table = name.lower()
        quoted = name.replace('"', '""')
        columns = []
        for _cid, col, ctype, notnull, _default, pk in conn.execute(f'PRAGMA table_info("{quoted}")'):
            c = str(col).lower()
            columns.append(c)
            schema.types[(table, c)] = (ctype or "").upper()
            if pk:
                schema.primary_keys.add((table, c))
            if notnull:
                schema.not_null.add((table, c))
        schema.tables[table] = columns
        for row in conn.execute(f'PRAGMA foreign_key_list("{quoted}")'):
            pending_fks.append((table, str(row[3]).lower(), str(row[2]).lower(), row[4].lower() if row[4] else None))
    for table, col, ref_table, ref_col in pending_fks:
        if ref_col is None:  # REFERENCES t without a column: t's primary key
            pk = [c for c in schema.tables.get(ref_table, []) if (ref_table, c) in schema.primary_keys]
            if len(pk) != 1:
                continue
            ref_col = pk[0]
        schema.foreign_keys.append(((table, col), (ref_table, ref_col)))
    return schema


@lru_cache(maxsize=64)
def _schema_from_sqlite_cached(path: str, mtime: float) -> DbSchema:
    conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
    try:
        return schema_from_connection(conn)
    finally:
        conn.close()


def schema_from_sqlite(db_path: str | os.PathLike[str]) -> DbSchema:
    """The schema of a SQLite file (cached per file and modification time).

    Raises:
        FileNotFoundError: the file does not exist.
        sqlite3.Error: the file is not a SQLite database.
    """
    path = Path(db_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"database not found: {path}")
    return _schema_from_sqlite_cached(str(path), path.stat().st_mtime)


def _schema_from_ddl_ast(context: str) -> DbSchema:
    schema = DbSchema()
    try:
        statements = sqlglot.parse(context, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return schema
    for stmt in statements:
        if not isinstance(stmt, exp.Create) or not isinstance(stmt.this, exp.Schema):
            continue
        table = stmt.this.this.name.lower()
        columns = []
        for col in stmt.this.expressions:
            if isinstance(col, exp.ColumnDef):
                c = col.name.lower()
                columns.append(c)
                kind = col.args.get("kind")
                schema.types[(table, c)] = kind.sql(dialect="sqlite").upper() if kind else ""
        schema.tables[table] = columns
    return schema


@lru_cache(maxsize=256)
def schema_from_context(context: str) -> DbSchema:
    """The schema described by CREATE TABLE statements (a record's ``context``).

    The statements are run in a private in-memory SQLite database and read back, so the schema is
    exactly what SQLite understood. Statements SQLite refuses are read with sqlglot instead; text
    that holds no CREATE TABLE gives an empty schema.
    """
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(context)
        return schema_from_connection(conn)
    except sqlite3.Error:
        return _schema_from_ddl_ast(context)
    finally:
        conn.close()


def schema_from_tables_json(entry: dict[str, Any]) -> DbSchema:
    """A schema from one entry of Spider's ``tables.json`` (original names, lower-cased).

    Raises:
        KeyError: the entry lacks ``table_names_original`` or ``column_names_original``.
    """
    schema = DbSchema()
    tables = [t.lower() for t in entry["table_names_original"]]
    for t in tables:
        schema.tables[t] = []
    columns = entry["column_names_original"]
    types = entry.get("column_types") or []
    for i, (t_idx, name) in enumerate(columns):
        if t_idx < 0:
            continue
        t, c = tables[t_idx], name.lower()
        schema.tables[t].append(c)
        schema.types[(t, c)] = (types[i] if i < len(types) else "").upper()
    for i in entry.get("primary_keys") or []:
        for j in (i if isinstance(i, list) else [i]):
            t_idx, name = columns[j]
            schema.primary_keys.add((tables[t_idx], name.lower()))
    for a, b in entry.get("foreign_keys") or []:
        ta, ca = columns[a]
        tb, cb = columns[b]
        schema.foreign_keys.append(((tables[ta], ca.lower()), (tables[tb], cb.lower())))
    return schema


def context_from_sqlite(db_path: str | os.PathLike[str]) -> str:
    """The CREATE TABLE statements stored in a SQLite file, as one string (a record's ``context``).

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(db_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"database not found: {path}")
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL "
                            "AND name NOT LIKE 'sqlite_%' ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return ";\n".join(r[0].strip().rstrip(";") for r in rows) + (";" if rows else "")
