"""Schema text from tables.json and SQLite files, tables a query reads, and record normalisation."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from t2sql.data.normalize import context_identifiers, normalize_record, normalize_answer, normalize_text
from t2sql.data.schema import coarse_type, quote_identifier, spider_create_tables, sqlite_create_tables, tables_used
from t2sql.evaluation.execution import connect_schema, execute

ROOT = Path(__file__).resolve().parents[2]

ENTRY = {
    "db_id": "shop",
    "table_names_original": ["customer", "orders"],
    "column_names_original": [[-1, "*"], [0, "id"], [0, "Home Town"], [1, "order_id"], [1, "customer_id"]],
    "column_types": ["text", "number", "text", "number", "number"],
    "primary_keys": [1, [3, 4]],
    "foreign_keys": [[4, 1]],
}


def test_spider_create_tables():
    assert spider_create_tables(ENTRY) == (
        'CREATE TABLE customer (id NUMBER PRIMARY KEY, "Home Town" TEXT); '
        "CREATE TABLE orders (order_id NUMBER, customer_id NUMBER, PRIMARY KEY (order_id, customer_id), "
        "FOREIGN KEY (customer_id) REFERENCES customer(id))")
    assert spider_create_tables(ENTRY, only_tables={"ORDERS"}, with_types=False) == \
        "CREATE TABLE orders (order_id, customer_id, PRIMARY KEY (order_id, customer_id))"
    with_samples = spider_create_tables(ENTRY, only_tables=["customer"],
                                        samples={("customer", "home town"): ["Paris", "O'Hare */ x", 3]})
    assert with_samples == ("CREATE TABLE customer (id NUMBER PRIMARY KEY, "
                            "\"Home Town\" TEXT /* 'Paris', 'O''Hare * / x', 3 */)")
    conn = connect_schema(with_samples)
    assert execute(conn, 'SELECT "Home Town" FROM customer').ok
    with pytest.raises(ValueError, match="shop"):
        spider_create_tables({"db_id": "shop", "table_names_original": ["a"]})


def test_sqlite_create_tables(tmp_path):
    db = tmp_path / "t.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE city (id INTEGER PRIMARY KEY, name varchar(20), founded DATE, big BOOLEAN, area REAL);"
        "CREATE TABLE person (pid INT, city_id INT REFERENCES city(id), name TEXT, PRIMARY KEY (pid, name));"
        "INSERT INTO city VALUES (1, 'Oslo', '1048-01-01', 1, 454.0), (2, 'Bergen', '1070-01-01', 0, 465.3),"
        " (3, 'Oslo', NULL, 1, 1.5);")
    conn.commit()
    conn.close()
    assert sqlite_create_tables(db) == (
        "CREATE TABLE city (id NUMBER PRIMARY KEY, name TEXT, founded TIME, big BOOLEAN, area NUMBER); "
        "CREATE TABLE person (pid NUMBER, city_id NUMBER, name TEXT, PRIMARY KEY (pid, name), "
        "FOREIGN KEY (city_id) REFERENCES city(id))")
    shown = sqlite_create_tables(db, sample_values=2)
    assert "name TEXT /* 'Oslo', 'Bergen' */" in shown
    assert "founded TIME /* '1048-01-01', '1070-01-01' */" in shown
    assert "pid NUMBER, " in shown  # an empty table gives no samples
    assert execute(connect_schema(shown), "SELECT city.name FROM city JOIN person ON city.id = person.city_id").ok
    with pytest.raises(FileNotFoundError):
        sqlite_create_tables(tmp_path / "missing.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ValueError, match="junk.sqlite"):
        sqlite_create_tables(junk)


def test_sqlite_create_tables_on_spider_sample():
    db = ROOT / "data" / "spider_sample" / "database" / "musical" / "musical.sqlite"
    text = sqlite_create_tables(db)
    assert text.count("CREATE TABLE") == 2
    assert text.startswith("CREATE TABLE musical (Musical_ID NUMBER PRIMARY KEY, Name TEXT")
    assert execute(connect_schema(text), "SELECT count(*) FROM actor").ok


def test_coarse_types_and_identifiers():
    assert [coarse_type(t) for t in ("INTEGER", "varchar(255)", "DOUBLE", "datetime", "bool", "", "BLOB")] == \
        ["NUMBER", "TEXT", "NUMBER", "TIME", "BOOLEAN", "TEXT", "TEXT"]
    assert quote_identifier("name") == "name"
    assert quote_identifier("order") == '"order"'
    assert quote_identifier("1st_leg") == '"1st_leg"'
    assert quote_identifier('Home "Town"') == '"Home ""Town"""'


def test_tables_used():
    assert tables_used("SELECT count(*) FROM Head") == {"head"}
    sql = ("WITH c AS (SELECT a FROM x) SELECT * FROM c JOIN y ON c.a = y.a "
           "WHERE b IN (SELECT b FROM z) UNION SELECT 1 FROM w")
    assert tables_used(sql) == {"x", "y", "z", "w"}
    with pytest.raises(ValueError, match="does not parse"):
        tables_used("SELECT name FROM")
    with pytest.raises(ValueError, match="not a query"):
        tables_used("DELETE FROM t")


def test_normalize_answer_quotes_and_spaces():
    ctx = 'CREATE TABLE head (name TEXT, "Home Town" TEXT, age NUMBER /* 1, 2 */)'
    assert context_identifiers(ctx) == {"head", "name", "home town", "age"}
    assert normalize_answer('SELECT name FROM head WHERE age  >  56 AND name = "Text"  ;', ctx) == \
        "SELECT name FROM head WHERE age > 56 AND name = 'Text'"
    # a double-quoted name of the schema stays an identifier; spaces inside literals stay as they are
    assert normalize_answer('SELECT "Home Town" FROM head WHERE name = \'A  ,  B\' OR name = "it\'s"', ctx) == \
        'SELECT "Home Town" FROM head WHERE name = \'A  ,  B\' OR name = \'it\'\'s\''
    assert normalize_text("  How   many\n heads? ") == "How many heads?"
    rec = {"id": "x", "question": " a  b ", "context": ctx, "answer": 'SELECT age FROM head WHERE name = "Ann"',
           "db_id": None, "db_path": None, "source": "create_context"}
    out = normalize_record(rec)
    assert out["question"] == "a b" and out["answer"] == "SELECT age FROM head WHERE name = 'Ann'"
    assert rec["question"] == " a  b "  # the input is not modified


def test_normalize_keeps_spider_sample_results():
    from t2sql.data.sources import load_spider

    records, _ = load_spider(str(ROOT / "data" / "spider_sample"), databases=["musical", "dorm_1", "loan_1"])
    changed = 0
    for r in records:
        n = normalize_record(r)
        if n["answer"] != r["answer"]:
            changed += 1
        a, b = execute(r["db_path"], r["answer"]), execute(r["db_path"], n["answer"])
        assert a.ok and b.ok and sorted(map(repr, a.rows)) == sorted(map(repr, b.rows)), r["answer"]
    assert changed > 10
