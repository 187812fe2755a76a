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
tables are used), infers the ``ON`` conditions and snaps string values onto the question or the
schema's sample values. Everything is recomputed from ``(question, context)``, so a model needs
nothing but its inputs.
"""

from __future__ import annotations

import difflib
import functools
import random
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from t2sql.data.normalize import unquote_identifier
from t2sql.data.schema import coarse_type, too_many_joins

#: Placeholder tokens the tokenizer keeps whole (see :func:`placeholder_tokens`).
MAX_TABLES = 64
MAX_COLUMNS = 400
MARK_EXACT, MARK_PARTIAL, MARK_VALUE = "[E]", "[P]", "[V]"

_LEX = re.compile(
    r"/\*.*?\*/|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|'(?:[^']|'')*'|[A-Za-z_][A-Za-z0-9_$]*"
    r"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\S", re.DOTALL)
_CONSTRAINT_WORDS = {"PRIMARY", "FOREIGN", "CONSTRAINT", "UNIQUE", "CHECK", "KEY"}
_TYPE_STOP = {"PRIMARY", "NOT", "NULL", "REFERENCES", "DEFAULT", "UNIQUE", "CHECK", "COLLATE", "CONSTRAINT",
              "AUTOINCREMENT", "GENERATED"}
_WORD = re.compile(r"[A-Za-z]+|\d+")
_PLACEHOLDER = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*\s*\.\s*)?\b([tc])(\d+)\b")
_LITERAL = re.compile(r"'(?:[^']|'')*'")
_STOP = {"the", "a", "an", "of", "in", "on", "for", "to", "is", "are", "was", "were", "what", "which", "who",
         "how", "many", "and", "or", "with", "by", "at", "from", "that", "all", "each", "their", "its", "do",
         "does", "did", "be", "as", "show", "list", "give", "find", "me", "return", "there", "have", "has", "id",
         "name", "number", "than", "more", "less", "it", "this", "those", "these", "whose", "where", "when"}


# --------------------------------------------------------------------------------------------
# Parsing CREATE TABLE context
# --------------------------------------------------------------------------------------------
@dataclass
class Column:
    name: str
    table: str
    type: str = ""
    samples: list[str] = field(default_factory=list)  # SQL literals as written in the comment


@dataclass
class Table:
    name: str
    columns: list[Column] = field(default_factory=list)


@dataclass
class Schema:
    """Tables (declaration order), their columns, and foreign keys as ((table, col), (table, col))."""

    tables: list[Table] = field(default_factory=list)
    foreign_keys: list[tuple[tuple[str, str], tuple[str, str]]] = field(default_factory=list)

    def table(self, name: str) -> Table | None:
        low = name.lower()
        return next((t for t in self.tables if t.name.lower() == low), None)


def _comment_values(comment: str) -> list[str]:
    body = comment[2:-2]
    return [m.group(0) for m in re.finditer(r"'(?:[^']|'')*'|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", body)]


def _split_top(tokens: list[str]) -> list[list[str]]:
    parts, cur, depth = [], [], 0
    for tok in tokens:
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        if tok == "," and depth == 0:
            parts.append(cur)
            cur = []
        else:
            cur.append(tok)
    if cur:
        parts.append(cur)
    return parts


def _names_in_parens(tokens: list[str], start: int) -> tuple[list[str], int]:
    """Names inside ``( a, b )`` starting at ``tokens[start] == '('``; returns them and the index after."""
    names, i = [], start + 1
    while i < len(tokens) and tokens[i] != ")":
        if tokens[i] != ",":
            names.append(unquote_identifier(tokens[i]))
        i += 1
    return names, i + 1


@functools.lru_cache(maxsize=4096)
def parse_context(context: str) -> Schema:
    """Read tables, columns, types, sample-value comments and foreign keys from CREATE TABLE text.

    Accepts what the data layer writes (``t2sql.data.schema``) and the plain statements of
    sql-create-context. Unreadable statements are skipped; an empty :class:`Schema` means none
    could be read.
    """
    tokens = _LEX.findall(context)
    schema = Schema()
    i, n = 0, len(tokens)
    while i < n:
        if not (tokens[i].upper() == "CREATE" and i + 2 < n and tokens[i + 1].upper() == "TABLE"):
            i += 1
            continue
        j = i + 2
        if tokens[j].upper() == "IF" and j + 3 < n:
            j += 3
        table = Table(unquote_identifier(tokens[j]))
        j += 1
        if j >= n or tokens[j] != "(":
            i = j
            continue
        depth, k = 1, j + 1
        while k < n and depth:
            depth += tokens[k] == "("
            depth -= tokens[k] == ")"
            k += 1
        body = tokens[j + 1:k - 1]
        i = k
        for part in _split_top(body):
            words = [t for t in part if not t.startswith("/*")]
            if not words:
                continue
            head = words[0].upper()
            if head in _CONSTRAINT_WORDS:
                if head == "FOREIGN" and "(" in words and "REFERENCES" in [w.upper() for w in words]:
                    cols, after = _names_in_parens(words, words.index("("))
                    r = [w.upper() for w in words].index("REFERENCES")
                    ref_table = unquote_identifier(words[r + 1]) if r + 1 < len(words) else ""
                    ref_cols = _names_in_parens(words, r + 2)[0] if r + 2 < len(words) and words[r + 2] == "(" else []
                    for a, b in zip(cols, ref_cols or cols):
                        schema.foreign_keys.append(((table.name, a), (ref_table, b)))
                continue
            col = Column(unquote_identifier(words[0]), table.name)
            if len(words) > 1 and _LEX.fullmatch(words[1]) and words[1][:1].isalpha() \
                    and words[1].upper() not in _TYPE_STOP:
                col.type = words[1].upper()
            upper = [w.upper() for w in words]
            if "REFERENCES" in upper:
                r = upper.index("REFERENCES")
                if r + 1 < len(words):
                    ref_cols = _names_in_parens(words, r + 2)[0] if r + 2 < len(words) and words[r + 2] == "(" else []
                    schema.foreign_keys.append(((table.name, col.name), (unquote_identifier(words[r + 1]),
                                                                          ref_cols[0] if ref_cols else col.name)))
            for t in part:
                if t.startswith("/*"):
                    col.samples.extend(_comment_values(t))
            table.columns.append(col)
        if table.columns:
            schema.tables.append(table)
    return schema


# --------------------------------------------------------------------------------------------
# Names, question words and linking
# --------------------------------------------------------------------------------------------
def humanize(name: str) -> str:
    """``singer_ID`` -> ``singer id``; ``SchoolClubTeam`` -> ``school club team``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return " ".join(w.lower() for w in _WORD.findall(spaced))


