"""Synthetic training questions over the training databases.

Two generators, both reading only the databases of the training split (read-only), so validation
and test databases never contribute a question:

- **templates**: SQL of the shapes most frequent in Spider's training queries (count, list,
  aggregate, filter on a stored value, order, top-1, group-by, most common, a join through a
  foreign key), filled with another database's tables, columns and stored values, with a question
  written from the template with the names' words (``born_state`` -> "born state").
- **value swaps**: a training question whose gold query compares a column with a string the
  question quotes verbatim is copied with another stored value of that column, in both the
  question and the query (the question stays a person's).

Every query is run on its database and kept only when it runs and returns rows.

    data:
      synthetic:
        templates_per_database: 20
        value_swaps: 1
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp

from t2sql.data.schema import _connect_ro, _distinct_values
from t2sql.evaluation.execution import execute
from t2sql.evaluation.schema import DbSchema, schema_from_context
from t2sql.linking.names import name_words

SOURCE = "synthetic"
_NUMERIC = ("INT", "NUM", "REAL", "FLOAT", "DOUBLE", "DEC")
_EXEC_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class _Col:
    table: str
    name: str
    kind: str  # "text", "number" or "key"

    @property
    def words(self) -> str:
        return " ".join(name_words(self.name))


def _kind(schema: DbSchema, table: str, column: str) -> str:
    keys = {c for fk in schema.foreign_keys for c in fk} | schema.primary_keys
    words = name_words(column)
    if (table, column) in keys or (words and words[-1] == "id"):
        return "key"
    declared = schema.types.get((table, column), "")
    return "number" if any(t in declared for t in _NUMERIC) else "text"


def _table_words(table: str) -> str:
    return " ".join(name_words(table))


def _literal(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value) if isinstance(value, float) else str(value)
    return "'" + str(value).replace("'", "''") + "'"


class _Database:
    """One training database: its schema, columns by kind and a few stored values per column."""

    def __init__(self, context: str, db_path: str, rng: random.Random):
        self.context, self.db_path, self.rng = context, db_path, rng
        self.schema = schema_from_context(context)
        self.columns = {t: [_Col(t, c, _kind(self.schema, t, c)) for c in cols] for t, cols in self.schema.tables.items()}
        self._values: dict[tuple[str, str], list[Any]] = {}
        self._conn = _connect_ro(db_path)

    def close(self) -> None:
        self._conn.close()

    def of_kind(self, table: str, kind: str) -> list[_Col]:
        return [c for c in self.columns.get(table, []) if c.kind == kind]

    def values(self, col: _Col, text: bool = True) -> list[Any]:
        key = (col.table, col.name)
        if key not in self._values:
            self._values[key] = _distinct_values(self._conn, col.table, col.name, 50, text_chars=40 if text else None)
        return self._values[key]

    def value(self, col: _Col, text: bool = True) -> Any | None:
        found = self.values(col, text)
        return self.rng.choice(found) if found else None


def _template_candidates(db: _Database) -> Iterable[tuple[str, str]]:
    """(question, SQL) pairs drawn from the templates, over random tables and columns of ``db``."""
    rng = db.rng
    tables = [t for t, cols in db.columns.items() if cols]
    if not tables:
        return
    t = rng.choice(tables)
    tw = _table_words(t)
    text, number = db.of_kind(t, "text"), db.of_kind(t, "number")
    shown = text + number
    yield rng.choice([f"How many {tw} are there?", f"Count the number of {tw}.", f"What is the total number of {tw}?"]), \
        f"SELECT count(*) FROM {t}"
    if shown:
        c = rng.choice(shown)
        yield rng.choice([f"List the {c.words} of all {tw}.", f"What are the {c.words} of the {tw}?",
                          f"Show the {c.words} of each {tw}."]), f"SELECT {c.name} FROM {t}"
        yield f"What are the distinct {c.words} of {tw}?", f"SELECT DISTINCT {c.name} FROM {t}"
    if number:
        n = rng.choice(number)
        fn, word = rng.choice([("avg", "average"), ("max", "maximum"), ("min", "minimum"), ("sum", "total")])
        yield f"What is the {word} {n.words} of all {tw}?", f"SELECT {fn}({n.name}) FROM {t}"
        yield (f"What are the average, maximum and minimum {n.words} of {tw}?",
               f"SELECT avg({n.name}) , max({n.name}) , min({n.name}) FROM {t}")
        x = db.value(n, text=False)
        if shown and isinstance(x, (int, float)) and not isinstance(x, bool):
            c = rng.choice(shown)
            op, word = rng.choice([(">", "greater than"), ("<", "less than"), (">", "more than")])
            yield f"List the {c.words} of {tw} with {n.words} {word} {x}.", \
                f"SELECT {c.name} FROM {t} WHERE {n.name} {op} {_literal(x)}"
            yield f"How many {tw} have {n.words} {word} {x}?", f"SELECT count(*) FROM {t} WHERE {n.name} {op} {_literal(x)}"
        if shown:
            c = rng.choice([s for s in shown if s != n] or shown)
            desc = rng.random() < 0.5
            yield (f"List the {c.words} of {tw} ordered by {n.words} in {'descending' if desc else 'ascending'} order.",
                   f"SELECT {c.name} FROM {t} ORDER BY {n.name} {'DESC' if desc else 'ASC'}")
            yield (f"What is the {c.words} of the {_table_words(t)} with the {'highest' if desc else 'lowest'} {n.words}?",
                   f"SELECT {c.name} FROM {t} ORDER BY {n.name} {'DESC' if desc else 'ASC'} LIMIT 1")
    if text:
        w = rng.choice(text)
        v = db.value(w)
        if v is not None:
            c = rng.choice([s for s in shown if s != w] or shown)
            yield f"What is the {c.words} of the {tw} whose {w.words} is {v}?", \
                f"SELECT {c.name} FROM {t} WHERE {w.name} = {_literal(v)}"
            yield f"How many {tw} have {w.words} {v}?", f"SELECT count(*) FROM {t} WHERE {w.name} = {_literal(v)}"
        g = rng.choice(text)
        yield f"How many {tw} are there for each {g.words}?", f"SELECT {g.name} , count(*) FROM {t} GROUP BY {g.name}"
        yield f"Which {g.words} is the most common among {tw}?", \
            f"SELECT {g.name} FROM {t} GROUP BY {g.name} ORDER BY count(*) DESC LIMIT 1"
    fks = [fk for fk in db.schema.foreign_keys if fk[0][0] != fk[1][0]]
    if fks:
        (t1, k1), (t2, k2) = rng.choice(fks)
        a, b = db.of_kind(t1, "text") + db.of_kind(t1, "number"), db.of_kind(t2, "text")
        if a and b:
            c, d = rng.choice(a), rng.choice(b)
            v = db.value(d)
            join = f"FROM {t1} AS T1 JOIN {t2} AS T2 ON T1.{k1} = T2.{k2}"
            if v is not None:
                yield (f"What are the {c.words} of the {_table_words(t1)} whose {_table_words(t2)} {d.words} is {v}?",
                       f"SELECT T1.{c.name} {join} WHERE T2.{d.name} = {_literal(v)}")
            yield (f"How many {_table_words(t1)} are there for each {_table_words(t2)} {d.words}?",
                   f"SELECT T2.{d.name} , count(*) {join} GROUP BY T2.{d.name}")


def _runs_with_rows(db_path: str, sql: str) -> bool:
    result = execute(db_path, sql, timeout_s=_EXEC_TIMEOUT_S, row_cap=1000)
    return result.ok and bool(result.rows) and any(v not in (None, 0) for row in result.rows for v in row)


def template_questions(context: str, db_path: str, db_id: str, count: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``count`` synthetic records of one database, each query run and returning rows.

    Args:
        context: the database's CREATE TABLE statements (as its training records carry them).
        db_path: its SQLite file, read-only.
        db_id: its name, recorded on each record.
        count: how many to draw.
        seed: seed of the draw.
    """
    rng = random.Random(f"{seed}/{db_id}")
    db = _Database(context, db_path, rng)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        for _ in range(count * 4):
            if len(out) >= count:
                break
            for question, sql in _template_candidates(db):
                if len(out) >= count or sql in seen or rng.random() < 0.5:
                    continue
                seen.add(sql)
                if _runs_with_rows(db_path, sql):
                    out.append({"id": f"{SOURCE}/{db_id}/t{len(out)}", "question": question, "context": context,
                                "answer": sql, "db_id": db_id, "db_path": db_path, "source": SOURCE})
    finally:
        db.close()
    return out


