"""Error categories on crafted predictions over a small database and over a bare schema."""

import sqlite3

import pytest

from t2sql.evaluation import ERROR_CATEGORIES, ExampleScorer, ScoringOptions

SCHEMA = """
CREATE TABLE customer (customer_id INTEGER PRIMARY KEY, name TEXT, city TEXT, age INTEGER);
CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customer(customer_id),
                     amount REAL, status TEXT);
"""
ROWS = """
INSERT INTO customer VALUES (1, 'Ann', 'Paris', 34), (2, 'Bob', 'Lyon', 45), (3, 'Cid', 'Paris', 29),
                            (4, 'Dee', 'Nice', 51);
INSERT INTO orders VALUES (1, 1, 10.5, 'paid'), (2, 1, 99.0, 'open'), (3, 2, 5.25, 'paid'), (4, 3, 40.0, 'paid'),
                          (5, 4, 12.0, 'open'), (6, 2, 70.0, 'paid');
"""


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("cat") / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA + ROWS)
    conn.close()
    return str(path)


CASES = [
    ("SELECT name FROM customer WHERE city = 'Paris'", "SELECT c.name FROM customer c WHERE c.city = 'Paris'",
     "correct"),
    ("SELECT name FROM customer", "SELECT name FROM customer WHERE", "does_not_parse"),
    ("SELECT name FROM customer", "SELECT name FROM clients", "unknown_table"),
    ("SELECT name FROM customer", "SELECT fullname FROM customer", "unknown_column"),
    ("SELECT count(*) FROM customer", "SELECT sum(*) FROM customer", "runtime_error"),
    ("SELECT count(*) FROM customer",
     "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c", "timeout"),
    ("SELECT name FROM customer WHERE age > 30", "SELECT city FROM customer WHERE age > 30", "wrong_columns"),
    ("SELECT max(age) FROM customer", "SELECT min(age) FROM customer", "wrong_aggregation"),
    ("SELECT name FROM customer WHERE age > 30 AND city = 'Paris'", "SELECT name FROM customer WHERE age > 30",
     "wrong_condition"),
    ("SELECT name FROM customer WHERE city = 'Paris'", "SELECT name FROM customer WHERE city = 'Lyon'",
     "wrong_literal"),
    ("SELECT T1.name FROM customer AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id WHERE T2.amount > 50",
     "SELECT name FROM customer WHERE age > 50", "wrong_join"),
    ("SELECT city, count(*) FROM customer GROUP BY city", "SELECT city, count(*) FROM customer GROUP BY age",
     "wrong_grouping"),
    ("SELECT name FROM customer ORDER BY age DESC LIMIT 1", "SELECT name FROM customer ORDER BY age ASC LIMIT 1",
     "wrong_ordering"),
    ("SELECT name FROM customer ORDER BY age DESC LIMIT 1", "SELECT name FROM customer ORDER BY age DESC LIMIT 2",
     "wrong_ordering"),
]


@pytest.mark.parametrize("gold, pred, expected", CASES, ids=[c[2] + str(i) for i, c in enumerate(CASES)])
def test_category_on_a_database(db, gold, pred, expected):
    scorer = ExampleScorer(ScoringOptions(timeout_s=0.3))
    record = {"id": "x", "question": "q", "context": SCHEMA, "answer": gold, "db_id": "shop", "db_path": db}
    line, _ = scorer.score(record, pred)
    scorer.close()
    assert line["error_category"] == expected, line
    assert line["correct"] == (expected == "correct")
    assert expected in ERROR_CATEGORIES


def test_categories_without_a_database():
    scorer = ExampleScorer(ScoringOptions(fuzz_databases=2))
    record = {"id": "x", "question": "q", "context": SCHEMA, "answer": "SELECT name FROM customer WHERE age > 40",
              "db_id": None, "db_path": None}
    assert scorer.score(record, "SELECT name FROM customer WHERE agee > 40")[0]["error_category"] == "unknown_column"
    assert scorer.score(record, "SELECT name FROM customers")[0]["error_category"] == "unknown_table"
    assert scorer.score(record, "SELECT name FROM customer WHERE age > 40")[0]["error_category"] == "correct"
    line = scorer.score(record, "SELECT name FROM customer WHERE age < 40")[0]
    assert line["eval_mode"] == "fuzz" and line["error_category"] == "wrong_condition"
    scorer.close()