#: Abbreviations common in schema names, read as the words a question uses (``expand_names``).
_ABBREVIATIONS = {
    "acc": "account", "act": "activity", "addr": "address", "al": "airline", "amen": "amenity", "amt": "amount",
    "ap": "airport", "apt": "apartment", "auth": "author", "avg": "average", "cap": "capacity", "cnt": "count",
    "cred": "credit", "crs": "course", "cust": "customer", "dept": "department", "desc": "description",
    "dob": "date of birth", "dorm": "dormitory", "dst": "destination", "emp": "employee", "fac": "faculty",
    "firstname": "first name", "fname": "first name", "forename": "first name", "govt": "government",
    "info": "information", "inst": "institution", "lang": "language", "lastname": "last name", "lname": "last name",
    "loc": "location", "mgr": "manager", "num": "number", "org": "organization", "pct": "percent",
    "pop": "population", "pos": "position", "prod": "product", "prof": "professor", "qty": "quantity",
    "reg": "registration", "src": "source", "std": "student", "stu": "student", "surname": "last name",
    "tel": "telephone", "tot": "total", "uni": "university", "yr": "year",
}
#: English words that end in ``id`` without being ``<name> id``.
_NOT_ID = {"acid", "afraid", "avid", "candid", "david", "fluid", "humid", "hybrid", "invalid", "liquid", "lucid",
           "madrid", "maid", "morbid", "orchid", "paid", "pyramid", "raid", "rapid", "said", "solid", "splendid",
           "squid", "stupid", "timid", "valid", "vivid", "void"}


def name_words(name: str, expand: bool = False) -> list[str]:
    """The words of a table or column name, as :func:`humanize` splits them.

    With ``expand``, a word glued to ``id`` is split off it (``dormid`` -> ``dorm id``) and common
    abbreviations are written out (``dept`` -> ``department``, ``fname`` -> ``first name``), so the
    name links to the words a question uses.
    """
    words = humanize(name).split()
    if not expand:
        return words
    out: list[str] = []
    for w in words:
        if len(w) > 3 and w.endswith("id") and w not in _NOT_ID:
            out += _ABBREVIATIONS.get(w[:-2], w[:-2]).split() + ["id"]
        else:
            out += _ABBREVIATIONS.get(w, w).split()
    return out


