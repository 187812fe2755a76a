"""SQL as Spider's evaluation sees it: clause structure, exact-set match, component scores, hardness.

A query is parsed with sqlglot (SQLite dialect) into the nested structure Spider's ``process_sql.py``
produces, with every column resolved against the schema (``T1.name`` in ``FROM singer AS T1`` is
``__singer.name__``)::

    col_unit:  (agg_id, column_id, is_distinct)
    val_unit:  (unit_op, col_unit1, col_unit2)
    cond_unit: (not_op, op_id, val_unit, val1, val2)
    condition: [cond_unit, "and" | "or", cond_unit, ...]
    sql: {"select": (is_distinct, [(agg_id, val_unit), ...]),
          "from": {"table_units": [("table_unit", "__t__") | ("sql", sql), ...], "conds": condition},
          "where": condition, "groupBy": [col_unit, ...], "orderBy": ("asc" | "desc", [val_unit, ...]) | [],
          "having": condition, "limit": int | None, "intersect": sql | None, "except": ..., "union": ...}

The comparison rules (values ignored, clauses compared as multisets, foreign-key columns unified,
DISTINCT ignored) and the hardness rules (``count_component1``, ``count_component2``,
``count_others``, ``eval_hardness``) follow Spider's ``evaluation.py``, so exact-set match and hardness
labels agree with the official evaluator. Expressions Spider's parser cannot read (functions, CASE,
nested arithmetic) become one opaque unit whose text has its columns resolved, so they still compare.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import sqlglot
from sqlglot import exp

from t2sql.data.schema import MAX_PARSED_JOINS, too_many_joins
from t2sql.evaluation.schema import DbSchema

AGG_OPS = ("none", "max", "min", "count", "sum", "avg")
UNIT_OPS = ("none", "-", "+", "*", "/")
WHERE_OPS = ("not", "between", "=", ">", "<", ">=", "<=", "!=", "in", "like", "is", "exists")
OTHER_OP = len(WHERE_OPS)  # a condition Spider's grammar has no operator for (a bare function, ...)
SET_OPS = ("intersect", "union", "except")
HARDNESS_LEVELS = ("easy", "medium", "hard", "extra")
COMPONENTS = ("select", "select(no AGG)", "where", "where(no OP)", "group(no Having)", "group", "order",
              "and/or", "IUEN", "keywords")

_AGG_TYPES = {exp.Max: 1, exp.Min: 2, exp.Count: 3, exp.Sum: 4, exp.Avg: 5}
_UNIT_TYPES = {exp.Sub: 1, exp.Add: 2, exp.Mul: 3, exp.Div: 4}
_CMP_TYPES = {exp.EQ: 2, exp.GT: 3, exp.LT: 4, exp.GTE: 5, exp.LTE: 6, exp.NEQ: 7, exp.Like: 9, exp.ILike: 9,
              exp.Is: 10}
_SET_TYPES = {exp.Union: "union", exp.Intersect: "intersect", exp.Except: "except"}


class SqlStructureError(ValueError):
    """A query cannot be read into Spider's structure.

    Attributes:
        kind: ``"parse"`` (not SQL sqlglot reads), ``"unknown_table"`` or ``"unknown_column"``.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def empty_sql() -> dict[str, Any]:
    """The structure Spider's evaluator scores a prediction it cannot parse as."""
    return {"select": (False, []), "from": {"table_units": [], "conds": []}, "where": [], "groupBy": [],
            "having": [], "orderBy": [], "limit": None, "intersect": None, "except": None, "union": None}


# -- parsing -------------------------------------------------------------------------------------

