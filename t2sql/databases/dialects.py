"""SQL dialects: the model writes SQLite-style SQL; sqlglot rewrites it for the connection's engine.

    to_dialect("SELECT Name FROM singer WHERE Country LIKE '%fr%'", "postgres", names=["name", "singer", "country"])
    # SELECT name FROM singer WHERE country ILIKE '%fr%'

What is rewritten beyond sqlglot's own transpilation (the differences :mod:`benchmarks.engines`
lists):

- names: an identifier that matches a stored table or column name only up to case is written as
  stored (PostgreSQL folds unquoted names to lower case; Spider's gold SQL mixes cases freely);
- ``LIKE``: case-insensitive for ASCII in SQLite, so it becomes ``ILIKE`` on PostgreSQL and DuckDB
  on MySQL/MariaDB both sides are lower-cased (databases loaded by ``t2sql load-db`` use a binary
  collation so that ``=`` compares case-sensitively, as in SQLite).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import sqlglot
from sqlglot import exp

_BARE = re.compile(r"[a-z_][a-z0-9_]*")

#: Connection dialects and sqlglot's name for them.
DIALECTS = {"sqlite": "sqlite", "postgresql": "postgres", "postgres": "postgres", "mysql": "mysql",
            "mariadb": "mysql", "duckdb": "duckdb"}
#: Known differences between SQLite and the other engines that the rewrite does not remove.
KNOWN_DIFFERENCES = {
    "postgres": ["integer division and types: sum() of integers is numeric (compared as numbers)",
                 "text = text compares case-sensitively, as SQLite does; LIKE becomes ILIKE",
                 "ORDER BY puts NULLs last ascending (SQLite: first)",
                 "GROUP BY must name every selected column that is not aggregated (SQLite picks any row)",
                 "comparisons of text with numbers fail (SQLite converts by affinity)"],
    "mysql": ["text = text compares by the column's collation (load-db: binary, as SQLite); LIKE on lower-cased text",
              "/ of integers gives a decimal (SQLite: integer division)",
              "recursive queries stop after max_recursive_iterations (1000) rows",
              "ORDER BY puts NULLs first ascending, as SQLite does"],
    "duckdb": ["ORDER BY puts NULLs last ascending (SQLite: first)", "LIKE becomes ILIKE",
               "/ of integers gives a double (SQLite: integer division)"],
    "sqlite": [],
}


def sqlglot_dialect(name: str) -> str:
    """sqlglot's dialect name for a connection dialect or URL backend (``postgresql`` -> ``postgres``).

    Raises:
        ValueError: an engine t2sql does not support.
    """
    key = (name or "").lower().split("+")[0]
    if key not in DIALECTS:
        raise ValueError(f"unsupported database engine {name!r}: use one of sqlite, postgresql, mysql, "
                         f"mariadb, duckdb")
    return DIALECTS[key]


def _rename(tree: exp.Expression, names: Iterable[str]) -> exp.Expression:
    by_lower: dict[str, str] = {}
    for n in names:
        by_lower.setdefault(n.lower(), n)
    for ident in tree.find_all(exp.Identifier):
        stored = by_lower.get(str(ident.this).lower())
        if stored is None:
            continue
        if stored != ident.this:
            ident.set("this", stored)
        if stored != stored.lower() or not _BARE.fullmatch(stored):
            ident.set("quoted", True)
    return tree


def rewrite(tree: exp.Expression, dialect: str, names: Iterable[str] | None = None) -> exp.Expression:
    """Rewrite a parsed SQLite query for ``dialect`` in place: stored name case, LIKE as ILIKE."""
    target = sqlglot_dialect(dialect)
    if target == "sqlite":
        return tree
    if names:
        _rename(tree, names)
    if target in {"postgres", "duckdb"}:
        for like in list(tree.find_all(exp.Like)):
            like.replace(exp.ILike(this=like.this, expression=like.expression))
    elif target == "mysql":  # databases loaded by t2sql compare binary (as SQLite's =); LIKE stays case-blind
        for like in list(tree.find_all(exp.Like)):
            like.replace(exp.Like(this=exp.Lower(this=like.this), expression=exp.Lower(this=like.expression)))
    return tree


def to_dialect(sql: str, dialect: str, names: Iterable[str] | None = None) -> str:
    """SQLite-style ``sql`` written for ``dialect``; SQLite (or unparseable text) comes back unchanged.

    Args:
        sql: one statement as the model writes it.
        dialect: a connection dialect (``postgres``, ``mysql``, ``duckdb``, ``sqlite``).
        names: stored table and column names of the database (their case is kept).

    Raises:
        ValueError: an unsupported dialect.
    """
    target = sqlglot_dialect(dialect)
    if target == "sqlite" or not (sql or "").strip():
        return sql
    try:
        trees = [t for t in sqlglot.parse(sql, read="sqlite") if t is not None]
    except (sqlglot.errors.SqlglotError, RecursionError):
        return sql
    if len(trees) != 1:
        return sql
    tree = rewrite(trees[0], target, names)
    try:
        return tree.sql(dialect=target)
    except sqlglot.errors.SqlglotError:
        return sql