def _stem(word: str) -> str:
    """A light plural stemmer shared by question words and schema names.

    ``names``/``name`` -> ``name``, ``cities``/``city`` -> ``city``, ``movies``/``movie`` -> ``movy``,
    ``addresses``/``address`` -> ``address``, ``boxes`` -> ``box``; ``status``, ``class`` and
    ``analysis`` stay whole. Both sides of a match go through it, so only agreement matters.
    """
    w = word.lower()
    if len(w) <= 3:
        return w
    if w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith("ie"):
        return w[:-2] + "y"
    if w.endswith(("sses", "shes", "ches", "xes", "zes")):
        return w[:-2]
    if w.endswith(("ss", "us", "is")):
        return w
    if w.endswith("s"):
        return w[:-1]
    return w


def question_words(question: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(question)]


def _link_name(name: str, q_words: list[str], q_set: set[str], expand: bool) -> str | None:
    """The link mark of a table or column name: its own words, else (``expand``) its words written out."""
    words = name_words(name)
    mark = _link(words, q_words, q_set)
    if mark is None and expand:
        expanded = name_words(name, expand=True)
        if expanded != words:
            mark = _link(expanded, q_words, q_set)
    return mark


def _link(words: list[str], q_words: list[str], q_set: set[str]) -> str | None:
    stems = [_stem(w) for w in words]
    if not stems:
        return None
    m = len(stems)
    for k in range(len(q_words) - m + 1):
        if q_words[k:k + m] == stems:
            return MARK_EXACT
    if any(s in q_set and s not in _STOP for s in stems):
        return MARK_PARTIAL
    return None


def _literal_text(literal: str) -> str:
    if literal[:1] == "'" and literal[-1:] == "'" and len(literal) >= 2:
        return literal[1:-1].replace("''", "'")
    return literal


def _value_in_question(value: str, question_low: str) -> bool:
    v = value.lower().strip()
    if len(v) < 2 and not v.isdigit():
        return False
    if v.replace(".", "", 1).isdigit():
        return re.search(rf"(?<![\d.]){re.escape(v)}(?![\d])", question_low) is not None
    return re.search(rf"(?<!\w){re.escape(v)}(?!\w)", question_low) is not None


# --------------------------------------------------------------------------------------------
# The placeholder view of one (question, context)
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Gold SQL -> placeholder SQL
# --------------------------------------------------------------------------------------------
class TargetError(ValueError):
    """A gold query cannot be written with placeholders (it is then used as it is)."""


def _scope_tables(select: exp.Expression) -> list[exp.Table]:
    """Tables of a SELECT's own FROM and JOINs (not those of nested queries)."""
    out = []
    from_ = select.args.get("from") or select.args.get("from_")
    sources = []
    if from_ is not None:
        sources.append(from_.this)
    for j in select.args.get("joins") or []:
        sources.append(j.this)
    for s in sources:
        if isinstance(s, exp.Table):
            out.append(s)
    return out


def _enclosing_selects(node: exp.Expression) -> Iterable[exp.Select]:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.Select):
            yield parent
        parent = parent.parent


def join_condition(lay: Layout, left: list[str], right: str) -> tuple[str, str] | None:
    """The (left column id, right column id) that joins table id ``right`` to one of ``left``.

    Foreign keys first (the most recently joined table first), then a column name both tables
    share that ends in ``id``; None when neither exists.
    """
    right_name = lay.tables[right].lower()
    fks = [((a[0].lower(), a[1].lower()), (b[0].lower(), b[1].lower())) for a, b in lay.schema.foreign_keys]
    for tid in reversed(left):
        lname = lay.tables[tid].lower()
        for a, b in fks:
            for x, y in ((a, b), (b, a)):
                if x[0] == lname and y[0] == right_name:
                    cx, cy = lay.column_ids.get(x), lay.column_ids.get(y)
                    if cx and cy:
                        return cx, cy
    for tid in reversed(left):
        lname = lay.tables[tid].lower()
        lcols = {c.lower() for t, c in lay.columns.values() if t.lower() == lname}
        rcols = [c for t, c in lay.columns.values() if t.lower() == right_name]
        for c in rcols:
            if c.lower() in lcols and c.lower().endswith("id"):
                return lay.column_ids[(lname, c.lower())], lay.column_ids[(right_name, c.lower())]
    return None