def parse_sql(sql: str) -> exp.Expression:
    """Parse one SQLite statement with sqlglot.

    Raises:
        SqlStructureError: (kind ``"parse"``) empty text, a syntax error, or more than one statement.
    """
    text = (sql or "").strip().rstrip(";").strip()
    if not text:
        raise SqlStructureError("parse", "empty query")
    if too_many_joins(text):
        raise SqlStructureError("parse", f"more than {MAX_PARSED_JOINS} JOINs: not parsed")
    try:
        statements = [s for s in sqlglot.parse(text, read="sqlite") if s is not None]
    except (sqlglot.errors.SqlglotError, RecursionError, ValueError, TypeError) as exc:
        raise SqlStructureError("parse", f"does not parse: {str(exc).splitlines()[0][:200]}") from None
    if len(statements) != 1:
        raise SqlStructureError("parse", f"expected one statement, got {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, (exp.Select, exp.SetOperation, exp.Subquery)):
        raise SqlStructureError("parse", f"not a query: {type(tree).__name__}")
    return tree


def normalize_sql(sql: str, tree: exp.Expression | None = None) -> str:
    """A canonical text of a query for exact string match: sqlglot's rendering with unquoted
    identifiers lower-cased, keywords upper-cased and spacing fixed; text sqlglot cannot parse is
    lower-cased outside quotes with whitespace collapsed.
    """
    if tree is None:
        try:
            tree = parse_sql(sql)
        except SqlStructureError:
            tree = None
    if tree is not None:
        try:
            return tree.sql(dialect="sqlite", normalize=True)
        except (sqlglot.errors.SqlglotError, RecursionError, ValueError, TypeError):
            pass
    text = re.sub(r"\s+", " ", (sql or "").strip().rstrip(";").strip())
    parts = re.split(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")", text)
    return "".join(p if i % 2 else p.lower() for i, p in enumerate(parts))


class _Scope:
    """Tables visible to one SELECT: alias -> table, derived tables, select-list aliases."""

    def __init__(self, parent: "_Scope | None"):
        self.parent = parent
        self.aliases: dict[str, str] = {}
        self.derived: dict[str, list[str]] = {}
        self.tables: list[str] = []
        self.select_aliases: dict[str, exp.Expression] = {}

    def chain(self) -> Iterator["_Scope"]:
        scope: _Scope | None = self
        while scope is not None:
            yield scope
            scope = scope.parent


def _unwrap(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _output_names(query: exp.Expression) -> list[str]:
    query = _unwrap(query)
    while isinstance(query, (exp.Subquery, exp.SetOperation)):
        query = query.this
    if not isinstance(query, exp.Select):
        return []
    return [e.alias_or_name.lower() for e in query.expressions]


class _Builder:
    def __init__(self, schema: DbSchema | None):
        self.schema = schema if schema else None

    # -- statements --------------------------------------------------------------------------
    def query(self, node: exp.Expression, parent: _Scope | None) -> dict[str, Any]:
        node = _unwrap(node)
        if isinstance(node, exp.Subquery):
            return self.query(node.this, parent)
        if isinstance(node, exp.SetOperation):
            items = self._flatten(node)
            # Spider nests set operations to the right (A UNION (B EXCEPT C)) and reads a trailing
            # ORDER BY / LIMIT as part of the last SELECT.
            order, limit = node.args.get("order"), node.args.get("limit")
            sqls = [self.query(items[i], parent) if i < len(items) - 1 else
                    self.select(_unwrap(items[i]), parent, order, limit) for i in range(0, len(items), 2)]
            for i in range(len(sqls) - 1):
                sqls[i][items[2 * i + 1]] = sqls[i + 1]
            return sqls[0]
        if isinstance(node, exp.Select):
            return self.select(node, parent)
        raise SqlStructureError("parse", f"unsupported query part: {type(node).__name__}")

    def _flatten(self, node: exp.Expression) -> list:
        node = _unwrap(node)
        if isinstance(node, exp.SetOperation):
            return self._flatten(node.this) + [_SET_TYPES.get(type(node), "union")] + self._flatten(node.expression)
        return [node]

    def select(self, sel: exp.Expression, parent: _Scope | None, order: exp.Expression | None = None,
               limit: exp.Expression | None = None) -> dict[str, Any]:
        if isinstance(sel, exp.Subquery):
            sel = _unwrap(sel.this)
        if not isinstance(sel, exp.Select):
            return self.query(sel, parent)
        scope = _Scope(parent)
        sql = empty_sql()
        from_ = sel.args.get("from_") or sel.args.get("from")
        sources: list[exp.Expression] = [from_.this] if from_ is not None else []
        joins = sel.args.get("joins") or []
        sources += [j.this for j in joins]
        table_units = []
        for source in sources:
            table_units.append(self._source(source, scope, parent))
        sql["from"]["table_units"] = table_units
        conds: list = []
        for join in joins:
            on = join.args.get("on")
            if on is not None:
                part = self.condition(on, scope)
                if conds and part:
                    conds.append("and")
                conds.extend(part)
        sql["from"]["conds"] = conds
        units = []
        for item in sel.expressions:
            if isinstance(item, exp.Alias):
                scope.select_aliases[item.alias.lower()] = item.this
                item = item.this
            units.append(self.select_unit(item, scope))
        sql["select"] = (bool(sel.args.get("distinct")), units)
        where = sel.args.get("where")
        if where is not None:
            sql["where"] = self.condition(where.this, scope)
        group = sel.args.get("group")
        if group is not None:
            sql["groupBy"] = [self.col_unit(e, scope, alias_first=False) for e in group.expressions]
        having = sel.args.get("having")
        if having is not None:
            sql["having"] = self.condition(having.this, scope)
        order = sel.args.get("order") or order
        if order is not None:
            direction = "asc"
            val_units = []
            for ordered in order.expressions:
                target = ordered.this if isinstance(ordered, exp.Ordered) else ordered
                val_units.append(self.val_unit(target, scope, alias_first=True))
                desc = ordered.args.get("desc") if isinstance(ordered, exp.Ordered) else None
                if desc is True:
                    direction = "desc"
                elif desc is False:
                    direction = "asc"
            sql["orderBy"] = (direction, val_units)
        limit = sel.args.get("limit") or limit
        if limit is not None:
            value = limit.args.get("expression") or limit.this
            sql["limit"] = self._limit_value(value)
        offset = sel.args.get("offset")
        if offset is not None:
            sql["_offset"] = self._limit_value(offset.args.get("expression") or offset.this)
        return sql

    @staticmethod
    def _limit_value(node: exp.Expression | None) -> int | str:
        if isinstance(node, exp.Literal) and not node.is_string:
            try:
                return int(float(node.this))
            except ValueError:
                pass
        return node.sql(dialect="sqlite") if node is not None else "?"

    def _source(self, source: exp.Expression, scope: _Scope, parent: _Scope | None) -> tuple[str, Any]:
        source = _unwrap(source)
        if isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
            name = source.name.lower()
            if self.schema is not None and not self.schema.has_table(name):
                raise SqlStructureError("unknown_table", f"no such table: {source.name}")
            alias = (source.alias or source.name).lower()
            scope.aliases[alias] = name
            scope.aliases.setdefault(name, name)
            scope.tables.append(name)
            return ("table_unit", f"__{name}__")
        if isinstance(source, (exp.Subquery, exp.Select, exp.SetOperation)):
            nested = self.query(source, parent)
            alias = source.alias.lower() if isinstance(source, exp.Subquery) and source.alias else ""
            if alias:
                scope.derived[alias] = _output_names(source)
                scope.aliases[alias] = alias
            return ("sql", nested)
        raise SqlStructureError("parse", f"unsupported FROM item: {source.sql(dialect='sqlite')[:80]}")

    # -- columns and units ---------------------------------------------------------------------
    def resolve_column(self, col: exp.Column, scope: _Scope, alias_first: bool = False) -> tuple[str, Any]:
        """("col", column_id) | ("alias", select expression) | ("string", text) for a column reference."""
        if isinstance(col.this, exp.Star):
            return ("col", "__all__")
        name = col.name.lower()
        quoted = isinstance(col.this, exp.Identifier) and col.this.args.get("quoted")
        qualifier = col.table.lower() if col.table else ""
        if qualifier:
            for s in scope.chain():
                if qualifier in s.aliases:
                    table = s.aliases[qualifier]
                    if table in s.derived:
                        if s.derived[table] and name not in s.derived[table]:
                            raise SqlStructureError("unknown_column", f"no such column: {col.sql()}")
                        return ("col", f"__{table}.{name}__")
                    if self.schema is not None and not self.schema.has_column(table, name):
                        raise SqlStructureError("unknown_column", f"no such column: {col.sql()}")
                    return ("col", f"__{table}.{name}__")
            if self.schema is None:
                return ("col", f"__{qualifier}.{name}__")
            raise SqlStructureError("unknown_column", f"no such column: {col.sql()}")
        if alias_first:
            for s in scope.chain():
                if name in s.select_aliases:
                    return ("alias", s.select_aliases[name])
                break
        for s in scope.chain():
            for table in s.tables:
                if self.schema is None or self.schema.has_column(table, name):
                    return ("col", f"__{table}.{name}__")
            for alias, columns in s.derived.items():
                if name in columns:
                    return ("col", f"__{alias}.{name}__")
        if name in scope.select_aliases:
            return ("alias", scope.select_aliases[name])
        if quoted:
            # SQLite reads a double-quoted name that is no column as a string literal.
            return ("string", col.name)
        if self.schema is None:
            return ("col", f"__{name}__")
        raise SqlStructureError("unknown_column", f"no such column: {col.sql()}")

    def opaque(self, node: exp.Expression, scope: _Scope) -> str:
        """Text of an expression Spider's grammar does not cover, with its columns resolved."""
        node = node.copy()
        for col in list(node.find_all(exp.Column)):
            kind, value = self.resolve_column(col, scope)
            if kind == "col":
                col.replace(exp.column(value))
            elif kind == "string":
                col.replace(exp.Literal.string(value))
            else:
                col.replace(exp.Paren(this=value.copy()))
        for sub in list(node.find_all(exp.Subquery)):
            sub.replace(exp.Literal.string("subquery"))
        return "expr:" + node.sql(dialect="sqlite", normalize=True).lower()

    def col_unit(self, node: exp.Expression, scope: _Scope, alias_first: bool = False) -> tuple:
        node = _unwrap(node)
        if isinstance(node, exp.Alias):
            node = node.this
        agg = _AGG_TYPES.get(type(node))
        if agg is not None:
            arg = node.this
            distinct = False
            if isinstance(arg, exp.Distinct) and len(arg.expressions) == 1:
                distinct, arg = True, arg.expressions[0]
            inner = self.col_unit(arg, scope, alias_first) if isinstance(_unwrap(arg), (exp.Column, exp.Star)) \
                else (0, self.opaque(arg, scope), False)
            return (agg, inner[1], distinct or inner[2])
        if isinstance(node, exp.Star):
            return (0, "__all__", False)
        if isinstance(node, exp.Column):
            kind, value = self.resolve_column(node, scope, alias_first)
            if kind == "col":
                return (0, value, False)
            if kind == "alias":
                return self.col_unit(value, scope, alias_first=False)
            return (0, f"expr:'{value.lower()}'", False)
        if isinstance(node, exp.Distinct) and len(node.expressions) == 1:
            inner = self.col_unit(node.expressions[0], scope, alias_first)
            return (inner[0], inner[1], True)
        return (0, self.opaque(node, scope), False)

    def val_unit(self, node: exp.Expression, scope: _Scope, alias_first: bool = False) -> tuple:
        node = _unwrap(node)
        if isinstance(node, exp.Alias):
            node = node.this
        if isinstance(node, exp.Column) and alias_first:
            kind, value = self.resolve_column(node, scope, alias_first=True)
            if kind == "alias":
                return self.val_unit(value, scope)
        op = _UNIT_TYPES.get(type(node))
        if op is not None:
            return (op, self.col_unit(node.this, scope, alias_first),
                    self.col_unit(node.expression, scope, alias_first))
        return (0, self.col_unit(node, scope, alias_first), None)

    def select_unit(self, node: exp.Expression, scope: _Scope) -> tuple:
        node = _unwrap(node)
        agg = _AGG_TYPES.get(type(node))
        if agg is not None:
            arg = node.this
            distinct = False
            if isinstance(arg, exp.Distinct) and len(arg.expressions) == 1:
                distinct, arg = True, arg.expressions[0]
            unit_op, cu1, cu2 = self.val_unit(arg, scope)
            if distinct:
                cu1 = (cu1[0], cu1[1], True)
            return (agg, (unit_op, cu1, cu2))
        return (0, self.val_unit(node, scope))

    # -- conditions ----------------------------------------------------------------------------
    def condition(self, node: exp.Expression, scope: _Scope) -> list:
        out: list = []
        self._walk_condition(node, scope, out)
        return out

    def _walk_condition(self, node: exp.Expression, scope: _Scope, out: list) -> None:
        node = _unwrap(node)
        if isinstance(node, (exp.And, exp.Or)):
            self._walk_condition(node.this, scope, out)
            out.append("and" if isinstance(node, exp.And) else "or")
            self._walk_condition(node.expression, scope, out)
            return
        out.append(self.cond_unit(node, scope))

    def cond_unit(self, node: exp.Expression, scope: _Scope) -> tuple:
        node = _unwrap(node)
        not_op = False
        if isinstance(node, exp.Not):
            inner = _unwrap(node.this)
            if isinstance(inner, (exp.And, exp.Or, exp.Not)):
                return (True, OTHER_OP, (0, (0, self.opaque(inner, scope), False), None), None, None)
            not_op, node = True, inner
        if node.args.get("negate"):
            not_op = not not_op
        if isinstance(node, exp.Between):
            return (not_op, 1, self.val_unit(node.this, scope), self.value(node.args.get("low"), scope),
                    self.value(node.args.get("high"), scope))
        if isinstance(node, exp.In):
            query = node.args.get("query")
            if query is not None:
                val1: Any = self.query(query, scope)
            else:
                val1 = tuple(self.value(e, scope) for e in node.expressions)
            return (not_op, 8, self.val_unit(node.this, scope), val1, None)
        if isinstance(node, exp.Exists):
            return (not_op, 11, (0, None, None), self.query(node.this, scope), None)
        op = _CMP_TYPES.get(type(node))
        if op is not None:
            return (not_op, op, self.val_unit(node.this, scope), self.value(node.expression, scope), None)
        return (not_op, OTHER_OP, (0, (0, self.opaque(node, scope), False), None), None, None)

    def value(self, node: exp.Expression | None, scope: _Scope) -> Any:
        if node is None:
            return None
        node = _unwrap(node)
        if isinstance(node, (exp.Subquery, exp.Select, exp.SetOperation)):
            return self.query(node, scope)
        if isinstance(node, exp.Literal):
            if node.is_string:
                return f'"{node.this}"'
            try:
                return float(node.this)
            except ValueError:
                return node.this
        if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
            try:
                return -float(node.this.this)
            except ValueError:
                pass
        if isinstance(node, exp.Null):
            return "null"
        if isinstance(node, exp.Boolean):
            return "true" if node.this else "false"
        if isinstance(node, exp.Column):
            kind, value = self.resolve_column(node, scope)
            if kind == "string":
                return f'"{value}"'
            if kind == "alias":
                return self.col_unit(value, scope)
            return (0, value, False)
        if isinstance(node, (exp.Tuple, exp.Array)):
            return tuple(self.value(e, scope) for e in node.expressions)
        if _AGG_TYPES.get(type(node)) is not None:
            return self.col_unit(node, scope)
        return self.opaque(node, scope)


def build_structure(tree: exp.Expression | str, schema: DbSchema | None = None) -> dict[str, Any]:
    """Spider's structure of a query, with columns resolved against ``schema``.

    Args:
        tree: a sqlglot tree from :func:`parse_sql`, or SQL text.
        schema: tables and columns; ``None`` (or an empty schema) resolves names without checking them.

    Returns:
        The nested dict described in this module's docstring.

    Raises:
        SqlStructureError: the text does not parse, or names a table or column the schema lacks.
    """
    if isinstance(tree, str):
        tree = parse_sql(tree)
    try:
        return _Builder(schema).query(tree, None)
    except RecursionError:
        raise SqlStructureError("parse", "query nested too deeply") from None


# -- hardness (evaluation.py: count_component1, count_component2, count_others, eval_hardness) -----

def _count_agg(units) -> int:
    # evaluation.py's has_agg: unit[0] != 0. Applied to condition lists it also counts NOT conditions
    # and AND/OR connectors; kept as is so that hardness labels equal the official ones.
    return sum(1 for u in units if u[0] != 0)


def _nested(sql: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for unit in sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]:
        for v in (unit[3], unit[4]):
            if isinstance(v, dict):
                out.append(v)
    for op in ("intersect", "except", "union"):
        if sql[op] is not None:
            out.append(sql[op])
    return out


def count_component1(sql: dict[str, Any]) -> int:
    count = sum(1 for key in ("where", "groupBy", "orderBy") if len(sql[key]) > 0)
    count += sql["limit"] is not None
    if sql["from"]["table_units"]:
        count += len(sql["from"]["table_units"]) - 1
    connectors = sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2]
    count += sum(1 for c in connectors if c == "or")
    units = sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]
    count += sum(1 for u in units if u[1] == WHERE_OPS.index("like"))
    return count


