"""The oracle schema: only the tables and columns a gold query reads.

    from t2sql.evaluation.oracle import gold_only_context
    context = gold_only_context(record["answer"], record["context"])

A model given the oracle schema no longer has to find the right tables and columns among the
others, so its accuracy there, beside its accuracy on the full schema, splits its errors into those
of linking (what to read) and those of decoding (how to write the query). ``benchmarks/oracle.py``
measures both on the same model and test set.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from t2sql.data.schema import quote_identifier
from t2sql.linking import Schema, parse_context


def gold_items(sql: str, context: str) -> tuple[list[str], set[tuple[str, str]]]:
    """The tables (schema order) and (table, column) pairs of ``context`` that ``sql`` reads.

    A column named with a table or alias belongs to that table; an unqualified one to every table
    the query reads that has it. The keys joining two read tables are read too, and a table none of
    whose columns is named (``SELECT count(*) FROM t``) keeps its first column, so it can be shown.

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
    for (t1, c1), (t2, c2) in schema.foreign_keys:
        if t1 in read and t2 in read:
            columns.update({(t1, c1), (t2, c2)})
    for name in read:
        if not any(t == name for t, _ in columns):
            first = by_name[name.lower()].columns[0]
            columns.add((first.table, first.name))
    return [t.name for t in schema.tables if t.name in read], columns


def _column_sql(col, samples: bool) -> str:
    text = quote_identifier(col.name) + (f" {col.type}" if col.type else "")
    if samples and col.samples:
        text += " /* " + ", ".join(col.samples) + " */"
    return text


def render_context(schema: Schema, tables: list[str], columns: set[tuple[str, str]]) -> str:
    """CREATE TABLE statements of ``tables`` with only ``columns`` (their sample comments and the
    foreign keys between them kept)."""
    statements = []
    keep = {(t.lower(), c.lower()) for t, c in columns}
    for name in tables:
        table = schema.table(name)
        parts = [_column_sql(c, True) for c in table.columns if (c.table.lower(), c.name.lower()) in keep]
        for (t1, c1), (t2, c2) in schema.foreign_keys:
            if t1 == table.name and (t1.lower(), c1.lower()) in keep and (t2.lower(), c2.lower()) in keep:
                parts.append(f"FOREIGN KEY ({quote_identifier(c1)}) REFERENCES {quote_identifier(t2)}"
                             f"({quote_identifier(c2)})")
        if parts:
            statements.append(f"CREATE TABLE {quote_identifier(table.name)} ({', '.join(parts)})")
    return "; ".join(statements)


def gold_only_context(sql: str, context: str) -> str:
    """``context`` cut down to the tables and columns ``sql`` reads (see :func:`gold_items`).

    Raises:
        ValueError: ``sql`` does not parse, or reads no table of the schema.
    """
    tables, columns = gold_items(sql, context)
    return render_context(parse_context(context), tables, columns)