def _compared_strings(tree: exp.Expression) -> list[tuple[exp.Column, exp.Literal]]:
    found = []
    for node in tree.find_all(exp.EQ):
        left, right = node.this, node.expression
        if isinstance(left, exp.Column) and isinstance(right, exp.Literal) and right.is_string:
            found.append((left, right))
    return found


def _table_of(column: exp.Column, tree: exp.Expression, schema: DbSchema) -> str | None:
    aliases = {}
    for table in tree.find_all(exp.Table):
        aliases[(table.alias or table.name).lower()] = table.name.lower()
        aliases[table.name.lower()] = table.name.lower()
    if column.table:
        return aliases.get(column.table.lower())
    owners = {t for t in set(aliases.values()) if schema.has_column(t, column.name)}
    return owners.pop() if len(owners) == 1 else None


def _word_pattern(text: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(text) + r"(?!\w)", re.IGNORECASE)


def _mentions(question: str, text: str) -> int:
    """How often ``text`` stands in ``question`` as whole words (case ignored)."""
    return len(_word_pattern(text).findall(question))


def value_swaps(record: dict[str, Any], copies: int, seed: int) -> list[dict[str, Any]]:
    """Copies of a training record with another stored value where its query compares a column with
    a string its question quotes verbatim; each copy's query runs and returns rows."""
    try:
        tree = sqlglot.parse_one(record["answer"], read="sqlite")
    except (sqlglot.errors.SqlglotError, RecursionError, ValueError):
        return []
    question = record["question"]
    pairs = [(c, lit) for c, lit in _compared_strings(tree) if lit.this and _mentions(question, lit.this) == 1]
    if len(pairs) != 1 or not record.get("db_path"):
        return []
    column, literal = pairs[0]
    if sum(1 for n in tree.find_all(exp.Literal) if n.is_string and n.this == literal.this) != 1:
        return []  # the same string twice: which copy the question means is unknown
    schema = schema_from_context(record["context"])
    table = _table_of(column, tree, schema)
    if table is None:
        return []
    rng = random.Random(f"{seed}/{record['id']}")
    try:
        conn = _connect_ro(record["db_path"])
    except (OSError, FileNotFoundError):
        return []
    try:
        stored = [v for v in _distinct_values(conn, table, column.name, 50, text_chars=40) if v != literal.this]
    finally:
        conn.close()
    rng.shuffle(stored)
    pattern = _word_pattern(literal.this)
    out = []
    for value in stored:
        if len(out) >= copies:
            break
        swapped = tree.copy()
        for node in swapped.find_all(exp.Literal):
            if node.is_string and node.this == literal.this:
                node.set("this", value)
        sql = swapped.sql(dialect="sqlite")
        if _runs_with_rows(record["db_path"], sql):
            asked = pattern.sub(lambda _m, v=value: v, question, count=1)
            out.append({**record, "id": f"{record['id']}~swap{len(out)}", "question": asked, "answer": sql,
                        "source": SOURCE})
    return out