def count_component2(sql: dict[str, Any]) -> int:
    return len(_nested(sql))


def count_others(sql: dict[str, Any]) -> int:
    aggs = _count_agg(sql["select"][1]) + _count_agg(sql["where"][::2]) + _count_agg(sql["groupBy"])
    if sql["orderBy"]:
        units = sql["orderBy"][1]
        aggs += _count_agg([u[1] for u in units if u[1]] + [u[2] for u in units if u[2]])
    aggs += _count_agg(sql["having"])
    count = int(aggs > 1)
    count += len(sql["select"][1]) > 1
    count += len(sql["where"]) > 1
    count += len(sql["groupBy"]) > 1
    return count


def hardness(sql: dict[str, Any]) -> str:
    """Spider's difficulty level of a (gold) query: ``easy``, ``medium``, ``hard`` or ``extra``."""
    c1, c2, others = count_component1(sql), count_component2(sql), count_others(sql)
    if c1 <= 1 and others == 0 and c2 == 0:
        return "easy"
    if (others <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and others < 2 and c2 == 0):
        return "medium"
    if (others > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and others <= 2 and c2 == 0) or \
            (c1 <= 1 and others == 0 and c2 <= 1):
        return "hard"
    return "extra"


# -- exact-set match (evaluation.py: rebuild_sql_val, rebuild_sql_col, eval_exact_match) -----------

