"""Schema linking and placeholders: the model reads and writes ``t1``/``c7`` instead of real names.

A small model trained for minutes cannot learn to spell the names of tables it has never seen, but
it can learn to point at them. Here the schema is written compactly with every table and column
numbered, its natural-language name beside its number, and marks where the question mentions a
name or a stored value::

    question: How many singers are from France? | t1 singer : c1 singer id number , c2 name text ,
    c3 country text [P] ( 'France' ) | t2 concert : c4 concert id number , c5 singer id number

The target names columns by their global number, with no aliases, and joins by the tables alone
when the foreign keys say how to join (``ON`` is inferred back)::

    SELECT COUNT(*) FROM t1 WHERE c3 = ' France '

After generation, :func:`restore_sql` maps the numbers back to real names (qualified when several
tables are used), infers the ``ON`` conditions, snaps string values onto the question or the
schema's sample values, and as configured compares each value on the column that stores it and
sorts in the direction the question asks for. Everything is recomputed from ``(question, context)``,
so a model needs nothing but its inputs.

The package is split by concept, each module importing only those above it:

- :mod:`~t2sql.linking.schema`: the CREATE TABLE context parsed into tables, columns, keys, samples;
- :mod:`~t2sql.linking.names`: how a name is read (words, stems, abbreviations) and matched to the question;
- :mod:`~t2sql.linking.pointers`: question-word pointers (``w5``) for values;
- :mod:`~t2sql.linking.view`: the numbered, marked view of one (question, context) (:func:`layout`);
- :mod:`~t2sql.linking.targets`: gold SQL to the placeholder target;
- :mod:`~t2sql.linking.repair`: generated placeholder SQL back to runnable SQL.
"""

from t2sql.linking.names import MARK_EXACT, MARK_PARTIAL, MARK_VALUE, humanize, name_words, question_words
from t2sql.linking.pointers import (MAX_WORDS, mark_question, point_values, question_word_spans, resolve_pointers,
                                    space_openers, space_sql)
from t2sql.linking.repair import (compare_on_value_columns, order_as_asked, repair_sql, restore_sql, rewrite_tables,
                                  snap_literals, snap_value)
from t2sql.linking.schema import Column, Schema, Table, parse_context
from t2sql.linking.targets import TargetError, join_condition, to_placeholder_sql
from t2sql.linking.view import MAX_COLUMNS, MAX_TABLES, Layout, layout, placeholder_tokens, question_links

__all__ = ["MARK_EXACT", "MARK_PARTIAL", "MARK_VALUE", "MAX_COLUMNS", "MAX_TABLES", "MAX_WORDS", "Column", "Layout",
           "Schema", "Table", "TargetError", "compare_on_value_columns", "humanize", "join_condition", "layout",
           "mark_question", "name_words", "order_as_asked", "parse_context", "placeholder_tokens", "point_values",
           "question_links", "question_word_spans", "question_words", "repair_sql", "resolve_pointers", "restore_sql",
           "rewrite_tables", "snap_literals", "snap_value", "space_openers", "space_sql", "to_placeholder_sql"]
