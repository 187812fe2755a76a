"""SQL dialects: the model writes SQLite-style SQL; sqlglot rewrites it for the connection's engine.

    to_dialect("SELECT Name FROM singer WHERE Country LIKE '%fr%'", "postgres", names=["name", "singer", "country"])
    # SELECT name FROM singer WHERE country ILIKE '%fr%'

What is rewritten beyond sqlglot's own transpilation (the differences :mod:`benchmarks.engines`
lists):

- ``"text"`` in double quotes that names no table, column or alias is a string, as SQLite reads it
  (Spider's gold SQL writes strings so);
- on PostgreSQL and DuckDB a column selected beside ``GROUP BY`` without an aggregate (SQLite takes
  one row's value) becomes ``MIN(column)``;
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
                 "bare columns beside GROUP BY become MIN(column) (SQLite takes one row's value)",
                 "comparisons of text with numbers fail (SQLite converts by affinity); load-db stores text that is "
                 "entirely numbers as numbers, so such columns show numbers",
                 "ties under ORDER BY ... LIMIT and GROUP BY without ORDER BY may come back as other rows or in "
                 "another order (neither engine promises one)"],
    "mysql": ["text = text compares by the column's collation (load-db: binary, as SQLite); LIKE on lower-cased text",
              "/ of integers gives a decimal (SQLite: integer division)",
              "recursive queries stop after max_recursive_iterations (1000) rows",
              "ORDER BY puts NULLs first ascending, as SQLite does"],
    "duckdb": ["ORDER BY puts NULLs last ascending (SQLite: first)", "LIKE becomes ILIKE",
               "bare columns beside GROUP BY become MIN(column) (SQLite takes one row's value)",
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


def _strings_for_unknown_names(tree: exp.Expression, names: Iterable[str]) -> None:
    """SQLite reads ``"Bob Fosse"`` as a string when no column has that name; so do we."""
    known = {n.lower() for n in names}
    known |= {a.alias.lower() for a in tree.find_all(exp.Alias) if a.alias}
    known |= {t.alias_or_name.lower() for t in tree.find_all(exp.Table)}
    known |= {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    for col in list(tree.find_all(exp.Column)):
        ident = col.this
        if (isinstance(ident, exp.Identifier) and ident.quoted and not col.table
                and str(ident.this).lower() not in known):
            col.replace(exp.Literal.string(str(ident.this)))


def _same_column(a: exp.Expression, b: exp.Expression) -> bool:
    if isinstance(a, exp.Column) and isinstance(b, exp.Column):
        if a.name.lower() != b.name.lower():
            return False
        return not a.table or not b.table or a.table.lower() == b.table.lower()
    return a.sql().lower() == b.sql().lower()


def _bare_columns_aggregated(tree: exp.Expression) -> None:
    """Columns selected beside GROUP BY without an aggregate (SQLite takes one row's value) become MIN(col).

    PostgreSQL and DuckDB refuse them; where the column depends on the group (Spider's gold queries
    group by a key and select its name) MIN gives SQLite's value.
    """
    for select in list(tree.find_all(exp.Select)):
        group = select.args.get("group")
        if not group:
            continue
        keys = list(group.expressions)
        aliases = {e.alias.lower() for e in select.expressions if isinstance(e, exp.Alias) and e.alias}
        local = set()
        for part in [select.args.get("from_") or select.args.get("from"), *(select.args.get("joins") or [])]:
            if part is not None:
                src = part.this
                local.add(src.alias_or_name.lower())

        def fix(node: exp.Expression) -> None:
            for col in list(node.find_all(exp.Column)):
                if col.find_ancestor(exp.AggFunc, exp.Select) is not None and \
                        isinstance(col.find_ancestor(exp.AggFunc, exp.Select), exp.AggFunc):
                    continue
                if col.find_ancestor(exp.Select) is not select:
                    continue  # inside a subquery: its own GROUP BY decides
                if any(_same_column(col, k) or col.sql().lower() == k.sql().lower() for k in keys):
                    continue
                if not col.table and col.name.lower() in aliases:
                    continue
                if col.table and col.table.lower() not in local:
                    continue  # a column of an outer query
                col.replace(exp.Min(this=col.copy()))

        for e in select.expressions:
            target = e.this if isinstance(e, exp.Alias) else e
            if any(target is k or target.sql().lower() == k.sql().lower() for k in keys):
                continue
            fix(e)
        order = select.args.get("order")
        if order is not None:
            for o in order.expressions:
                if not any(o.this.sql().lower() == k.sql().lower() for k in keys):
                    fix(o)
        having = select.args.get("having")
        if having is not None:
            fix(having)


def rewrite(tree: exp.Expression, dialect: str, names: Iterable[str] | None = None) -> exp.Expression:
    """Rewrite a parsed SQLite query for ``dialect`` in place: string literals in double quotes, stored
    name case, bare columns beside GROUP BY, LIKE as ILIKE."""
    target = sqlglot_dialect(dialect)
    if target == "sqlite":
        return tree
    if names:
        _strings_for_unknown_names(tree, names)
        _rename(tree, names)
    if target in {"postgres", "duckdb"}:
        _bare_columns_aggregated(tree)
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