def _strip_values_cond(condition: list) -> list:
    out = []
    for i, item in enumerate(condition):
        if i % 2:
            out.append(item)
            continue
        not_op, op, vu, v1, v2 = item
        out.append((not_op, op, vu, strip_values(v1) if isinstance(v1, dict) else None,
                    strip_values(v2) if isinstance(v2, dict) else None))
    return out


def strip_values(sql: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy with every condition value dropped except nested queries (Spider's DISABLE_VALUE)."""
    if sql is None:
        return None
    sql = dict(sql)
    sql["from"] = {"table_units": sql["from"]["table_units"], "conds": _strip_values_cond(sql["from"]["conds"])}
    for key in ("where", "having"):
        sql[key] = _strip_values_cond(sql[key])
    for op in SET_OPS:
        sql[op] = strip_values(sql[op])
    return sql


def _valid_col_units(table_units: list, schema: DbSchema | None) -> set[str]:
    if schema is None:
        return set()
    prefixes = {tu[1][:-2] for tu in table_units if tu[0] == "table_unit"}
    return {cid for cid in schema.column_ids() if "." in cid and cid[:cid.index(".")] in prefixes}


def _col(unit, valid: set[str], kmap: dict[str, str]):
    if unit is None:
        return None
    agg, cid, _distinct = unit
    if cid in kmap and cid in valid:
        cid = kmap[cid]
    return (agg, cid, None)


def _val(unit, valid, kmap):
    if unit is None:
        return None
    return (unit[0], _col(unit[1], valid, kmap), _col(unit[2], valid, kmap))


def _cond(condition, valid, kmap):
    return [item if i % 2 else (item[0], item[1], _val(item[2], valid, kmap), item[3], item[4])
            for i, item in enumerate(condition)]


def unify_columns(sql: dict[str, Any] | None, valid: set[str], kmap: dict[str, str]) -> dict[str, Any] | None:
    """A copy with foreign-key columns mapped to their key group and DISTINCT dropped (Spider's
    ``rebuild_sql_col``; like it, columns inside nested WHERE queries are left as they are)."""
    if sql is None:
        return None
    sql = dict(sql)
    sql["select"] = (None, [(agg, _val(vu, valid, kmap)) for agg, vu in sql["select"][1]])
    sql["from"] = {"table_units": [(t, _col(x, valid, kmap) if isinstance(x, tuple) else x)
                                   for t, x in sql["from"]["table_units"]],
                   "conds": _cond(sql["from"]["conds"], valid, kmap)}
    sql["where"] = _cond(sql["where"], valid, kmap)
    sql["groupBy"] = [_col(u, valid, kmap) for u in sql["groupBy"]]
    if sql["orderBy"]:
        sql["orderBy"] = (sql["orderBy"][0], [_val(vu, valid, kmap) for vu in sql["orderBy"][1]])
    sql["having"] = _cond(sql["having"], valid, kmap)
    for op in SET_OPS:
        sql[op] = unify_columns(sql[op], valid, kmap)
    return sql


def canonical(sql: dict[str, Any] | None, schema: DbSchema | None) -> dict[str, Any] | None:
    """The structure Spider compares: values dropped, foreign keys unified, DISTINCT ignored."""
    if sql is None:
        return None
    sql = strip_values(sql)
    kmap = schema.foreign_key_map() if schema is not None else {}
    return unify_columns(sql, _valid_col_units(sql["from"]["table_units"], schema), kmap)


def _scores(count: int, pred_total: int, label_total: int) -> tuple[int, int, int]:
    if pred_total != label_total:
        return 0, 0, 0
    if count == pred_total:
        return 1, 1, 1
    return 0, 0, 0


def _match_multiset(pred: list, label: list) -> int:
    label = list(label)
    count = 0
    for unit in pred:
        if unit in label:
            count += 1
            label.remove(unit)
    return count


def _keywords(sql: dict[str, Any]) -> set[str]:
    res = set()
    if sql["where"]:
        res.add("where")
    if sql["groupBy"]:
        res.add("group")
    if sql["having"]:
        res.add("having")
    if sql["orderBy"]:
        res.add(sql["orderBy"][0])
        res.add("order")
    if sql["limit"] is not None:
        res.add("limit")
    for op in ("except", "union", "intersect"):
        if sql[op] is not None:
            res.add(op)
    connectors = sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2]
    if "or" in connectors:
        res.add("or")
    units = sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]
    if any(u[0] for u in units):
        res.add("not")
    if any(u[1] == WHERE_OPS.index("in") for u in units):
        res.add("in")
    if any(u[1] == WHERE_OPS.index("like") for u in units):
        res.add("like")
    return res


