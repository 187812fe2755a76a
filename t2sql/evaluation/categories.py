"""Why a prediction is wrong: one error category per example, from execution and query structure.

Failures to run come first (does not parse, unknown table or column, runtime error, timeout). A
query that runs but gives another answer is compared clause by clause with the gold query, in
Spider's canonical form (values dropped, join columns unified), and named after the first clause that
differs: FROM/JOIN, then SELECT columns, aggregation, grouping, conditions (WHERE and set
operations), ordering and LIMIT; when the structure is the same, the literals are compared.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from t2sql.evaluation.schema import DbSchema
from t2sql.evaluation.structure import canonical, literals

ERROR_CATEGORIES: dict[str, str] = {
    "correct": "correct",
    "does_not_parse": "does not parse",
    "unknown_table": "unknown table",
    "unknown_column": "unknown column",
    "runtime_error": "runtime error",
    "timeout": "timeout",
    "wrong_columns": "wrong columns",
    "wrong_aggregation": "wrong aggregation",
    "wrong_condition": "wrong or missing condition",
    "wrong_literal": "wrong literal",
    "wrong_join": "missing or extra join",
    "wrong_grouping": "wrong grouping",
    "wrong_ordering": "wrong ordering or limit",
    "other": "other difference",
}
"""Category key -> label shown in reports and the review page."""

_EXEC_KINDS = {"syntax": "does_not_parse", "no_such_table": "unknown_table", "no_such_column": "unknown_column",
               "timeout": "timeout", "runtime": "runtime_error", "denied": "runtime_error"}
_STRUCT_KINDS = {"parse": "does_not_parse", "unknown_table": "unknown_table", "unknown_column": "unknown_column"}


def _tables(sql: dict[str, Any]) -> list[str]:
    return sorted(tu[1] if tu[0] == "table_unit" else "(subquery)" for tu in sql["from"]["table_units"])


def _join_pairs(sql: dict[str, Any], kmap: dict[str, str]) -> Counter:
    pairs: Counter = Counter()
    for unit in sql["from"]["conds"][::2]:
        left = unit[2][1][1] if unit[2] and unit[2][1] else None
        right = unit[3][1] if isinstance(unit[3], tuple) and len(unit[3]) == 3 else unit[3]
        if isinstance(right, dict):
            right = "(subquery)"
        pairs[frozenset({kmap.get(left, left), kmap.get(right, right)})] += 1
    return pairs


def _differs(a: list, b: list) -> bool:
    rest = list(b)
    for item in a:
        if item in rest:
            rest.remove(item)
        else:
            return True
    return bool(rest)


def _value_key(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def diagnose(gold: dict[str, Any], pred: dict[str, Any], schema: DbSchema | None) -> str:
    """The first clause in which a (running but wrong) prediction differs from the gold query.

    Args:
        gold / pred: structures from :func:`t2sql.evaluation.structure.build_structure`.
        schema: the schema both were resolved against.

    Returns:
        A key of :data:`ERROR_CATEGORIES` other than the failure kinds.
    """
    g, p = canonical(gold, schema), canonical(pred, schema)
    kmap = schema.foreign_key_map() if schema is not None else {}
    if _tables(g) != _tables(p) or _join_pairs(gold, kmap) != _join_pairs(pred, kmap):
        return "wrong_join"
    if _differs([u[1] for u in p["select"][1]], [u[1] for u in g["select"][1]]):
        return "wrong_columns"
    if _differs(p["select"][1], g["select"][1]):
        return "wrong_aggregation"
    if _differs(p["groupBy"], g["groupBy"]) or p["having"] != g["having"]:
        return "wrong_grouping"
    if _differs(p["where"][::2], g["where"][::2]) or sorted(p["where"][1::2]) != sorted(g["where"][1::2]):
        return "wrong_condition"
    for op in ("intersect", "union", "except"):
        if (p[op] is None) != (g[op] is None) or (p[op] is not None and p[op] != g[op]):
            return "wrong_condition"
    if p["orderBy"] != g["orderBy"] or (p["limit"] is None) != (g["limit"] is None):
        return "wrong_ordering"
    g_lits, p_lits = literals(gold), literals(pred)
    g_limits = sorted(str(v) for c, _, v in g_lits if c in ("limit", "offset"))
    p_limits = sorted(str(v) for c, _, v in p_lits if c in ("limit", "offset"))
    if g_limits != p_limits:
        return "wrong_ordering"
    g_vals = Counter(repr(_value_key(v)) for c, _, v in g_lits if c not in ("limit", "offset"))
    p_vals = Counter(repr(_value_key(v)) for c, _, v in p_lits if c not in ("limit", "offset"))
    if g_vals != p_vals:
        return "wrong_literal"
    return "other"


def categorize(*, correct: bool, parse_ok: bool, exec_error_kind: str | None = None,
               structure_error_kind: str | None = None, gold: dict[str, Any] | None = None,
               pred: dict[str, Any] | None = None, schema: DbSchema | None = None) -> str:
    """The error category of one prediction.

    Args:
        correct: the prediction is judged correct (execution match, or exact-set match without a database).
        parse_ok: sqlglot parses the prediction.
        exec_error_kind: ``ExecResult.error_kind`` when the prediction failed to run, else None.
        structure_error_kind: ``SqlStructureError.kind`` when the prediction could not be resolved
            against the schema, else None.
        gold / pred: structures of gold and prediction (None when unavailable).
        schema: the schema they were resolved against.

    Returns:
        A key of :data:`ERROR_CATEGORIES`.
    """
    if correct:
        return "correct"
    if not parse_ok:
        return "does_not_parse"
    if exec_error_kind is not None:
        return _EXEC_KINDS.get(exec_error_kind, "runtime_error")
    if structure_error_kind is not None:
        return _STRUCT_KINDS.get(structure_error_kind, "does_not_parse")
    if gold is None or pred is None:
        return "other"
    return diagnose(gold, pred, schema)