def synthesize(train: list[dict[str, Any]], templates_per_database: int, swaps: int, seed: int
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Synthetic records over the databases of ``train`` (the training split only).

    Args:
        train: the training split's records; only those with a ``db_path`` contribute.
        templates_per_database: template questions drawn per database.
        swaps: value-swapped copies per training question.
        seed: seed of every draw.

    Returns:
        (records, stats): the new records, and counts per generator and per template shape.
    """
    by_db: dict[str, dict[str, Any]] = {}
    for rec in train:
        if rec.get("db_path") and rec.get("db_id"):
            by_db.setdefault(rec["db_id"], rec)
    records: list[dict[str, Any]] = []
    if templates_per_database:
        for db_id, rec in sorted(by_db.items()):
            try:
                records += template_questions(rec["context"], rec["db_path"], db_id, templates_per_database, seed)
            except (OSError, FileNotFoundError):
                continue
    n_templates = len(records)
    if swaps:
        for rec in train:
            records += value_swaps(rec, swaps, seed)
    seen = {(r["question"], r["answer"]) for r in train}
    unique = []
    for rec in records:
        key = (rec["question"], rec["answer"])
        if key not in seen:
            seen.add(key)
            unique.append(rec)
    shapes = Counter(_shape(r["answer"]) for r in unique)
    stats = {"templates": n_templates, "value_swaps": len(records) - n_templates, "kept": len(unique),
             "databases": len(by_db), "shapes": dict(shapes.most_common())}
    return unique, stats


def _shape(sql: str) -> str:
    """The query's clause words, for the statistics."""
    words = re.findall(r"\b(JOIN|WHERE|GROUP BY|ORDER BY|LIMIT|DISTINCT|count|avg|max|min|sum)\b", sql, re.IGNORECASE)
    return " ".join(dict.fromkeys(w.upper() for w in words)) or "SELECT"

