"""Placeholder SQL back to SQL: names restored, joins inferred, tables fixed, cut-off output repaired, values snapped."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

import sqlglot
from sqlglot import exp

from t2sql.data.schema import too_many_joins
from t2sql.linking.names import _literal_text
from t2sql.linking.pointers import _code_only, _split_literals, resolve_pointers
from t2sql.linking.targets import _enclosing_selects, _scope_tables, join_condition
from t2sql.linking.view import Layout

_PLACEHOLDER = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*\s*\.\s*)?\b([tc])(\d+)\b")


def _quote(name: str) -> str:
    from t2sql.data.schema import quote_identifier

    return quote_identifier(name)


def bridge_path(lay: Layout, left: list[str], right: str, max_bridges: int = 2) -> list[str] | None:
    """The fewest tables (at most ``max_bridges``) that chain table id ``right`` to one of ``left``.

    Two tables are linked when :func:`join_condition` finds a condition between them (a foreign key
    or a shared ``*id`` column). Returns the bridge table ids in join order (``[]`` when ``right``
    joins one of ``left`` directly), or None when no chain that short exists. Among chains of one
    length, the one from the most recently joined table, then the lowest table numbers, wins.
    """
    if join_condition(lay, left, right) is not None:
        return []
    others = sorted((t for t in lay.tables if t not in left and t != right), key=lambda t: int(t[1:]))
    links: dict[str, list[str]] = {}

    def linked(a: str) -> list[str]:
        if a not in links:
            links[a] = [b for b in others if b != a and join_condition(lay, [a], b) is not None]
        return links[a]

    frontier: list[list[str]] = [[t] for t in reversed(left)]
    for _ in range(max_bridges):
        nxt = []
        for path in frontier:
            for b in linked(path[-1]):
                if b in path:
                    continue
                if join_condition(lay, [b], right) is not None:
                    return path[1:] + [b]
                nxt.append(path + [b])
        frontier = nxt
    return None


def _bare(join: exp.Join) -> bool:
    """Whether a JOIN has no ``ON`` condition (the parser reads a bare ``JOIN`` as ``ON TRUE``)."""
    on = join.args.get("on")
    return on is None or (isinstance(on, exp.Boolean) and on.this is True)


def _add_join_conditions(tree: exp.Expression, lay: Layout, bridges: bool = False) -> bool:
    """Give every ``JOIN`` without ``ON``/``USING`` the condition :func:`join_condition` infers; True if any.

    ``bridges``: a bare JOIN of a table that no read table links to directly is reached through the
    fewest tables that link them (:func:`bridge_path`; ``FROM drivers JOIN races`` becomes ``FROM
    drivers JOIN results ON ... JOIN races ON ...``): without a condition the query reads every pair
    of rows.
    """
    changed = False
    for select in tree.find_all(exp.Select):
        tables = _scope_tables(select)
        if not tables or any(t.alias for t in tables):
            continue
        seen = [tables[0].name] if tables[0].name in lay.tables else []
        joins = list(select.args.get("joins") or [])
        out: list[exp.Join] = []
        moved: set[str] = set()  # tables joined earlier as bridges: their own later JOIN is dropped
        for k, j in enumerate(joins):
            right = j.this.name if isinstance(j.this, exp.Table) else None
            if right is None or right not in lay.tables:
                out.extend(joins[k:])
                break
            if right in moved:
                continue
            if _bare(j) and not j.args.get("kind") and not j.args.get("using") and seen:
                got = join_condition(lay, seen, right)
                path = None
                # A bare JOIN whose condition a later JOIN writes (`A JOIN B JOIN C ON a = c AND b = c`) is kept.
                if got is None and bridges and all(_bare(x) for x in joins[k + 1:]):
                    path = bridge_path(lay, seen, right)
                for bridge in path or []:
                    cond = join_condition(lay, seen, bridge)  # the path links each bridge to a table before it
                    out.append(exp.Join(this=exp.to_table(bridge),
                                        on=exp.EQ(this=exp.column(cond[0]), expression=exp.column(cond[1]))))
                    seen.append(bridge)
                    moved.add(bridge)
                    changed = True
                    got = join_condition(lay, seen, right)
                if got is not None:
                    j.set("on", exp.EQ(this=exp.column(got[0]), expression=exp.column(got[1])))
                    changed = True
            out.append(j)
            seen.append(right)
        if moved:  # bridges were put in: the SELECT's joins are rebuilt
            select.set("joins", out)
    return changed


_REPEATED_JOIN = re.compile(r"(?:\s+(?:LEFT|RIGHT|FULL|INNER|OUTER|CROSS|NATURAL))*\s+JOIN\s+(t\d+)\b"
                            r"(?!\s*(?:AS\b|ON\b|USING\b|\.))", re.IGNORECASE)


_SET_OPERATION = re.compile(r"(\b(?:UNION(?:\s+ALL)?|INTERSECT|EXCEPT)\b)", re.IGNORECASE)


def _drop_repeated_joins(text: str) -> str:
    """In a query without subqueries, drop a ``JOIN tK`` of a table its SELECT already reads (before
    parsing, whose time doubles per JOIN). Each arm of a set operation is a SELECT of its own."""
    if re.search(r"\(\s*SELECT\b", text, re.IGNORECASE):
        return text
    parts = _SET_OPERATION.split(text)
    parts[::2] = [_drop_repeated_joins_in(arm) for arm in parts[::2]]  # the arms; the odd parts are the operators
    return "".join(parts)


def _drop_repeated_joins_in(select: str) -> str:
    """:func:`_drop_repeated_joins` of one SELECT."""
    seen: set[str] = set(re.findall(r"\bFROM\s+(t\d+)\b", select, re.IGNORECASE))

    def drop(m: re.Match[str]) -> str:
        if m.group(1) in seen:
            return ""
        seen.add(m.group(1))
        return m.group(0)

    return _REPEATED_JOIN.sub(drop, select)


def _drop_self_joins(tree: exp.Expression) -> bool:
    """In each SELECT without aliases, drop a ``JOIN`` of a table it already reads (``FROM t1 JOIN t1
    ON c2 = c2``: every column of it is then ambiguous); True if any was dropped."""
    changed = False
    for select in tree.find_all(exp.Select):
        from_ = select.args.get("from") or select.args.get("from_")
        if from_ is None or not isinstance(from_.this, exp.Table) or any(t.alias for t in _scope_tables(select)):
            continue
        seen = {from_.this.name}
        joins = select.args.get("joins") or []
        kept = []
        for j in joins:
            name = j.this.name if isinstance(j.this, exp.Table) else None
            if name not in seen:
                kept.append(j)
            if name:
                seen.add(name)
        if len(kept) != len(joins):
            select.set("joins", kept or None)
            changed = True
    return changed


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
    columns read are joined (:func:`_read_column_tables`); a SELECT that joins a table it already
    reads, without aliases, reads it once (:func:`_drop_self_joins`). ``infer_joins``: every bare JOIN gets the
    condition :func:`join_condition` infers; with ``fix_tables`` too, a table that no table read
    links to is reached through the tables that link them (:func:`bridge_path`). Never raises: the text is returned unchanged when it
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
    changed = fix_tables and _drop_self_joins(tree)
    changed = (fix_tables and _read_column_tables(tree, lay)) or changed
    changed = (infer_joins and _add_join_conditions(tree, lay, bridges=fix_tables)) or changed
    return re.sub(r" ON TRUE\b", "", tree.sql(dialect="sqlite")) if changed else text


def restore_sql(text: str, lay: Layout, question: str = "", infer_joins: bool = True,
                snap_values: bool = True, value_pointers: bool = False, fix_tables: bool = False,
                value_columns: bool = False, order_words: bool = False) -> str:
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
    if value_columns:
        text = compare_on_value_columns(text, lay, question)
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
    if order_words:
        sql = order_as_asked(sql, question)
    return sql


def _string_samples(lay: Layout) -> Iterable[tuple[str | None, str]]:
    """(column number or None, quoted sample) for every string sample value of ``lay``'s schema."""
    for table in lay.schema.tables:
        for col in table.columns:
            cid = lay.column_ids.get((table.name.lower(), col.name.lower()))
            for sample in col.samples:
                if sample.startswith("'"):
                    yield cid, sample