def to_placeholder_sql(sql: str, lay: Layout, infer_joins: bool = True, question: str | None = None) -> str:
    """Rewrite a gold query with the placeholders of ``lay``.

    Tables become ``t<k>`` without aliases, columns ``c<k>`` without qualifiers; a SELECT that reads
    one table twice keeps aliases, renamed ``T1``, ``T2``, ... With ``infer_joins``, an ``ON``
    condition is dropped when :func:`join_condition` gives it back. With ``question``, values that
    are runs of its words become word pointers (:func:`point_values`).

    Raises:
        TargetError: the query does not parse, or names a table or column the schema lacks.
    """
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.SqlglotError as exc:
        raise TargetError(f"does not parse: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if tree is None:
        raise TargetError("empty query")
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    if ctes:
        raise TargetError("common table expressions are not rewritten")
    # Per SELECT: alias -> table name, and whether its aliases must stay (a table read twice).
    scopes: dict[int, dict[str, str]] = {}
    keep_alias: dict[int, dict[str, str]] = {}
    alias_no = 0
    for select in tree.find_all(exp.Select):
        tables = _scope_tables(select)
        amap: dict[str, str] = {}
        names = [t.name.lower() for t in tables]
        for t in tables:
            if lay.schema.table(t.name) is None:
                raise TargetError(f"unknown table {t.name}")
            if t.name.lower() not in lay.table_ids:
                raise TargetError(f"table {t.name} is not shown")
            amap[(t.alias or t.name).lower()] = t.name.lower()
            amap.setdefault(t.name.lower(), t.name.lower())
        scopes[id(select)] = amap
        if len(set(names)) < len(names):
            renamed = {}
            for t in tables:
                alias_no += 1
                renamed[(t.alias or t.name).lower()] = f"T{alias_no}"
            keep_alias[id(select)] = renamed
    # Columns.
    for col in list(tree.find_all(exp.Column)):
        if isinstance(col.this, exp.Star):
            continue
        name = col.name.lower()
        qual = col.table.lower() if col.table else ""
        owner_select = None
        table_name = None
        for select in _enclosing_selects(col):
            amap = scopes.get(id(select), {})
            if qual:
                if qual in amap:
                    table_name, owner_select = amap[qual], select
                    break
                continue
            for alias, tname in amap.items():
                t = lay.schema.table(tname)
                if t is not None and any(c.name.lower() == name for c in t.columns):
                    table_name, owner_select = tname, select
                    break
            if table_name:
                break
        if table_name is None:
            if qual:
                raise TargetError(f"unknown column {qual}.{name}")
            continue  # an output alias (ORDER BY total) or a bare word: left as written
        cid = lay.column_ids.get((table_name, name))
        if cid is None:
            raise TargetError(f"unknown column {table_name}.{name}")
        col.set("this", exp.to_identifier(cid))
        renamed = keep_alias.get(id(owner_select))
        if renamed and qual:
            col.set("table", exp.to_identifier(renamed.get(qual, qual)))
        elif renamed:
            raise TargetError(f"unqualified column {name} in a self-join")
        else:
            col.set("table", None)
    # Joins: drop ON when it can be inferred.
    if infer_joins:
        for select in tree.find_all(exp.Select):
            if id(select) in keep_alias:
                continue
            tables = _scope_tables(select)
            seen = [lay.table_ids[tables[0].name.lower()]] if tables else []
            for j in select.args.get("joins") or []:
                if not isinstance(j.this, exp.Table):
                    break
                right = lay.table_ids[j.this.name.lower()]
                on = j.args.get("on")
                got = join_condition(lay, seen, right)
                if on is not None and got is not None and isinstance(on, exp.EQ) \
                        and isinstance(on.left, exp.Column) and isinstance(on.right, exp.Column) \
                        and {on.left.name, on.right.name} == set(got) and not j.args.get("using"):
                    j.set("on", exp.Boolean(this=True))  # written as a bare JOIN below
                seen.append(right)
    # Tables.
    for t in list(tree.find_all(exp.Table)):
        select = next(_enclosing_selects(t), None)
        tid = lay.table_ids[t.name.lower()]
        renamed = keep_alias.get(id(select)) if select is not None else None
        alias = renamed.get((t.alias or t.name).lower()) if renamed else None
        t.set("this", exp.to_identifier(tid))
        t.set("db", None)
        t.set("alias", exp.TableAlias(this=exp.to_identifier(alias)) if alias else None)
    text = tree.sql(dialect="sqlite")
    text = re.sub(r" ON TRUE\b", "", text)
    if lay.hidden:
        unseen = sorted({m.group(0) for m in re.finditer(r"\bc\d+\b", _code_only(text))} & lay.hidden)
        if unseen:
            raise TargetError(f"column {lay.columns[unseen[0]][0]}.{lay.columns[unseen[0]][1]} is not shown")
    if question is not None:
        text = point_values(text, question)
    return space_sql(text)


_QWORD = re.compile(r"\d+(?:[.,:]\d+)*|[^\W\d_]+|\d+|[^\w\s]|_")
MAX_WORDS = 100
_POINTER = re.compile(r"^(%?)\s*w(\d+)(?:\s+w(\d+))?\s*(%?)$")
_CODE_POINTER = re.compile(r"(?<![\w.])w(\d+)\b")
_CODE_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")


def question_word_spans(question: str) -> list[tuple[int, int]]:
    """Character spans of the question's words: numbers (``4.911``, ``1,000``), letter runs and single
    punctuation marks, at most :data:`MAX_WORDS`."""
    return [m.span() for m in _QWORD.finditer(question)][:MAX_WORDS]


def mark_question(question: str, links: dict[int, list[str]] | None = None) -> str:
    """The question with a pointer before every word: ``w1 How w2 many w3 heads ...``.

    ``links`` (word index from 0 -> table/column numbers, see :func:`question_links`) are written
    after their word: ``w3 date c8``.
    """
    spans = question_word_spans(question)
    links = links or {}
    return " ".join(" ".join([f"w{i} {question[a:b]}", *links.get(i - 1, [])])
                    for i, (a, b) in enumerate(spans, start=1))


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


def _span_of(value: str, question: str, spans: list[tuple[int, int]]) -> tuple[int, int] | None:
    """(first, last) word numbers whose text from the first's start to the last's end is ``value``."""
    if not value:
        return None
    starts = {a: i for i, (a, _) in enumerate(spans, start=1)}
    ends = {b: i for i, (_, b) in enumerate(spans, start=1)}
    pos = question.find(value)
    while pos >= 0:
        end = pos + len(value)
        if pos in starts and end in ends and ends[end] >= starts[pos]:
            return starts[pos], ends[end]
        pos = question.find(value, pos + 1)
    return None


def point_values(sql: str, question: str) -> str:
    """Replace values that are runs of question words by word pointers.

    ``name = 'Butler CC (KS)'`` -> ``name = 'w9 w13'`` (first and last word), ``'%Swift%'`` ->
    ``'% w4 %'``, a number that is a question word ``> 56`` -> ``> w7``. Other values stay as written.
    """
    spans = question_word_spans(question)
    out = []
    for code, literal in _split_literals(sql):

        def number(m: re.Match[str]) -> str:
            got = _span_of(m.group(0), question, spans)
            return f"w{got[0]}" if got and got[0] == got[1] else m.group(0)

        out.append(_CODE_NUMBER.sub(number, code))
        if literal:
            inner = literal[1:-1].replace("''", "'")
            core = inner.strip("%")
            pre, post = inner[: len(inner) - len(inner.lstrip("%"))], inner[len(inner.rstrip("%")):]
            got = _span_of(core, question, spans)
            if got is None or not core:
                out.append(literal)
            else:
                words = f"w{got[0]}" if got[0] == got[1] else f"w{got[0]} w{got[1]}"
                out.append("'" + f"{pre} {words} {post}".strip() + "'")
    return "".join(out)


def resolve_pointers(sql: str, question: str) -> str:
    """Undo :func:`point_values`: word pointers become the question text they span.

    Pointers past the last word are left as written (the query then fails to run).
    """
    spans = question_word_spans(question)

    def text(i: int, j: int | None) -> str | None:
        j = i if j is None else j
        if not (1 <= i <= len(spans) and 1 <= j <= len(spans)) or j < i:
            return None
        return question[spans[i - 1][0]:spans[j - 1][1]]

    out = []
    for code, literal in _split_literals(sql):
        def number(m: re.Match[str]) -> str:
            got = text(int(m.group(1)), None)
            return got if got is not None else m.group(0)

        out.append(_CODE_POINTER.sub(number, code))
        if literal:
            m = _POINTER.match(literal[1:-1])
            got = text(int(m.group(2)), int(m.group(3)) if m.group(3) else None) if m else None
            out.append(literal if got is None else "'" + m.group(1) + got.replace("'", "''") + m.group(4) + "'")
    return "".join(out)


_OPENERS = re.compile(r"([\"'(\[“‘])(?=\w)")


def space_openers(text: str) -> str:
    """A space after opening quotes and brackets glued to a word: ``"Replaced by`` -> ``" Replaced by``.

    Applied to the question and to the values of the target alike, so a value's first word is the
    same token in both (byte-level tokenizers treat ``Replaced`` after a quote and `` Replaced``
    after a space as different tokens); :func:`snap_value` undoes it.
    """
    return _OPENERS.sub(r"\1 ", text)


def space_sql(text: str) -> str:
    """Spaces before every placeholder and inside string quotes, so tokens match the question's.

    ``COUNT(c3)`` -> ``COUNT( c3)``, ``T1.c3`` -> ``T1. c3``, ``'France'`` -> ``' France '``.
    """
    out = []
    for code, literal in _split_literals(text):
        code = re.sub(r"(?<=[^\s])(?=\b[tc]\d+\b)", " ", code)
        out.append(code)
        if literal:
            inner = space_openers(literal[1:-1].replace("''", "'")).replace("'", "''")
            out.append(f"' {inner} '" if inner else "''")
    return "".join(out)


def _split_literals(text: str) -> list[tuple[str, str]]:
    """``[(code, following literal or "")]`` covering ``text``."""
    parts, pos = [], 0
    for m in _LITERAL.finditer(text):
        parts.append((text[pos:m.start()], m.group(0)))
        pos = m.end()
    parts.append((text[pos:], ""))
    return parts


# --------------------------------------------------------------------------------------------
# Placeholder SQL -> SQL
# --------------------------------------------------------------------------------------------
def _quote(name: str) -> str:
    from t2sql.data.schema import quote_identifier

    return quote_identifier(name)


def _add_join_conditions(tree: exp.Expression, lay: Layout) -> bool:
    """Give every ``JOIN`` without ``ON``/``USING`` the condition :func:`join_condition` infers; True if any."""
    changed = False
    for select in tree.find_all(exp.Select):
        tables = _scope_tables(select)
        if not tables or any(t.alias for t in tables):
            continue
        seen = [tables[0].name] if tables[0].name in lay.tables else []
        for j in select.args.get("joins") or []:
            right = j.this.name if isinstance(j.this, exp.Table) else None
            if right is None or right not in lay.tables:
                break
            on = j.args.get("on")
            bare = on is None or (isinstance(on, exp.Boolean) and on.this is True)
            if bare and not j.args.get("kind") and not j.args.get("using") and seen:
                got = join_condition(lay, seen, right)
                if got is not None:
                    j.set("on", exp.EQ(this=exp.column(got[0]), expression=exp.column(got[1])))
                    changed = True
            seen.append(right)
    return changed


_REPEATED_JOIN = re.compile(r"(?:\s+(?:LEFT|RIGHT|FULL|INNER|OUTER|CROSS|NATURAL))*\s+JOIN\s+(t\d+)\b"
                            r"(?!\s*(?:AS\b|ON\b|USING\b|\.))", re.IGNORECASE)


def _drop_repeated_joins(text: str) -> str:
    """In a query without subqueries, drop a ``JOIN tK`` of a table already read (before parsing, whose
    time doubles per JOIN)."""
    if re.search(r"\(\s*SELECT\b", text, re.IGNORECASE):
        return text
    seen: set[str] = set(re.findall(r"\bFROM\s+(t\d+)\b", text, re.IGNORECASE))

    def drop(m: re.Match[str]) -> str:
        if m.group(1) in seen:
            return ""
        seen.add(m.group(1))
        return m.group(0)

    return _REPEATED_JOIN.sub(drop, text)


def _read_column_tables(tree: exp.Expression, lay: Layout) -> bool:
    """Make each SELECT without aliases read the tables its columns belong to; True if any changed.

    A lone table none of whose columns is read, in a SELECT that reads columns of exactly one other
    table, is replaced by that table; the tables of other columns read are joined, bare (their
    conditions are inferred by :func:`_add_join_conditions`).
    """
    changed = False
    for select in list(tree.find_all(exp.Select)):
        tables = _scope_tables(select)
        if not tables or any(t.alias for t in tables) or any(t.name not in lay.tables for t in tables):
            continue
        owners: list[str] = []
        for col in select.find_all(exp.Column):
            if col.table or col.name not in lay.columns or next(_enclosing_selects(col), None) is not select:
                continue
            tid = lay.table_ids.get(lay.columns[col.name][0].lower())
            if tid and tid not in owners:
                owners.append(tid)
        missing = [o for o in owners if o not in {t.name for t in tables}]
        if not missing:
            continue
        if len(tables) == 1 and not select.args.get("joins") and len(owners) == 1:
            tables[0].set("this", exp.to_identifier(owners[0]))
        else:
            for tid in missing:  # a bare JOIN, as the parser reads one
                select.append("joins", exp.Join(this=exp.to_table(tid), on=exp.Boolean(this=True)))
        changed = True
    return changed


def rewrite_tables(text: str, lay: Layout, fix_tables: bool = True, infer_joins: bool = True) -> str:
    """Tables and join conditions of placeholder SQL, on one parse of ``text``.

    ``fix_tables``: make each SELECT read the tables its columns belong to. A small model often
    points at the right column but names the wrong table (``SELECT c7 FROM t1`` where c7 is a column
    of t2), or repeats ``JOIN t2`` until its token limit; either query fails to run. In a query
    without subqueries a table joined again is dropped; in each SELECT without aliases a lone table
    none of whose columns is read is swapped for the one whose columns are, and the tables of other
    columns read are joined (:func:`_read_column_tables`). ``infer_joins``: every bare JOIN gets the
    condition :func:`join_condition` infers. Never raises: the text is returned unchanged when it
    does not parse.
    """
    if fix_tables:
        if not re.search(r"\b[tc]\d+\b", text):
            return text
        text = _drop_repeated_joins(text)
    elif not (infer_joins and re.search(r"\bJOIN\b", text, re.IGNORECASE)):
        return text
    if too_many_joins(text):
        return text
    try:
        tree = sqlglot.parse_one(text, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return text
    if tree is None:
        return text
    changed = fix_tables and _read_column_tables(tree, lay)
    changed = (infer_joins and _add_join_conditions(tree, lay)) or changed
    return re.sub(r" ON TRUE\b", "", tree.sql(dialect="sqlite")) if changed else text


def restore_sql(text: str, lay: Layout, question: str = "", infer_joins: bool = True,
                snap_values: bool = True, value_pointers: bool = False, fix_tables: bool = False) -> str:
    """Map generated placeholder SQL back to the real names of ``lay`` (see the module docstring).

    Unknown placeholders (``c99`` in a schema of 20 columns) are left as they are, so the query
    fails to run and execution-guided decoding can pick another candidate.
    """
    pieces = []
    for code, literal in _split_literals(text):
        pieces.append(code)
        if literal:
            inner = literal[1:-1]
            if inner.startswith(" "):
                inner = inner[1:]
            if inner.endswith(" "):
                inner = inner[:-1]
            pieces.append(f"'{inner}'")
    text = "".join(pieces)
    if value_pointers:
        text = resolve_pointers(text, question)
    if fix_tables or infer_joins:
        text = rewrite_tables(text, lay, fix_tables, infer_joins)
    used_tables = {m.group(3) for m in _PLACEHOLDER.finditer(_code_only(text)) if m.group(2) == "t"}
    qualify = len(used_tables) > 1

    def sub(m: re.Match[str]) -> str:
        prefix, kind, num = m.group(1) or "", m.group(2), m.group(3)
        key = f"{kind}{num}"
        if kind == "t":
            return prefix + _quote(lay.tables[key]) if key in lay.tables else m.group(0)
        if key not in lay.columns:
            return m.group(0)
        table, column = lay.columns[key]
        if prefix:
            return re.sub(r"\s+", "", prefix) + _quote(column)
        return f"{_quote(table)}.{_quote(column)}" if qualify else _quote(column)

    out = []
    for code, literal in _split_literals(text):
        out.append(_PLACEHOLDER.sub(sub, code))
        out.append(literal)
    sql = "".join(out)
    if snap_values:
        sql = snap_literals(sql, question, lay)
    return sql


def _code_only(text: str) -> str:
    return "".join(code for code, _ in _split_literals(text))


# --------------------------------------------------------------------------------------------
# Repairing cut-off output
# --------------------------------------------------------------------------------------------
_DANGLING = re.compile(
    r"(?:\s+(?:WHERE|AND|OR|HAVING)\s+[^\s']+\s*(?:=|<>|!=|<=|>=|<|>|NOT\s+LIKE|LIKE|IN|NOT\s+IN|BETWEEN)\s*"
    r"|\s+(?:WHERE|AND|OR|HAVING|ON|JOIN|BY|ORDER|GROUP|LIMIT|SELECT|FROM|NOT|AS)|\s*,)\s*$", re.IGNORECASE)


def repair_sql(text: str) -> str:
    """Close what a cut-off or degenerate generation left open, so the query can run.

    An unterminated string literal is dropped with the comparison it belongs to
    (``... WHERE c3 = '`` -> ``...``), as are a trailing ``WHERE``/``AND``/``,`` and the like;
    missing closing parentheses are added. Complete queries are returned unchanged.
    """
    out = text.rstrip()
    if out.count("'") % 2 == 1:
        out = out[: out.rfind("'")].rstrip()
    for _ in range(4):
        cut = _DANGLING.sub("", out)
        if cut == out:
            break
        out = cut
    depth = 0
    for code, _ in _split_literals(out):
        depth += code.count("(") - code.count(")")
    if depth > 0:
        out += ")" * depth
    return out


# --------------------------------------------------------------------------------------------
# Value snapping
# --------------------------------------------------------------------------------------------
def _question_spans(question: str, max_words: int = 10) -> list[str]:
    """Every run of up to ``max_words`` words of the question, as written there (punctuation kept inside)."""
    toks = list(re.finditer(r"\S+", question))
    spans = set()
    for i in range(len(toks)):
        for j in range(i, min(i + max_words, len(toks))):
            raw = question[toks[i].start():toks[j].end()]
            spans.add(raw)
            spans.add(raw.strip(".,;:!?\"'()"))
            spans.add(raw.rstrip(".,;:!?\"'"))
            spans.add(raw.rstrip(".,;:!?"))
    for m in re.finditer(r"[\"“']([^\"”']+)[\"”']", question):
        spans.add(m.group(1))
    return [s for s in spans if s]


def snap_value(value: str, question: str, samples: Iterable[str] = ()) -> str:
    """The sample value or question span ``value`` most likely copies, or ``value`` itself.

    A sample value equal to ``value`` ignoring case wins (its spelling is the stored one); a value
    found in the question, in any case, is kept as the model wrote it; then a question span equal
    to it ignoring case and spaces; otherwise the most similar question span or sample value when
    its similarity is at least 0.85. ``%`` wildcards at either end are kept.
    """
    if not value.strip():
        return value
    texts = [_literal_text(s) for s in samples]
    spans: list[str] | None = None
    for core in dict.fromkeys((value, value.strip("%"))):
        if not core.strip():
            continue
        pre, post = value[: value.find(core)], value[value.find(core) + len(core):]
        low = core.lower()
        for cand in texts:
            if cand.lower() == low:
                return pre + cand + post
        if low in question.lower():
            return value
        spans = spans if spans is not None else _question_spans(question)
        squeezed = re.sub(r"\s+", "", low)
        for cand in texts + spans:
            if re.sub(r"\s+", "", cand.lower()) == squeezed:
                return pre + cand + post
    core = value.strip("%")
    pre, post = value[: value.find(core)], value[value.find(core) + len(core):]
    low = core.lower()
    best, best_ratio = None, 0.0
    for cand in texts + (spans or []):
        if abs(len(cand) - len(core)) > max(2, len(core) // 4):
            continue
        r = difflib.SequenceMatcher(None, low, cand.lower()).ratio()
        if r > best_ratio:
            best, best_ratio = cand, r
    if best is not None and best_ratio >= 0.85:
        return pre + best + post
    return value


def snap_literals(sql: str, question: str, lay: Layout | None = None) -> str:
    """Snap every string literal of ``sql`` with :func:`snap_value` (sample values of the schema too)."""
    samples: list[str] = []
    if lay is not None:
        for t in lay.schema.tables:
            for c in t.columns:
                samples.extend(s for s in c.samples if s.startswith("'"))
    out = []
    for code, literal in _split_literals(sql):
        out.append(code)
        if literal:
            inner = literal[1:-1].replace("''", "'")
            snapped = snap_value(inner, question, samples)
            out.append("'" + snapped.replace("'", "''") + "'")
    return "".join(out)
