"""The oracle schema: only the tables and columns a gold query reads.

    from t2sql.evaluation.oracle import gold_only_context
    context = gold_only_context(record["answer"], record["context"])

A model given the oracle schema no longer has to find the right tables and columns among the
others, so its accuracy there, beside its accuracy on the full schema, splits its errors into those
of linking (what to read) and those of decoding (how to write the query). ``benchmarks/oracle.py``
measures both on the same model and test set.
"""

from __future__ import annotations

from t2sql.data.schema import quote_identifier
from t2sql.linking import Schema, parse_context
from t2sql.linking.reads import gold_items

__all__ = ["gold_items", "gold_only_context", "render_context", "schema_shown"]


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


def schema_shown(records, prompt, ranker=None, k: int = 0) -> dict[str, float]:
    """How much of each gold query's schema the linked format's input shows (``linked_tables_only`` /
    ``linked_columns_only``), over records with question, context, answer and db_path; with a schema
    ranker (:class:`t2sql.linking.ranker.SchemaRanker`), as if its ``k`` best columns that the input
    hides (and their tables) were shown too.

    Returns ``questions`` (those whose gold query names a column of the schema), ``all_gold_shown``
    (share whose every named column and read table is shown), ``gold_column_recall`` (share of named
    columns shown), ``columns_shown`` and ``tables_shown`` (means).

    Raises:
        ValueError: ``prompt`` is not of the linked format.
    """
    from t2sql.prompt import question_context
    from t2sql.prompts.linked import view

    if prompt.format != "linked":
        raise ValueError(f"schema_shown needs the linked prompt format, not {prompt.format!r}")
    n = full = gold_total = gold_hit = cols = tabs = 0
    for rec in records:
        context = question_context(rec["question"], rec["context"], rec.get("db_path"), prompt)
        try:
            tables, columns = gold_items(rec["answer"], context, join_keys=False, first_column=False)
        except ValueError:
            continue
        if not columns:
            continue
        lay = view(rec["question"], context, prompt.options)
        shown_tables = {name.lower() for name in lay.tables.values()}
        shown = {(t.lower(), c.lower()) for cid, (t, c) in lay.columns.items() if cid not in lay.hidden}
        if ranker is not None and k and lay.hidden:
            best = ranker.top(rec["question"], lay.schema, len(shown) + k)
            extra = [key for key in best if key not in shown][:k]
            shown |= set(extra)
            shown_tables |= {t for t, _ in extra}
        gold = {(t.lower(), c.lower()) for t, c in columns}
        n += 1
        full += gold <= shown and all(t.lower() in shown_tables for t in tables)
        gold_total += len(gold)
        gold_hit += len(gold & shown)
        cols += len(shown)
        tabs += len(shown_tables)
    if not n:
        raise ValueError("schema_shown: no record has a gold query naming a column of its schema")
    return {"questions": n, "all_gold_shown": full / n, "gold_column_recall": gold_hit / gold_total,
            "columns_shown": cols / n, "tables_shown": tabs / n}