_COMPARISON = re.compile(r"(?<![\w.])(c\d+)(\s*(?:=|<>|!=|(?:NOT\s+)?LIKE)\s*)'((?:[^']|'')*)'", re.IGNORECASE)


def compare_on_value_columns(text: str, lay: Layout, question: str) -> str:
    """Compare each string value on the column that stores it.

    ``c5 = 'United Kingdom'`` becomes ``c3 = 'United Kingdom'`` when ``'United Kingdom'``, read
    through :func:`snap_value`, is a sample value of exactly one column of ``lay``, ``c3``, and not of
    ``c5``; the samples are the values the context carries (the ones the question names, with
    ``question_values``). The value is written as it was (``snap_values`` snaps it afterwards).
    ``LIKE`` patterns and values no column or several columns store are left as written; so is a
    column number the layout does not know. Placeholder SQL in, placeholder SQL out.
    """
    owners: dict[str, set[str]] = {}
    samples: list[str] = []
    for cid, sample in _string_samples(lay):
        samples.append(sample)
        if cid is not None:
            owners.setdefault(_literal_text(sample).lower(), set()).add(cid)
    if not owners:
        return text

    def sub(m: re.Match[str]) -> str:
        column, op, raw = m.group(1), m.group(2), m.group(3)
        value = raw.replace("''", "'")
        if "%" in value or column not in lay.columns:
            return m.group(0)
        found = owners.get(snap_value(value, question, samples).lower(), set())
        if len(found) == 1 and column not in found:
            return f"{next(iter(found))}{op}'{raw}'"
        return m.group(0)

    return _COMPARISON.sub(sub, text)


