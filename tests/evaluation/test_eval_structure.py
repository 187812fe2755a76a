"""Spider's exact-set match, component scores and hardness on sqlglot, checked against the official rules."""

import json
from pathlib import Path

import pytest

from t2sql.evaluation.schema import schema_from_context, schema_from_sqlite, schema_from_tables_json
from t2sql.evaluation.structure import (SqlStructureError, build_structure, exact_set_match, hardness,
                                        normalize_sql, query_types)

ROOT = Path(__file__).resolve().parents[2]
SPIDER = ROOT / "data" / "spider_sample"
REFERENCE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "eval" / "spider_reference.json").read_text())

CONTEXT = """
CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name TEXT, year INTEGER);
CREATE TABLE singer_in_concert (concert_id INTEGER REFERENCES concert(concert_id),
                                singer_id INTEGER REFERENCES singer(singer_id));
"""


@pytest.fixture(scope="module")
def schema():
    return schema_from_context(CONTEXT)


def match(pred, gold, schema):
    return exact_set_match(build_structure(pred, schema), build_structure(gold, schema), schema)[0]


@pytest.mark.parametrize("pred, gold", [
    ("SELECT T1.name FROM singer AS T1", "SELECT name FROM singer"),
    ("select NAME from Singer where AGE > 20", "SELECT name FROM singer WHERE age > 20"),
    ("SELECT name FROM singer WHERE age > 99", "SELECT name FROM singer WHERE age > 20"),  # values ignored
    ("SELECT name FROM singer WHERE country = 'France'", 'SELECT name FROM singer WHERE country = "Spain"'),
    ("SELECT age, name FROM singer", "SELECT name, age FROM singer"),  # select is a set
    ("SELECT name FROM singer WHERE age > 1 AND country = 'x'",
     "SELECT name FROM singer WHERE country = 'y' AND age > 2"),
    ("SELECT count(*) AS n FROM singer", "SELECT count(*) FROM singer"),
    ("SELECT DISTINCT name FROM singer", "SELECT name FROM singer"),  # DISTINCT ignored, as in Spider
    ("SELECT T2.name FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id",
     "SELECT s.name FROM singer AS s JOIN singer_in_concert AS sc ON s.singer_id = sc.singer_id"),
    ("SELECT name FROM singer ORDER BY age DESC LIMIT 3", "SELECT name FROM singer ORDER BY age DESC LIMIT 1"),
])
def test_same_query_written_differently_matches(pred, gold, schema):
    assert match(pred, gold, schema)


@pytest.mark.parametrize("pred, gold", [
    ("SELECT country FROM singer", "SELECT name FROM singer"),  # a different column
    ("SELECT max(age) FROM singer", "SELECT min(age) FROM singer"),
    ("SELECT name FROM singer WHERE age < 20", "SELECT name FROM singer WHERE age > 20"),
    ("SELECT name FROM singer", "SELECT name FROM singer WHERE age > 20"),
    ("SELECT name FROM singer WHERE age > 1 OR country = 'x'",
     "SELECT name FROM singer WHERE age > 1 AND country = 'x'"),
    ("SELECT name FROM singer ORDER BY age ASC", "SELECT name FROM singer ORDER BY age DESC"),
    ("SELECT name FROM singer ORDER BY age", "SELECT name FROM singer ORDER BY age LIMIT 1"),
    ("SELECT country, count(*) FROM singer GROUP BY country", "SELECT country, count(*) FROM singer"),
    ("SELECT name FROM singer", "SELECT name FROM singer INTERSECT SELECT name FROM singer WHERE age > 3"),
    ("SELECT T2.name FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id",
     "SELECT name FROM singer"),
])
def test_different_queries_do_not_match(pred, gold, schema):
    assert not match(pred, gold, schema)


def test_unknown_names_and_bad_sql_raise(schema):
    with pytest.raises(SqlStructureError) as err:
        build_structure("SELECT name FROM singers", schema)
    assert err.value.kind == "unknown_table"
    with pytest.raises(SqlStructureError) as err:
        build_structure("SELECT nme FROM singer", schema)
    assert err.value.kind == "unknown_column"
    with pytest.raises(SqlStructureError) as err:
        build_structure("SELECT FROM WHERE", schema)
    assert err.value.kind == "parse"
    # A double-quoted name that is no column is a string (SQLite's rule), not an error.
    s = build_structure('SELECT name FROM singer WHERE country = "France"', schema)
    assert s["where"][0][3] == '"France"'


def test_unparsable_prediction_scores_as_empty(schema):
    ok, scores = exact_set_match(None, build_structure("SELECT name FROM singer", schema), schema)
    assert not ok and scores["select"]["f1"] == 0


def test_hardness_equals_official_labels_on_every_sample_question():
    questions = json.loads((SPIDER / "train_spider.json").read_text())
    labels = REFERENCE["hardness"]
    assert len(questions) == len(labels) == 1486
    for q, expected in zip(questions, labels):
        schema = schema_from_sqlite(SPIDER / "database" / q["db_id"] / f"{q['db_id']}.sqlite")
        assert hardness(build_structure(q["query"], schema)) == expected, q["query"]


def test_exact_set_match_equals_official_verdicts():
    schemas = {e["db_id"]: schema_from_tables_json(e) for e in json.loads((SPIDER / "tables.json").read_text())}
    pairs = REFERENCE["exact_pairs"]
    assert sum(p["exact"] for p in pairs) == 150 and len(pairs) == 300
    for p in pairs:
        schema = schemas[p["db_id"]]
        gold = build_structure(p["gold"], schema)
        try:
            pred = build_structure(p["pred"], schema)
        except SqlStructureError:
            pred = None
        assert exact_set_match(pred, gold, schema)[0] == bool(p["exact"]), (p["gold"], p["pred"])


def test_normalized_exact_match_and_query_types(schema):
    assert normalize_sql("select  Name from SINGER ;") == normalize_sql("SELECT name FROM singer")
    assert normalize_sql("SELECT name FROM singer WHERE country = 'France'") != \
        normalize_sql("SELECT name FROM singer WHERE country = 'france'")
    assert normalize_sql("SELEC broken 'Text'") == "selec broken 'Text'"

    def types(sql):
        return query_types(build_structure(sql, schema))

    assert types("SELECT name FROM singer") == ["lookup"]
    assert types("SELECT name FROM singer WHERE age > 3") == ["filter"]
    assert types("SELECT avg(age) FROM singer") == ["aggregate"]
    assert types("SELECT country, count(*) FROM singer GROUP BY country") == ["group_by_report"]
    assert types("SELECT name FROM singer ORDER BY age DESC LIMIT 3") == ["top_k_ranking"]
    assert types("SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id") \
        == ["multi_table_join"]
    assert types("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)") == ["nested_or_set", "filter"]


def test_foreign_keys_from_context(schema):
    kmap = schema.foreign_key_map()
    assert kmap["__singer_in_concert.singer_id__"] == kmap["__singer.singer_id__"]
    assert kmap["__singer_in_concert.concert_id__"] == "__concert.concert_id__"
