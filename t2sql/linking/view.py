"""The placeholder view of one (question, context): numbered tables and columns, link marks, question links."""

from __future__ import annotations

import functools
import random
import zlib
from dataclasses import dataclass, field

from t2sql.data.schema import coarse_type
from t2sql.linking.names import (MARK_EXACT, MARK_PARTIAL, MARK_VALUE, _STOP, _link_name, _literal_text, _stem,
                                 _value_in_question, humanize, name_words, question_words)
from t2sql.linking.pointers import MAX_WORDS, question_word_spans
from t2sql.linking.schema import Column, Schema, Table, parse_context

#: Placeholder tokens the tokenizer keeps whole (see :func:`placeholder_tokens`).
MAX_TABLES = 64
MAX_COLUMNS = 400


@dataclass
class Layout:
    """How one schema is numbered for one question.

    Attributes:
        schema: the parsed context.
        tables: placeholder -> table name, e.g. ``{"t1": "singer"}``.
        columns: placeholder -> (table name, column name).
        table_ids / column_ids: the reverse maps (lower-case names).
        text: the serialised schema the model reads.
        hidden: column placeholders left out of ``text`` (``linked_columns_only``); they are
            numbered after the shown ones so joins can still be inferred through them.
    """

    schema: Schema
    tables: dict[str, str] = field(default_factory=dict)
    columns: dict[str, tuple[str, str]] = field(default_factory=dict)
    table_ids: dict[str, str] = field(default_factory=dict)
    column_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    text: str = ""
    hidden: set[str] = field(default_factory=set)
    expand_names: bool = False


def _show_table_name(name: str) -> str:
    words = humanize(name).split()
    # Generated names (WikiSQL's ``table_1_10015132_11``) carry no meaning: show none.
    if not [w for w in words if w.isalpha() and w != "table"]:
        return ""
    return " ".join(words)


@functools.lru_cache(maxsize=8192)
def layout(question: str, context: str, placeholders: bool = True, link_marks: bool = True,
           shuffle_tables: bool = False, column_types: bool = True, sample_values: int = 0,
           linked_first: bool = True, linked_only: bool = False, linked_columns_only: bool = False,
           expand_names: bool = False, key_columns: bool = False, rank_tables: bool = False) -> Layout:
    """Number the schema of ``context`` for ``question`` and write it compactly.

    Args:
        question: the question (for link marks, value matches and the shuffle seed).
        context: CREATE TABLE statements.
        placeholders: write ``t<k>``/``c<k>`` before each name (else only names).
        link_marks: ``[E]`` when the whole name occurs in the question, ``[P]`` when one of its
            content words does, ``[V]`` when one of the column's sample values does.
        shuffle_tables: order tables by a seed drawn from the question (a training example sees
            another numbering of the same database than its neighbours, so ids cannot be memorised).
        column_types: write each column's type (``number``, ``text``, ...).
        sample_values: show up to this many sample values per column from the context comments;
            values that occur in the question are always shown first.
        linked_first: tables with a link mark come first (so truncation drops unlinked ones).
        linked_only: show only the tables with a link mark (on the table, a column or a value);
            all tables when none has one.
        linked_columns_only: of the shown tables, write only the columns with a link mark (a
            table without one shows its name alone); all columns when none has one. The others
            are numbered after the shown ones and listed in ``Layout.hidden``.
        expand_names: link names through their words written out (:func:`name_words`):
            ``dept_name`` is named by "department", ``stuid`` by "student".
        key_columns: with ``linked_columns_only``, also show the columns of a foreign key between
            two shown tables (unmarked): the keys that subqueries and groupings read.
        rank_tables: with ``linked_first``, the tables the question names in full come first,
            then those it names in part, then those linked through a column or value only (the
            shuffled order kept within each rank).

    Returns:
        A :class:`Layout`; its ``text`` is empty when the context has no readable table.
    """
    schema = parse_context(context)
    out = Layout(schema, expand_names=expand_names)
    if not schema.tables:
        return out
    q_words = question_words(question)
    q_set = set(q_words)
    q_low = question.lower()
    tables = list(schema.tables)
    if shuffle_tables:
        random.Random(zlib.crc32(question.encode("utf-8"))).shuffle(tables)
    rendered: list[tuple[Table, bool, list[tuple[Column, str]]]] = []
    rank: dict[str, int] = {}
    table_marks: dict[str, str | None] = {}
    for table in tables:
        t_mark = _link_name(table.name, q_words, q_set, expand_names) if link_marks else None
        table_marks[table.name] = t_mark
        cols = []
        linked = t_mark is not None
        for col in table.columns:
            parts = [humanize(col.name)]
            if column_types and col.type:
                parts.append(coarse_type(col.type).lower())
            mark = _link_name(col.name, q_words, q_set, expand_names) if link_marks else None
            shown = []
            if col.samples:
                hits = [s for s in col.samples if _value_in_question(_literal_text(s), q_low)]
                if hits and link_marks:
                    mark = MARK_VALUE
                shown = (hits + [s for s in col.samples if s not in hits])[:max(sample_values, len(hits[:2]))]
            if mark:
                parts.append(mark)
                linked = True
            if shown:
                parts.append("( " + " , ".join(shown) + " )")
            cols.append((col, " ".join(parts), mark is not None))
        rendered.append((table, linked, cols))
        rank[table.name] = (0 if t_mark == MARK_EXACT else 1 if t_mark else 2 if linked else 3) if rank_tables \
            else (0 if linked else 1)
    if linked_first and link_marks:
        rendered.sort(key=lambda r: rank[r[0].name])
    if linked_only and link_marks and any(r[1] for r in rendered):
        rendered = [r for r in rendered if r[1]]
    hide = linked_columns_only and link_marks and any(m for _, _, cols in rendered for _, _, m in cols)
    keys: set[tuple[str, str]] = set()
    if hide and key_columns:
        shown_tables = {table.name.lower() for table, _, _ in rendered}
        for (ta, ca), (tb, cb) in schema.foreign_keys:
            if ta.lower() in shown_tables and tb.lower() in shown_tables and ta.lower() != tb.lower():
                keys.update({(ta.lower(), ca.lower()), (tb.lower(), cb.lower())})
    if keys:
        rendered = [(table, linked, [(col, text, marked or (table.name.lower(), col.name.lower()) in keys)
                                     for col, text, marked in cols]) for table, linked, cols in rendered]
    segments = []
    n_col = 0
    for k, (table, linked, cols) in enumerate(rendered, start=1):
        tid = f"t{k}"
        out.tables[tid] = table.name
        out.table_ids[table.name.lower()] = tid
        head = _show_table_name(table.name) or (table.name if not placeholders else "")
        t_mark = table_marks[table.name]
        head_text = " ".join(x for x in ((tid if placeholders else ""), head, t_mark or "") if x)
        col_texts = []
        for col, text, marked in cols:
            if hide and not marked:
                continue
            n_col += 1
            cid = f"c{n_col}"
            out.columns[cid] = (table.name, col.name)
            out.column_ids[(table.name.lower(), col.name.lower())] = cid
            if placeholders:
                col_texts.append(f"{cid} {text}")
            else:
                col_texts.append(f"{col.name} {text[len(humanize(col.name)):].strip()}".strip())
        segments.append(f"{head_text} : " + " , ".join(col_texts) if col_texts else head_text)
    if hide:
        for table, _, cols in rendered:
            for col, _, marked in cols:
                if not marked:
                    n_col += 1
                    cid = f"c{n_col}"
                    out.columns[cid] = (table.name, col.name)
                    out.column_ids[(table.name.lower(), col.name.lower())] = cid
                    out.hidden.add(cid)
    out.text = " | ".join(segments)
    return out


