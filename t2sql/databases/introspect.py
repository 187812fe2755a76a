"""A connected database's schema as the model's context, in the shape SQLite files give.

    create_tables(conn, sample_values=2)
    # CREATE TABLE singer (singer_id NUMBER PRIMARY KEY, name TEXT /* 'Joe Sharp', 'Timbaland' */, ...); ...

SQLite files go through :func:`t2sql.data.schema.sqlite_create_tables` and
:mod:`t2sql.data.values` unchanged. For servers and DuckDB the tables (in creation order where the
engine records it), columns, types (mapped onto TEXT, NUMBER, TIME, BOOLEAN by
:func:`t2sql.data.schema.coarse_type`), primary and foreign keys come from SQLAlchemy's inspector
(DuckDB: its ``duckdb_*()`` catalog functions), sample values from ``SELECT DISTINCT`` under the
connection's read-only session and time limit. Results are cached per connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from t2sql.data.schema import _create_table, coarse_type, sqlite_create_tables
from t2sql.data.values import MAX_VALUE_CHARS, MAX_VALUES_PER_COLUMN, add_column_comments, index_values, match_index
from t2sql.data.values import question_values as sqlite_question_values

SAMPLE_QUERY_S = 2.0


@dataclass
class TableInfo:
    """One table: columns as (name, declared type), primary key columns, foreign keys (col, table, col)."""

    name: str
    columns: list[tuple[str, str]] = field(default_factory=list)
    primary_key: list[str] = field(default_factory=list)
    foreign_keys: list[tuple[str, str, str | None]] = field(default_factory=list)


def _q(name: str, dialect: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect=dialect)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _as_list(value: Any) -> list:
    if isinstance(value, str):  # lists come back as JSON text from the connection
        import json

        try:
            value = json.loads(value)
        except ValueError:
            value = [value]
    return list(value or [])


def _rows(conn, sql: str, row_cap: int = 100_000) -> list[tuple]:
    res = conn.run_unchecked(sql, timeout_s=max(conn.timeout_s, 10.0), row_cap=row_cap)
    if not res.ok:
        raise RuntimeError(f"reading the schema of {conn.masked_url} failed: {res.error}")
    return res.rows


def _cached(conn, key: tuple, build):
    version = conn.version()
    full = (key, version)
    hit = conn._cache.get(full)
    if hit is None:
        hit = build()
        for old in [k for k in conn._cache if k[0] == key and k[1] != version]:
            conn._cache.pop(old, None)  # an older version of the same entry
        conn._cache[full] = hit
    return hit


def tables(conn) -> list[TableInfo]:
    """The tables of a server or DuckDB connection (cached per connection).

    Raises:
        RuntimeError: the catalog cannot be read (message with the password masked).
    """
    return _cached(conn, ("tables",), lambda: _read_tables(conn))


def _read_tables(conn) -> list[TableInfo]:
    if conn.dialect == "sqlite":
        raise ValueError("SQLite files are read by t2sql.data.schema")
    if conn.dialect == "duckdb":
        out = []
        for (name,) in _rows(conn, "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
                                   "AND NOT internal ORDER BY table_oid"):
            info = TableInfo(name)
            info.columns = [(c, t) for c, t in _rows(
                conn, f"SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'main' AND "
                      f"table_name = {_lit(name)} ORDER BY column_index")]
            for ctype, cols, ref_table, ref_cols in _rows(
                    conn, f"SELECT constraint_type, constraint_column_names, referenced_table, "
                          f"referenced_column_names FROM duckdb_constraints() WHERE schema_name = 'main' AND "
                          f"table_name = {_lit(name)} AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')"):
                cols, ref_cols = _as_list(cols), _as_list(ref_cols)
                if ctype == "PRIMARY KEY":
                    info.primary_key = cols
                else:
                    refs = list(ref_cols or [])
                    for i, c in enumerate(cols):
                        info.foreign_keys.append((c, ref_table, refs[i] if i < len(refs) else None))
            out.append(info)
        return out
    import sqlalchemy as sa

    engine = conn.engine()
    order: list[str] = []
    if conn.dialect == "postgres":  # creation order, as SQLite's rowid order gives
        order = [r[0] for r in _rows(conn, "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                                           "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND "
                                           "n.nspname = current_schema() ORDER BY c.oid")]
    try:
        with engine.connect() as sa_conn:
            if conn.dialect == "postgres":
                sa_conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            insp = sa.inspect(sa_conn)
            names = insp.get_table_names()
            rank = {n: i for i, n in enumerate(order)}
            names.sort(key=lambda n: (rank.get(n, len(rank)), n))
            out = []
            for name in names:
                info = TableInfo(name)
                info.columns = [(c["name"], str(c["type"])) for c in insp.get_columns(name)]
                info.primary_key = list((insp.get_pk_constraint(name) or {}).get("constrained_columns") or [])
                for fk in insp.get_foreign_keys(name):
                    refs = fk.get("referred_columns") or []
                    for i, c in enumerate(fk.get("constrained_columns") or []):
                        info.foreign_keys.append((c, fk["referred_table"], refs[i] if i < len(refs) else None))
                out.append(info)
            sa_conn.rollback()
    except sa.exc.SQLAlchemyError as exc:
        raise RuntimeError(f"reading the schema of {conn.masked_url} failed: "
                           f"{conn.scrub(str(getattr(exc, 'orig', exc)).splitlines()[0])}") from None
    return out


def stored_names(conn) -> set[str]:
    """Every table and column name of the database, as stored (for :func:`t2sql.databases.dialects.rewrite`)."""
    if conn.dialect == "sqlite":
        return set()
    names: set[str] = set()
    for t in tables(conn):
        names.add(t.name)
        names.update(c for c, _ in t.columns)
    return names


def _distinct(conn, table: str, column: str, n: int) -> list[Any]:
    d = conn.dialect
    c, t = _q(column, d), _q(table, d)
    # first-seen order where the engine has a row position, as SQLite's DISTINCT gives
    position = {"postgres": "ctid", "duckdb": "rowid"}.get(d)
    if position:
        sql = (f"SELECT v FROM (SELECT {c} AS v, min({position}) AS o FROM {t} WHERE {c} IS NOT NULL GROUP BY {c}) s "
               f"ORDER BY o LIMIT {int(n)}")
    else:
        sql = f"SELECT DISTINCT {c} FROM {t} WHERE {c} IS NOT NULL LIMIT {int(n)}"
    res = conn.run_unchecked(sql, timeout_s=SAMPLE_QUERY_S, row_cap=n)
    return [r[0] for r in res.rows] if res.ok else []


def create_tables(conn, sample_values: int = 0, with_types: bool = True) -> str:
    """CREATE TABLE statements of every table, joined by ``"; "``, as for a SQLite file.

    Args:
        conn: a :class:`t2sql.databases.connections.Connection`.
        sample_values: distinct values per column shown in ``/* */`` comments (0: none).
        with_types: write the coarse column types.

    Raises:
        RuntimeError: the catalog cannot be read (password masked).
    """
    if conn.dialect == "sqlite":
        return _cached(conn, ("create", sample_values, with_types),
                       lambda: sqlite_create_tables(conn.path, sample_values=sample_values, with_types=with_types))

    def build() -> str:
        statements = []
        for t in tables(conn):
            cols = []
            for name, ctype in t.columns:
                samples = _distinct(conn, t.name, name, sample_values) if sample_values > 0 else []
                cols.append((name, coarse_type(ctype) if with_types else None, samples))
            statements.append(_create_table(t.name, cols, t.primary_key, t.foreign_keys))
        return "; ".join(statements)

    return _cached(conn, ("create", sample_values, with_types), build)


def value_index(conn) -> dict[str, list[tuple[str, str, str]]]:
    """The stored text values of every text column, indexed by word key (cached per connection)."""
    def build():
        triples = []
        for t in tables(conn):
            for name, ctype in t.columns:
                if coarse_type(ctype) != "TEXT":
                    continue
                for v in _distinct(conn, t.name, name, MAX_VALUES_PER_COLUMN):
                    if isinstance(v, str) and 2 <= len(v) <= MAX_VALUE_CHARS:
                        triples.append((t.name, name, v))
        return index_values(triples)

    return _cached(conn, ("values",), build)


def question_values(conn, question: str, max_per_column: int = 2) -> dict[tuple[str, str], list[str]]:
    """The stored values ``question`` names, per lower-case ``(table, column)`` (as :mod:`t2sql.data.values`)."""
    if conn.dialect == "sqlite":
        return sqlite_question_values(conn.path, question, max_per_column)
    return match_index(value_index(conn), question, max_per_column)


def with_question_values(question: str, context: str, conn) -> str:
    """``context`` with the values of the database that ``question`` names, as ``/* */`` comments."""
    try:
        hits = question_values(conn, question)
    except (OSError, RuntimeError, ValueError):
        return context
    return add_column_comments(context, hits)