_DESC_WORDS = re.compile(r"\b(?:descending|decreasing|reverse|reversed)\b", re.IGNORECASE)
_ASC_ONLY_WORDS = re.compile(r"\b(?:ascending|increasing)\b", re.IGNORECASE)
_ASC_WORDS = re.compile(r"\b(?:ascending|increasing|alphabetic(?:al(?:ly)?)?|lexicographic(?:al(?:ly)?)?)\b",
                        re.IGNORECASE)
_ORDER_BY = re.compile(r"\bORDER\s+BY\s+([^,()']+?|[^,()']*\([^()']*\)[^,()']*?)(?:\s+(ASC|DESC))?"
                       r"(?=\s+LIMIT\b|\s*\)|\s*$)", re.IGNORECASE)


def order_as_asked(sql: str, question: str) -> str:
    """Make the sort direction the one the question's words ask for.

    "in descending order", "decreasing", "reverse alphabetical" ask for ``DESC``; "ascending",
    "increasing", "alphabetical", "lexicographic" (without a descending word) for ``ASC``. Only a
    query with one ``ORDER BY`` of one key is changed, and only when the question asks for one
    direction: ``ORDER BY name DESC`` becomes ``ORDER BY name ASC`` for "in alphabetical order",
    ``ORDER BY age`` becomes ``ORDER BY age DESC`` for "in descending order of age".
    """
    if len(re.findall(r"\bORDER\s+BY\b", sql, re.IGNORECASE)) != 1:
        return sql
    if _DESC_WORDS.search(question) and not _ASC_ONLY_WORDS.search(question):
        want = "DESC"
    elif _ASC_WORDS.search(question) and not _DESC_WORDS.search(question):
        want = "ASC"
    else:
        return sql
    m = _ORDER_BY.search(sql)
    if m is None or "'" in sql[m.start():]:
        return sql
    have = (m.group(2) or "ASC").upper()
    if have == want:
        return sql
    return sql[:m.start()] + f"ORDER BY {m.group(1).strip()} {want}" + sql[m.end():]


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
    found in the question, in any case, is kept as the model wrote it, unless it is a whole-word part
    of a longer sample value the question also names (``'West'`` becomes ``'West Germany'``); then a
    question span equal to it ignoring case and spaces; otherwise the most similar question span or sample value when
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
            if not pre and not post:
                # A pointer that stopped early ('West' of "West Germany"): the stored value the
                # question names around it.
                around = re.compile(rf"(?<!\w){re.escape(low)}(?!\w)")
                longer = [c for c in texts if len(c) > len(core) and around.search(c.lower())
                          and c.lower() in question.lower()]
                if longer:
                    return max(longer, key=len)
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
    samples = [sample for _, sample in _string_samples(lay)] if lay is not None else []
    out = []
    for code, literal in _split_literals(sql):
        out.append(code)
        if literal:
            inner = literal[1:-1].replace("''", "'")
            snapped = snap_value(inner, question, samples)
            out.append("'" + snapped.replace("'", "''") + "'")
    return "".join(out)
