"""Gold SQL to placeholder SQL: the training target, in numbers instead of names."""

from __future__ import annotations

import re
from collections.abc import Iterable

import sqlglot
from sqlglot import exp

from t2sql.linking.pointers import _code_only, point_values, space_sql
from t2sql.linking.view import Layout


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