def component_scores(pred: dict[str, Any], label: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Spider's partial matching of two canonical structures, per component.

    Returns:
        component -> {"acc", "rec", "f1", "label_total", "pred_total"} (each 0 or 1 per example, as
        in Spider; averages over a test set are taken by the caller).
    """
    res: dict[str, dict[str, int]] = {}

    def put(name, count, pred_total, label_total):
        acc, rec, f1 = _scores(count, pred_total, label_total)
        res[name] = {"acc": acc, "rec": rec, "f1": f1, "label_total": label_total, "pred_total": pred_total}

    p_sel, l_sel = pred["select"][1], label["select"][1]
    put("select", _match_multiset(p_sel, l_sel), len(p_sel), len(l_sel))
    put("select(no AGG)", _match_multiset([u[1] for u in p_sel], [u[1] for u in l_sel]), len(p_sel), len(l_sel))
    p_where, l_where = pred["where"][::2], label["where"][::2]
    put("where", _match_multiset(p_where, l_where), len(p_where), len(l_where))
    put("where(no OP)", _match_multiset([u[2] for u in p_where], [u[2] for u in l_where]), len(p_where),
        len(l_where))
    p_group = [u[1] for u in pred["groupBy"]]
    l_group = [u[1] for u in label["groupBy"]]

    def bare(c):
        return c.split(".")[1] if isinstance(c, str) and "." in c else c

    put("group(no Having)", _match_multiset([bare(c) for c in p_group], [bare(c) for c in l_group]),
        len(p_group), len(l_group))
    p_total, l_total = int(bool(pred["groupBy"])), int(bool(label["groupBy"]))
    put("group", int(p_total == l_total == 1 and p_group == l_group and pred["having"] == label["having"]),
        p_total, l_total)
    p_total, l_total = int(bool(pred["orderBy"])), int(bool(label["orderBy"]))
    same_limit = (pred["limit"] is None) == (label["limit"] is None)
    put("order", int(bool(label["orderBy"]) and pred["orderBy"] == label["orderBy"] and same_limit),
        p_total, l_total)
    p_ao, l_ao = set(pred["where"][1::2]), set(label["where"][1::2])
    if p_ao == l_ao:
        put("and/or", 1, 1, 1)
    else:
        put("and/or", 0, len(p_ao), len(l_ao))
    l_total = p_total = count = 0
    for op in ("intersect", "except", "union"):
        p_sub, l_sub = pred[op], label[op]
        p_total += p_sub is not None
        l_total += l_sub is not None
        if p_sub is not None and l_sub is not None:
            count += _exact(p_sub, l_sub)
    put("IUEN", count, p_total, l_total)
    p_kw, l_kw = _keywords(pred), _keywords(label)
    put("keywords", len(p_kw & l_kw), len(p_kw), len(l_kw))
    return res


def _exact(pred: dict[str, Any], label: dict[str, Any]) -> int:
    scores = component_scores(pred, label)
    if any(s["f1"] != 1 for s in scores.values()):
        return 0
    if label["from"]["table_units"]:
        return int(sorted(label["from"]["table_units"], key=repr) == sorted(pred["from"]["table_units"], key=repr))
    return 1


def exact_set_match(pred: dict[str, Any] | None, gold: dict[str, Any],
                    schema: DbSchema | None) -> tuple[bool, dict[str, dict[str, int]]]:
    """Spider's exact-set match of a predicted and a gold structure from :func:`build_structure`.

    Args:
        pred: the prediction's structure, or ``None`` when it does not parse (scored as empty).
        gold: the gold structure.
        schema: the schema both were resolved against (its foreign keys unify join columns).

    Returns:
        (match, component scores from :func:`component_scores`).
    """
    p = canonical(pred if pred is not None else empty_sql(), schema)
    g = canonical(gold, schema)
    scores = component_scores(p, g)
    return bool(_exact(p, g)), scores


# -- what a query does -----------------------------------------------------------------------

QUERY_TYPES = ("lookup", "filter", "aggregate", "group_by_report", "top_k_ranking", "multi_table_join",
               "nested_or_set")
QUERY_TYPE_LABELS = {"lookup": "lookup", "filter": "filter", "aggregate": "aggregate",
                     "group_by_report": "group-by report", "top_k_ranking": "top-k ranking",
                     "multi_table_join": "multi-table join", "nested_or_set": "nested or set query"}


def _has_nested(sql: dict[str, Any]) -> bool:
    if _nested(sql):
        return True
    return any(tu[0] == "sql" for tu in sql["from"]["table_units"])


def query_types(sql: dict[str, Any]) -> list[str]:
    """Business scenario types of a query, most specific first; ``lookup`` when no other applies.

    ``nested_or_set`` (subquery or INTERSECT/UNION/EXCEPT), ``multi_table_join`` (more than one table),
    ``top_k_ranking`` (ORDER BY with LIMIT), ``group_by_report`` (GROUP BY), ``aggregate``
    (aggregation without GROUP BY), ``filter`` (WHERE).
    """
    tags = []
    if _has_nested(sql):
        tags.append("nested_or_set")
    if len(sql["from"]["table_units"]) > 1:
        tags.append("multi_table_join")
    if sql["orderBy"] and sql["limit"] is not None:
        tags.append("top_k_ranking")
    if sql["groupBy"]:
        tags.append("group_by_report")
    elif any(agg != 0 or (vu[1] and vu[1][0] != 0) or (vu[2] and vu[2][0] != 0) for agg, vu in sql["select"][1]):
        tags.append("aggregate")
    if sql["where"]:
        tags.append("filter")
    return tags or ["lookup"]


def literals(sql: dict[str, Any] | None) -> list[tuple[str | None, int, Any]]:
    """The literal values of a query's conditions as (column id or None, op id, value), nested
    queries included; LIMIT/OFFSET values appear with column ``"limit"`` / ``"offset"``."""
    out: list[tuple[str | None, int, Any]] = []
    if sql is None:
        return out

    def add_value(column, op, value):
        if isinstance(value, dict):
            out.extend(literals(value))
        elif isinstance(value, tuple) and value and not (len(value) == 3 and isinstance(value[1], str)
                                                          and isinstance(value[0], int)):
            for v in value:
                add_value(column, op, v)
        elif isinstance(value, (str, float, int)) and not (isinstance(value, str) and value.startswith("expr:")):
            out.append((column, op, value))

    for condition in (sql["from"]["conds"], sql["where"], sql["having"]):
        for unit in condition[::2]:
            _not, op, vu, v1, v2 = unit
            column = vu[1][1] if vu and vu[0] == 0 and vu[1] and vu[1][0] == 0 and isinstance(vu[1][1], str) \
                and vu[1][1].startswith("__") else None
            add_value(column, op, v1)
            add_value(column, op, v2)
    for tu in sql["from"]["table_units"]:
        if tu[0] == "sql":
            out.extend(literals(tu[1]))
    if sql["limit"] is not None:
        out.append(("limit", -1, sql["limit"]))
    if sql.get("_offset") is not None:
        out.append(("offset", -1, sql["_offset"]))
    for op in SET_OPS:
        out.extend(literals(sql[op]))
    return out