def placeholder_tokens(max_tables: int = MAX_TABLES, max_columns: int = MAX_COLUMNS) -> list[str]:
    """The placeholder and mark strings (each with its leading space) a tokenizer should keep whole."""
    return ([f" t{i}" for i in range(1, max_tables + 1)] + [f" c{i}" for i in range(1, max_columns + 1)]
            + [f" {m}" for m in (MARK_EXACT, MARK_PARTIAL, MARK_VALUE)]
            + [f" w{i}" for i in range(1, MAX_WORDS + 1)])




def _index_words(name: str, expand: bool) -> list[str]:
    words = name_words(name)
    return list(dict.fromkeys(words + name_words(name, expand=True))) if expand else words


def question_links(question: str, lay: Layout, max_labels: int = 3) -> dict[int, list[str]]:
    """The table and column numbers each question word names: word index (from 0) -> labels.

    A word links to every table or column whose humanised name holds it (same stem); stop words
    and generic words (``id``, ``number``) link to nothing; ``name`` links to the first name
    columns. Tables come before columns and lower numbers first (linked tables are numbered
    first), at most ``max_labels`` per word.
    """
    index: dict[str, list[str]] = {}
    for tid, tname in lay.tables.items():
        for w in _index_words(tname, lay.expand_names):
            index.setdefault(_stem(w), []).append(tid)
    for cid, (_, cname) in lay.columns.items():
        if cid in lay.hidden:
            continue
        for w in _index_words(cname, lay.expand_names):
            index.setdefault(_stem(w), []).append(cid)
    out: dict[int, list[str]] = {}
    for i, (a, b) in enumerate(question_word_spans(question)):
        stem = _stem(question[a:b])
        if len(stem) < 2 or not stem.isalpha() or (stem in _STOP and stem != "name"):
            continue
        labels = index.get(stem)
        if labels:
            out[i] = list(dict.fromkeys(labels))[:max_labels]
    return out
