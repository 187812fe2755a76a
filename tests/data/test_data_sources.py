"""Loaders: records in the project's shape, malformed rows set aside with their reason, clear file errors."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from t2sql.config import ConfigError, SourceConfig
from t2sql.data import DataSourceError, load_source
from t2sql.data.sources import load_create_context, load_spider, load_wikisql, snake_case, wikisql_table_name
from t2sql.evaluation.execution import connect_schema, execute

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "data"
SPIDER_SAMPLE = ROOT / "data" / "spider_sample"
RECORD_KEYS = {"id", "question", "context", "answer", "db_id", "db_path", "source"}
REJECT_KEYS = {"source", "file", "row", "reason", "detail", "raw"}


def reasons(rejects):
    return Counter(r["reason"] for r in rejects)


# --------------------------------------------------------------------------- sql-create-context

CC_REASONS = {
    "missing field: answer": 1, "empty field: question": 1, "wrong type: answer": 1, "unparseable SQL": 1,
    "context has no CREATE TABLE": 1, "unknown table in SQL": 1, "invalid JSON": 1, "not an object": 1,
    "SQL is not a single query": 1,
}


def test_create_context_jsonl_records_and_rejects():
    records, rejects = load_create_context(str(FIX / "create_context" / "rows.jsonl"))
    assert len(records) == 7 and len(rejects) == 9
    assert reasons(rejects) == CC_REASONS
    assert all(set(r) == RECORD_KEYS for r in records)
    assert all(set(r) == REJECT_KEYS for r in rejects)
    assert {r["source"] for r in records} == {"create_context"}
    assert all(r["db_id"] is None and r["db_path"] is None for r in records)
    assert records[0] == {
        "id": "create_context/rows/0", "question": "How many heads of the departments are older than 56 ?",
        "context": "CREATE TABLE head (age INTEGER)", "answer": "SELECT COUNT(*) FROM head WHERE age > 56",
        "db_id": None, "db_path": None, "source": "create_context"}
    # rows are numbered by line, so a reject can be found in the file
    by_reason = {r["reason"]: r for r in rejects}
    assert by_reason["invalid JSON"]["row"] == 13
    assert by_reason["invalid JSON"]["raw"].startswith('{"question": "Which line is broken?"')
    assert by_reason["wrong type: answer"]["raw"]["answer"] == 42
    assert by_reason["not an object"]["raw"] == ["not", "an", "object"]
    assert all(r["file"].endswith("rows.jsonl") for r in rejects)


def test_create_context_json_and_parquet_agree(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records, rejects = load_create_context(str(FIX / "create_context" / "rows.json"))
    assert len(records) == 6
    assert [(r["row"], r["reason"]) for r in rejects] == [(6, "missing field: context")]
    rows = json.loads((FIX / "create_context" / "rows.json").read_text())[:6]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    from_parquet, none = load_create_context(str(tmp_path / "rows.parquet"))
    assert none == []
    strip = lambda rs: [(r["question"], r["context"], r["answer"]) for r in rs]  # noqa: E731
    assert strip(from_parquet) == strip(records)


def test_create_context_unreadable_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("[{not json")
    with pytest.raises(DataSourceError, match="broken.json"):
        load_create_context(str(bad))
    not_list = tmp_path / "obj.json"
    not_list.write_text('{"question": "q"}')
    with pytest.raises(DataSourceError, match="obj.json.*list"):
        load_create_context(str(not_list))
    with pytest.raises(DataSourceError, match="missing.jsonl"):
        load_create_context(str(tmp_path / "missing.jsonl"))
    odd = tmp_path / "rows.csv"
    odd.write_text("question,context,answer\n")
    with pytest.raises(DataSourceError, match="rows.csv.*unsupported"):
        load_create_context(str(odd))


def test_limit_is_a_seeded_subset():
    path = str(FIX / "create_context" / "rows.jsonl")
    full, _ = load_create_context(path)
    a, _ = load_create_context(path, limit=3, seed=1)
    b, _ = load_create_context(path, limit=3, seed=1)
    ids = lambda rs: [r["id"] for r in rs]  # noqa: E731
    assert len(a) == 3 and ids(a) == ids(b)
    assert set(ids(a)) <= set(ids(full))
    assert ids(a) == sorted(ids(a), key=ids(full).index)  # file order kept
    others = {tuple(ids(load_create_context(path, limit=3, seed=s)[0])) for s in range(2, 8)}
    assert len(others | {tuple(ids(a))}) > 1


# --------------------------------------------------------------------------- Spider


def test_spider_mini_records_and_rejects():
    records, rejects = load_spider(str(FIX / "spider_mini"))
    expected_ids = [f"spider/train_spider/{i}" for i in range(5)] + ["spider/dev/0", "spider/dev/1"]
    assert [r["id"] for r in records] == expected_ids
    assert reasons(rejects) == {"unknown db_id": 1, "missing field: query": 1, "empty field: query": 1,
                                "wrong type: question": 1, "unparseable SQL": 1, "unknown table in SQL": 1,
                                "not an object": 1}
    assert [r["row"] for r in rejects] == [5, 6, 7, 8, 9, 10, 11]
    assert all(r["db_path"] is None for r in records)  # the fixture has no SQLite files
    shop = records[0]["context"]
    assert shop == (
        'CREATE TABLE customer (id NUMBER PRIMARY KEY, name TEXT, "Home Town" TEXT); '
        "CREATE TABLE orders (id NUMBER PRIMARY KEY, customer_id NUMBER, placed TIME, "
        "FOREIGN KEY (customer_id) REFERENCES customer(id)); "
        'CREATE TABLE "order line" (order_id NUMBER, item TEXT, qty NUMBER, PRIMARY KEY (order_id, item), '
        "FOREIGN KEY (order_id) REFERENCES orders(id))")
    assert records[3]["context"] == 'CREATE TABLE animal (animal_id NUMBER PRIMARY KEY, name TEXT, "order" TEXT)'
    for r in records:
        assert execute(connect_schema(r["context"]), r["answer"]).ok, r["answer"]


def test_spider_options_used_tables_filter_files():
    records, rejects = load_spider(str(FIX / "spider_mini"), files=["train_spider.json"], databases=["shop"],
                                   schema_mode="used", with_types=False)
    assert [r["db_id"] for r in records] == ["shop"] * 3
    assert records[0]["context"] == 'CREATE TABLE customer (id PRIMARY KEY, name, "Home Town")'
    assert records[2]["context"].count("CREATE TABLE") == 3  # the join reads all three tables
    assert "unknown db_id" in reasons(rejects)  # a db missing from tables.json is still reported
    with pytest.raises(DataSourceError, match="databases not found: nowhere"):
        load_spider(str(FIX / "spider_mini"), databases=["nowhere"])
    with pytest.raises(DataSourceError, match="absent.json"):
        load_spider(str(FIX / "spider_mini"), files=["absent.json"])
    with pytest.raises(DataSourceError, match="Spider directory not found"):
        load_spider(str(FIX / "no_such_dir"))


@pytest.fixture(scope="module")
def spider_sample():
    return load_spider(str(SPIDER_SAMPLE))


def test_spider_sample(spider_sample):
    records, rejects = spider_sample
    assert len(records) == 1486 and rejects == []
    assert len({r["db_id"] for r in records}) == 24
    assert all(Path(r["db_path"]).is_absolute() and Path(r["db_path"]).is_file() for r in records)
    first = records[0]
    assert first["db_id"] == "musical" and first["answer"] == "SELECT count(*) FROM actor"
    assert first["db_path"] == str((SPIDER_SAMPLE / "database" / "musical" / "musical.sqlite").resolve())
    assert first["context"].startswith("CREATE TABLE musical (Musical_ID NUMBER PRIMARY KEY, Name TEXT, Year NUMBER")
    assert ("CREATE TABLE actor (Actor_ID NUMBER PRIMARY KEY, Name TEXT, Musical_ID NUMBER, Character TEXT, "
            "Duration TEXT, age NUMBER, FOREIGN KEY (Musical_ID) REFERENCES actor(Actor_ID))") in first["context"]


def test_spider_sample_values_come_from_the_database():
    records, _ = load_spider(str(SPIDER_SAMPLE), databases=["musical"], sample_values=2, limit=5, seed=0)
    assert len(records) == 5
    ctx = records[0]["context"]
    assert "Name TEXT /* 'The Phantom of the Opera', 'Les Misérables' */" in ctx
    assert execute(connect_schema(ctx), records[0]["answer"]).ok


# --------------------------------------------------------------------------- WikiSQL


def test_wikisql_fixture():
    records, rejects = load_wikisql(str(FIX / "wikisql"))
    assert len(records) == 20 and rejects == []
    assert records[0] == {
        "id": "wikisql/dev/0", "question": "What position does the player who played for Butler CC (KS) play?",
        "context": "CREATE TABLE table_1_10015132_11 (position VARCHAR, school_club_team VARCHAR)",
        "answer": "SELECT position FROM table_1_10015132_11 WHERE school_club_team = 'Butler CC (KS)'",
        "db_id": "1-10015132-11", "db_path": None, "source": "wikisql"}
    by_answer = {r["answer"]: r["context"] for r in records}
    # COUNT, quoted text values, numbers for WikiSQL's numeric values with INTEGER/REAL columns
    assert by_answer["SELECT COUNT(school_club_team) FROM table_1_10015132_11 WHERE no = '3'"] == \
        "CREATE TABLE table_1_10015132_11 (school_club_team VARCHAR, no VARCHAR)"
    assert by_answer["SELECT SUM(losses) FROM table_2_10098068_6 WHERE wins < 2 AND rank = 10 AND appearances > 3"] \
        == "CREATE TABLE table_2_10098068_6 (losses INTEGER, wins INTEGER, rank INTEGER, appearances INTEGER)"
    assert by_answer["SELECT district FROM table_1_10342194_3 WHERE total_amount_of_trees < 150817.6878461314 "
                     "AND amount_of_old_trees = '1,928 (1.89%)'"].endswith("total_amount_of_trees REAL, "
                                                                            "amount_of_old_trees VARCHAR)")
    assert "SELECT capital_exonym FROM table_1_1008653_1 WHERE capital_endonym = 'St. John''s'" in by_answer
    assert 'SELECT COUNT("2nd_leg") FROM table_1_1061075_1 WHERE aggregate = \'7-2\'' in by_answer
    assert "SELECT MAX(pick_number) FROM table_1_10975034_2 WHERE college = 'Northwestern'" in by_answer
    for r in records:
        assert execute(connect_schema(r["context"]), r["answer"]).ok, r["answer"]


def test_wikisql_malformed_rows():
    records, rejects = load_wikisql(str(FIX / "wikisql"), files=["malformed.jsonl"])
    assert [r["answer"] for r in records] == ["SELECT team FROM table_1_100_1 WHERE year = 1999"]
    assert records[0]["context"] == "CREATE TABLE table_1_100_1 (team VARCHAR, year INTEGER)"
    assert reasons(rejects) == {"unknown aggregation": 1, "unknown operator": 1, "empty field: sql.sel": 1,
                                "empty column name": 2, "invalid JSON": 1, "missing field: sql": 1,
                                "empty field: question": 1, "wrong type: sql.sel": 1}
    assert [r["row"] for r in rejects] == list(range(1, 10))


def test_wikisql_names():
    assert wikisql_table_name("1-10015132-11") == "table_1_10015132_11"
    assert snake_case("School/Club Team") == "school_club_team"
    assert snake_case("No.") == "no"
    assert snake_case("% growth (2000–2008)") == "percent_growth_2000_2008"
    assert snake_case("Obama#") == "obama_number"
    assert snake_case("N°") == "n"
    assert snake_case("×") == ""


# --------------------------------------------------------------------------- load_source


def test_load_source_dispatch_and_env(monkeypatch):
    monkeypatch.setenv("T2SQL_DATA_DIR", str(FIX))
    records, rejects = load_source(SourceConfig(kind="wikisql", path="${T2SQL_DATA_DIR}/wikisql", limit=5), seed=3)
    assert len(records) == 5 and rejects == []
    records, _ = load_source(SourceConfig(kind="create_context", path=str(FIX / "create_context" / "rows.json")))
    assert len(records) == 6
    monkeypatch.delenv("T2SQL_DATA_DIR")
    with pytest.raises(ConfigError, match="T2SQL_DATA_DIR"):
        load_source(SourceConfig(kind="spider", path="${T2SQL_DATA_DIR}/spider"))
    with pytest.raises(ValueError, match="only for spider and wikisql"):
        SourceConfig(kind="create_context", path="x.jsonl", databases=["a"])


@pytest.mark.skipif(not os.environ.get("T2SQL_DATA_DIR"), reason="T2SQL_DATA_DIR is not set")
def test_real_data_counts():
    data = Path(os.environ["T2SQL_DATA_DIR"])
    records, rejects = load_spider(str(data / "spider"), schema_mode="used")
    assert len(records) + len(rejects) == 7000
    assert len(rejects) <= 10
    records, rejects = load_wikisql(str(data / "wikisql"))
    assert len(records) + len(rejects) == 8467
    assert len(rejects) <= 20
