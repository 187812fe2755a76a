"""Copy a SQLite database into PostgreSQL, MySQL/MariaDB or DuckDB (``t2sql load-db``).

    t2sql load-db data/spider_sample/database/concert_singer/concert_singer.sqlite \\
        --to postgresql+psycopg://admin@127.0.0.1:5432/concert_singer --create

An admin command: it writes with the URL's account (which needs CREATE rights), never through the
read-only connections questions use. Tables are created in the SQLite file's order. Each column's
type follows the values it holds (SQLite stores any value in any column): whole numbers only ->
BIGINT, numbers -> DOUBLE (text that is entirely numbers counts as numbers, as SQLite's affinity
compares it), anything else -> TEXT (dates stay text, as in SQLite). Names are
lower-cased on PostgreSQL, where unquoted names fold to lower case. A primary key is kept when its
values are unique and not null; foreign keys are added on PostgreSQL (``NOT VALID``, so rows that
break them load) where the referenced columns are unique.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from t2sql.data.schema import quote_identifier
from t2sql.databases.connections import ConnectionConfigError, mask_url, parse_url, scrub
from t2sql.databases.dialects import sqlglot_dialect


_INT_TEXT = re.compile(r"^-?(0|[1-9][0-9]{0,17})$")
_FLOAT_TEXT = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$")


def _as_number(v: Any) -> Any:
    """Numbers as they are; text that SQLite would read as a number (``'12'``, ``'3.5'``) as that number."""
    if isinstance(v, str):
        t = v.strip()
        if _INT_TEXT.match(t):
            return int(t)
        if _FLOAT_TEXT.match(t):
            return float(t)
    return v


def _column_type(values: Sequence[Any], declared: str):
    """(kind, SQLAlchemy type) of a column from the values it holds.

    Text that is entirely numbers (Spider stores keys such as ``race.Track_ID`` as ``'1'`` text beside
    integer keys, which SQLite's affinity compares as numbers) becomes a number column, so joins and
    comparisons work on engines without SQLite's type affinity.
    """
    import sqlalchemy as sa

    from t2sql.data.schema import coarse_type

    present = [_as_number(v) for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2 ** 63 for v in present):
        return "int", sa.BigInteger()
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "float", sa.Double()
    if not present and coarse_type(declared) == "NUMBER":
        return "float", sa.Double()
    return "text", sa.Text()


def _convert(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "text":
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return value if isinstance(value, str) else str(value)
    if kind == "float":
        return float(_as_number(value))
    if kind == "int":
        return int(_as_number(value))
    return value


def _create_database(url) -> None:
    import sqlalchemy as sa

    dialect = sqlglot_dialect(url.get_backend_name())
    name = url.database
    if dialect == "postgres":
        admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            if not c.exec_driver_sql("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).first():
                c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
    elif dialect == "mysql":
        server = sa.engine.URL.create(url.drivername, url.username, url.password, url.host, url.port, query=url.query)
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        admin.dispose()


def load_sqlite(sqlite_path: str | os.PathLike[str], target: str, *, create: bool = False, replace: bool = False,
                password: str | None = None) -> dict[str, int]:
    """Copy every table of a SQLite file into the database at ``target``.

    Args:
        sqlite_path: the SQLite file (read-only).
        target: a SQLAlchemy URL (PostgreSQL, MySQL/MariaDB, DuckDB file).
        create: create the database (servers) if it does not exist.
        replace: drop tables of the same names first.
        password: the account's password (instead of one in the URL).

    Returns:
        Rows copied per table.

    Raises:
        ConnectionConfigError: an unusable URL (password masked).
        RuntimeError: the copy failed (password masked).
    """
    import sqlalchemy as sa

    src = Path(sqlite_path)
    if not src.is_file():
        raise FileNotFoundError(f"SQLite file not found: {src}")
    url = parse_url(target, password=password)
    dialect = sqlglot_dialect(url.get_backend_name())
    if dialect == "sqlite":
        raise ConnectionConfigError(f"{mask_url(url)}: load into PostgreSQL, MySQL/MariaDB or DuckDB")
    secret = url.password
    lower = dialect == "postgres"

    def name_of(n: str) -> str:
        return n.lower() if lower else n

    conn = sqlite3.connect(f"file:{src.resolve()}?mode=ro", uri=True)
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    counts: dict[str, int] = {}
    try:
        if create:
            _create_database(url)
        engine = sa.create_engine(url)
        meta = sa.MetaData()
        data: dict[str, tuple[sa.Table, list[str], list[tuple]]] = {}
        fks: list[tuple[str, list[str], str, list[str]]] = []
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                                             "'sqlite_%' ORDER BY rowid")]
        for table in tables:
            qt = quote_identifier(table)
            info = conn.execute(f"PRAGMA table_info({qt})").fetchall()
            rows = conn.execute(f"SELECT * FROM {qt}").fetchall()
            kinds, cols = [], []
            for i, r in enumerate(info):
                kind, satype = _column_type([row[i] for row in rows], r[2])
                kinds.append(kind)
                cols.append(sa.Column(name_of(r[1]), satype))
            pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            pk_idx = [[r[1] for r in info].index(c) for c in pk]
            keys = [tuple(row[i] for i in pk_idx) for row in rows]
            text_pk = any(kinds[i] == "text" for i in pk_idx)
            if pk and len(set(keys)) == len(keys) and all(v is not None for k in keys for v in k) \
                    and not (dialect == "mysql" and text_pk):
                for i in pk_idx:
                    cols[i].primary_key = True
            t = sa.Table(name_of(table), meta, *cols)
            converted = [tuple(_convert(v, kinds[i]) for i, v in enumerate(row)) for row in rows]
            data[table] = (t, [c.name for c in cols], converted)
            groups: dict[int, tuple[str, list[str], list[str]]] = {}
            for r in conn.execute(f"PRAGMA foreign_key_list({qt})").fetchall():
                g = groups.setdefault(r[0], (r[2], [], []))
                g[1].append(r[3])
                g[2].append(r[4])
            for ref_table, from_cols, to_cols in groups.values():
                fks.append((table, from_cols, ref_table, to_cols))
        with engine.begin() as c:
            if replace:
                for table in reversed(tables):
                    data[table][0].drop(c, checkfirst=True)
            meta.create_all(c)
            for table in tables:
                t, names, rows = data[table]
                for start in range(0, len(rows), 1000):
                    chunk = [dict(zip(names, row)) for row in rows[start:start + 1000]]
                    if chunk:
                        c.execute(t.insert(), chunk)
                counts[name_of(table)] = len(rows)
        if dialect == "postgres":
            by_lower = {t.lower(): t for t in tables}
            for table, from_cols, ref_table, to_cols in fks:
                ref = by_lower.get(ref_table.lower())
                if ref is None or any(c is None for c in to_cols):
                    continue
                ddl = (f'ALTER TABLE "{name_of(table)}" ADD FOREIGN KEY ('
                       + ", ".join(f'"{name_of(c)}"' for c in from_cols) + f') REFERENCES "{name_of(ref)}" ('
                       + ", ".join(f'"{name_of(c)}"' for c in to_cols) + ") NOT VALID")
                try:
                    with engine.begin() as c:
                        c.exec_driver_sql(ddl)
                except sa.exc.SQLAlchemyError:
                    continue  # the referenced columns are not unique there: the key is left out
        engine.dispose()
    except sa.exc.SQLAlchemyError as exc:
        msg = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise RuntimeError(f"loading {src} into {mask_url(url)} failed: {scrub(msg, [secret])}") from None
    finally:
        conn.close()
    return counts
