"""What a query reads: the tables and columns of a schema that a (gold) query names.

Used by the oracle diagnostic (:mod:`t2sql.evaluation.oracle`) and to label the schema ranker's
training data (:mod:`t2sql.linking.ranker`).
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from t2sql.linking.schema import parse_context


def gold_items(sql: str, context: str, join_keys: bool = True,
               first_column: bool = True) -> tuple[list[str], set[tuple[str, str]]]:
    """The tables (schema order) and (table, column) pairs of ``context`` that ``sql`` reads.

    A column named with a table or alias belongs to that table; an unqualified one to every table
    the query reads that has it. With ``join_keys`` the keys joining two read tables are read too,
    and with ``first_column`` a table none of whose columns is named (``SELECT count(*) FROM t``)
    keeps its first column, so it can be shown.

    Raises:
        ValueError: ``sql`` does not parse, or reads no table of the schema.
    """
    schema = parse_context(context)
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.ParseError as exc:
        raise ValueError(f"gold query does not parse: {exc}") from None
    by_name = {t.name.lower(): t for t in schema.tables}
    aliases: dict[str, str] = {}
    read: set[str] = set()
    for node in tree.find_all(exp.Table):
        table = by_name.get(node.name.lower())
        if table is None:
            continue
        read.add(table.name)
        aliases[node.alias_or_name.lower()] = table.name
        aliases[node.name.lower()] = table.name
    if not read:
        raise ValueError("gold query reads no table of the schema")
    columns: set[tuple[str, str]] = set()
    for node in tree.find_all(exp.Column):
        name = node.name.lower()
        owners = [aliases[node.table.lower()]] if node.table and node.table.lower() in aliases else sorted(read)
        for owner in owners:
            for col in by_name[owner.lower()].columns:
                if col.name.lower() == name:
                    columns.add((col.table, col.name))
    for (t1, c1), (t2, c2) in schema.foreign_keys if join_keys else ():
        if t1 in read and t2 in read:
            columns.update({(t1, c1), (t2, c2)})
    for name in read if first_column else ():
        if not any(t == name for t, _ in columns):
            first = by_name[name.lower()].columns[0]
            columns.add((first.table, first.name))
    return [t.name for t in schema.tables if t.name in read], columns
