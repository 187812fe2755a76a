"""Result comparison with the test-suite's semantics, and the safety of the read-only connection."""

import sqlite3

import pytest

from t2sql.evaluation.execution import connect_readonly, execute
from t2sql.evaluation.results import order_matters, remove_distinct, results_match


def test_rows_are_a_multiset_unless_gold_orders():
    gold = [(1, "a"), (2, "b"), (3, "c")]
    shuffled = [(3, "c"), (1, "a"), (2, "b")]
    assert results_match(gold, shuffled, order_matters=False)
    assert not results_match(gold, shuffled, order_matters=True)
    assert results_match(gold, list(gold), order_matters=True)


def test_duplicate_rows_count():
    assert not results_match([(1,), (1,), (2,)], [(1,), (2,), (2,)], order_matters=False)
    assert not results_match([(1,), (1,)], [(1,)], order_matters=False)
    assert results_match([(1,), (2,), (1,)], [(1,), (1,), (2,)], order_matters=False)


def test_column_order_may_differ():
    gold = [("ann", 30, 1.5), ("bob", 40, 2.5)]
    pred = [(30, 1.5, "ann"), (40, 2.5, "bob")]
    assert results_match(gold, pred, order_matters=False)
    assert results_match(gold, pred, order_matters=True)
    # Wider rows use the constrained search over permutations.
    gold4 = [(1, "x", 2.0, None), (2, "y", 3.0, "z")]
    pred4 = [(None, 2.0, "x", 1), ("z", 3.0, "y", 2)]
    assert results_match(gold4, pred4, order_matters=False)
    # A permutation must be the same for every row.
    assert not results_match([(1, 2), (3, 4)], [(2, 1), (3, 4)], order_matters=False)
    assert not results_match([(1, 2)], [(1, 2, 3)], order_matters=False)


def test_float_tolerance():
    assert results_match([(0.1 + 0.2,)], [(0.3,)], order_matters=False)
    assert results_match([(1 / 3,)], [(0.33333333333,)], order_matters=True)
    assert results_match([(2.0,)], [(2,)], order_matters=False)
    assert results_match([(0.30000049999, "a")], [("a", 0.3000005)], order_matters=False)
    assert not results_match([(1.5,)], [(1.51,)], order_matters=False)
    assert not results_match([(100.0,)], [(100.001,)], order_matters=False)


def test_nulls_and_empty_results():
    assert results_match([(None, 1)], [(1, None)], order_matters=False)
    assert not results_match([(None,)], [(0,)], order_matters=False)
    assert results_match([], [], order_matters=True)
    assert not results_match([], [(1,)], order_matters=False)
    assert not results_match([("1",)], [(1,)], order_matters=False)


def test_order_rule_and_distinct_removal():
    assert order_matters("SELECT a FROM t ORDER  BY a")
    assert not order_matters("SELECT a FROM t")
    assert remove_distinct("SELECT DISTINCT a, count(DISTINCT b) FROM t") == "SELECT a, COUNT(b) FROM t"
    assert remove_distinct("SELECT a FROM t") == "SELECT a FROM t"


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL);"
                       "INSERT INTO item VALUES (1, 'pen', 1.5), (2, 'book', 12.0), (3, 'pen', 1.5);")
    conn.close()
    return path


def test_readonly_connection_refuses_writes_and_attach(db, tmp_path):
    conn = connect_readonly(db)
    assert execute(conn, "SELECT count(*) FROM item").rows == [(3,)]
    for sql in ("DELETE FROM item", "INSERT INTO item VALUES (9, 'x', 1)", "DROP TABLE item",
                f"ATTACH DATABASE '{tmp_path / 'other.sqlite'}' AS other", "PRAGMA writable_schema = 1"):
        result = execute(conn, sql)
        assert not result.ok, sql
        assert result.error_kind in ("denied", "runtime"), (sql, result.error)
    assert execute(conn, "SELECT count(*) FROM item").rows == [(3,)]
    assert not (tmp_path / "other.sqlite").exists()
    conn.close()


def test_timeout_and_row_cap(db):
    conn = connect_readonly(db)
    slow = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
    result = execute(conn, slow, timeout_s=0.2)
    assert not result.ok and result.error_kind == "timeout"
    capped = execute(conn, "SELECT * FROM item", row_cap=2)
    assert capped.ok and capped.truncated and len(capped.rows) == 2
    conn.close()
