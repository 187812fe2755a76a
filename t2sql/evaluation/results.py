"""Whether two query results are the same answer, with the semantics of Spider's test-suite evaluation.

Rows are compared as multisets (bags); their order matters only when the gold query has ORDER BY;
the columns of the prediction may come in any order; floats are equal within a tolerance; NULL
equals NULL. These are the rules of ``result_eq`` in taoyds/test-suite-sql-eval, plus the tolerance.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from itertools import permutations, product

import sqlglot
from sqlglot import exp

from t2sql.data.schema import too_many_joins

REL_TOL = 1e-6
ABS_TOL = 1e-9
_SIG_DIGITS = 6  # floats are compared through a rounding to this many significant digits first


def _canon(value):
    """A hashable stand-in for a value: integral floats become ints, other floats are rounded."""
    if isinstance(value, float):
        if math.isnan(value):
            return ("nan",)
        if math.isinf(value):
            return value
        if value == int(value) and abs(value) < 2 ** 53:
            return int(value)
        return float(f"{value:.{_SIG_DIGITS}g}")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return value


def _canon_rows(rows: list[tuple]) -> list[tuple]:
    return [tuple(_canon(v) for v in row) for row in rows]


def _values_close(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return a == b


def _rows_close(r1: tuple, r2: tuple) -> bool:
    return len(r1) == len(r2) and all(_values_close(a, b) for a, b in zip(r1, r2))


def _sort_key(row: tuple) -> tuple:
    return tuple((str(type(v)), str(v)) for v in row)


def _bag_equal(gold: list[tuple], pred: list[tuple], gold_raw: list[tuple], pred_raw: list[tuple],
               order_matters: bool) -> bool:
    """Equal as bags (or sequences) of canonical rows, or, failing that, row by row within the
    float tolerance (catches values that round to either side of a digit boundary)."""
    if order_matters:
        return gold == pred or all(_rows_close(a, b) for a, b in zip(gold_raw, pred_raw))
    if Counter(gold) == Counter(pred):
        return True
    return all(_rows_close(a, b) for a, b in zip(sorted(gold_raw, key=_sort_key), sorted(pred_raw, key=_sort_key)))


def _unordered_row(row: tuple) -> tuple:
    return tuple(sorted(row, key=lambda v: (str(type(v)), str(v))))


def _column_permutations(gold: list[tuple], pred: list[tuple], n: int):
    """Candidate permutations of the prediction's columns (as in the test-suite's
    ``get_constraint_permutation``, but checking every row instead of 20 random ones)."""
    if n <= 3:
        yield from permutations(range(n))
        return
    gold_columns = [{row[i] for row in gold} for i in range(n)]
    allowed = []
    for gi in range(n):
        allowed.append([pj for pj in range(n) if all(row[pj] in gold_columns[gi] for row in pred)])
    for perm in product(*allowed):
        if len(set(perm)) == n:
            yield perm


def results_match(gold_rows: list[tuple], pred_rows: list[tuple], *, order_matters: bool) -> bool:
    """Whether a prediction's rows are the gold answer.

    Args:
        gold_rows: the gold query's rows.
        pred_rows: the prediction's rows.
        order_matters: compare row order too (the gold query has ORDER BY).

    Returns:
        True when some order of the prediction's columns makes the two results equal as multisets
        of rows (as sequences when ``order_matters``), floats within a relative 1e-6.
    """
    if not gold_rows and not pred_rows:
        return True
    if len(gold_rows) != len(pred_rows):
        return False
    n = len(gold_rows[0])
    if any(len(r) != n for r in pred_rows) or any(len(r) != n for r in gold_rows):
        return False
    gold = _canon_rows(gold_rows)
    pred = _canon_rows(pred_rows)
    # Quick rejection: each row's values as a sorted tuple must agree (test-suite's quick_rej).
    gu = [_unordered_row(r) for r in gold]
    pu = [_unordered_row(r) for r in pred]
    quick = gu == pu if order_matters else Counter(gu) == Counter(pu)
    if quick:
        candidates = _column_permutations(gold, pred, n)
    elif any(isinstance(v, float) for row in gold + pred for v in row):
        candidates = permutations(range(n)) if n <= 3 else iter([tuple(range(n))])
    else:
        return False
    for perm in candidates:
        permuted = pred if n == 1 else [tuple(row[i] for i in perm) for row in pred]
        permuted_raw = pred_rows if n == 1 else [tuple(row[i] for i in perm) for row in pred_rows]
        if _bag_equal(gold, permuted, gold_rows, permuted_raw, order_matters):
            return True
    return False


def order_matters(gold_sql: str) -> bool:
    """The test-suite's rule: row order counts when the gold query contains ORDER BY."""
    return "order by" in re.sub(r"\s+", " ", gold_sql.lower())


def remove_distinct(sql: str) -> str:
    """The query without DISTINCT anywhere (the test-suite's default, ``keep_distinct=False``).

    The text is returned unchanged when it has no DISTINCT or cannot be parsed.
    """
    if "distinct" not in sql.lower() or too_many_joins(sql):
        return sql
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (sqlglot.errors.SqlglotError, RecursionError, ValueError, TypeError):
        return sql
    if tree is None:
        return sql
    for node in list(tree.find_all(exp.Select)):
        node.set("distinct", None)
    for node in list(tree.find_all(exp.Distinct)):
        if isinstance(node.parent, exp.Select):
            continue
        if len(node.expressions) == 1:
            node.replace(node.expressions[0])
    try:
        return tree.sql(dialect="sqlite")
    except (sqlglot.errors.SqlglotError, RecursionError, ValueError, TypeError):
        return sql


def fix_operators(sql: str) -> str:
    """Join operators a tokenizer split (``> =`` -> ``>=``), as the test-suite's postprocess does."""
    return sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")
