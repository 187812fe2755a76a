"""The oracle schema: only what the gold query reads, and the gold query still runs on it."""

from pathlib import Path

import pytest

from t2sql.data.sources import load_spider
from t2sql.evaluation.execution import connect_schema, execute
from t2sql.evaluation.oracle import gold_items, gold_only_context
from t2sql.linking import parse_context

SPIDER = Path(__file__).resolve().parents[2] / "data" / "spider_sample"
CTX = ("CREATE TABLE singer (singer_id NUMBER PRIMARY KEY, name TEXT /* 'Joe', 'Ann' */, country TEXT, age NUMBER); "
       "CREATE TABLE concert (concert_id NUMBER, singer_id NUMBER, year TEXT, "
       "FOREIGN KEY (singer_id) REFERENCES singer(singer_id)); CREATE TABLE stadium (stadium_id NUMBER, name TEXT)")


def test_gold_items_resolve_aliases_and_keep_join_keys():
    tables, cols = gold_items("SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id "
                              "WHERE T2.year = '2014'", CTX)
    assert tables == ["singer", "concert"]
    assert cols == {("singer", "name"), ("singer", "singer_id"), ("concert", "singer_id"), ("concert", "year")}
    # unqualified names belong to the tables read, not to other tables that have them
    assert gold_items("SELECT name FROM stadium", CTX) == (["stadium"], {("stadium", "name")})
    # a table none of whose columns is named keeps its first one, so it can be shown
    assert gold_items("SELECT count(*) FROM concert", CTX) == (["concert"], {("concert", "concert_id")})
    with pytest.raises(ValueError, match="reads no table"):
        gold_items("SELECT 1", CTX)


def test_gold_only_context_keeps_samples_and_keys_and_drops_the_rest():
    ctx = gold_only_context("SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id",
                            CTX)
    schema = parse_context(ctx)
    assert [t.name for t in schema.tables] == ["singer", "concert"]
    assert [c.name for c in schema.tables[0].columns] == ["singer_id", "name"]
    assert schema.tables[0].columns[1].samples == ["'Joe'", "'Ann'"]
    assert schema.foreign_keys == [(("concert", "singer_id"), ("singer", "singer_id"))]
    assert "country" not in ctx and "stadium" not in ctx


def test_every_gold_query_of_the_sample_runs_on_its_oracle_schema():
    records, _ = load_spider(str(SPIDER))
    shrunk = 0
    for rec in records:
        ctx = gold_only_context(rec["answer"], rec["context"])
        assert len(ctx) <= len(rec["context"])
        shrunk += len(ctx) < len(rec["context"])
        conn = connect_schema(ctx)
        try:
            assert execute(conn, rec["answer"], timeout_s=2, row_cap=5).ok, (rec["answer"], ctx)
        finally:
            conn.close()
    assert len(records) > 1000 and shrunk > 0.9 * len(records)
