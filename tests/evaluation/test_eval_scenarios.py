"""Scenario files: the YAML format, the loader, the atomic appender and Wilson intervals."""

import sqlite3
import threading

import pytest
import yaml

from t2sql.evaluation import (ScenarioError, append_scenario_example, evaluate_predictions, load_scenarios,
                              wilson_interval)


@pytest.fixture()
def shop(tmp_path):
    path = tmp_path / "data" / "shop.sqlite"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT);"
                       "INSERT INTO customers VALUES (1, 'Ann', 'Paris'), (2, 'Bob', 'Lyon');")
    conn.close()
    return path


def test_append_creates_file_and_load_round_trips(tmp_path, shop):
    path = tmp_path / "scenarios" / "sales.yaml"
    n = append_scenario_example(path, name="sales-team", database="../data/shop.sqlite",
                                question="How many customers are there?", gold_sql="SELECT count(*) FROM customers")
    assert n == 1
    n = append_scenario_example(path, name="sales-team", database="../data/shop.sqlite",
                                question="Customers in Paris?",
                                gold_sql="SELECT name FROM customers WHERE city = 'Paris'",
                                category="wrong_literal", model_sql="SELECT name FROM customers WHERE city = 'paris'")
    assert n == 2
    raw = yaml.safe_load(path.read_text())
    assert raw["name"] == "sales-team" and raw["database"] == "../data/shop.sqlite"
    assert raw["examples"][1] == {"question": "Customers in Paris?",
                                  "gold_sql": "SELECT name FROM customers WHERE city = 'Paris'",
                                  "category": "wrong_literal",
                                  "model_sql": "SELECT name FROM customers WHERE city = 'paris'"}
    records = load_scenarios(path)
    assert [r["question"] for r in records] == ["How many customers are there?", "Customers in Paris?"]
    first = records[0]
    assert first["source"] == "scenario" and first["scenario"] == "sales-team"
    assert first["answer"] == "SELECT count(*) FROM customers"
    assert first["db_path"] == str(shop.resolve()) and first["db_id"] == "shop"
    assert "CREATE TABLE customers" in first["context"]
    assert records[1]["expert_category"] == "wrong_literal" and "model_sql" in records[1]


def test_scenario_records_evaluate_with_confidence_intervals(tmp_path, shop):
    path = tmp_path / "s.yaml"
    for q, sql in [("all", "SELECT name FROM customers"), ("paris", "SELECT name FROM customers WHERE city = 'Paris'")]:
        append_scenario_example(path, name="sales", database=str(shop), question=q, gold_sql=sql)
    records = load_scenarios(path)
    m = evaluate_predictions(records, ["SELECT name FROM customers", "SELECT name FROM customers"], None,
                             tmp_path / "eval")
    s = m["by_scenario"]["sales"]
    assert s["kind"] == "scenario" and s["n"] == 2 and s["correct"] == 1 and s["accuracy"] == 0.5
    assert (s["ci_low"], s["ci_high"]) == pytest.approx(wilson_interval(1, 2))


def test_bad_files_are_refused_with_the_field_named(tmp_path, shop):
    path = tmp_path / "s.yaml"
    append_scenario_example(path, name="a", database=str(shop), question="q", gold_sql="SELECT 1")
    with pytest.raises(ScenarioError, match="name"):
        append_scenario_example(path, name="b", database=str(shop), question="q", gold_sql="SELECT 1")
    with pytest.raises(ScenarioError, match="category"):
        append_scenario_example(path, name="a", database=str(shop), question="q", gold_sql="SELECT 1",
                                category="not_a_category")
    with pytest.raises(ScenarioError, match="gold_sql"):
        append_scenario_example(path, name="a", database=str(shop), question="q", gold_sql="  ")
    missing_db = tmp_path / "m.yaml"
    missing_db.write_text("name: x\ndatabase: nowhere.sqlite\nexamples: []\n")
    with pytest.raises(ScenarioError, match="nowhere.sqlite"):
        load_scenarios(missing_db)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: x\ndatabase: {shop}\nexamples:\n  - question: q\n")
    with pytest.raises(ScenarioError, match=r"examples\[0\].gold_sql"):
        load_scenarios(bad)
    with pytest.raises(ScenarioError, match="not found"):
        load_scenarios(tmp_path / "absent.yaml")


def test_concurrent_appends_lose_nothing(tmp_path, shop):
    path = tmp_path / "s.yaml"

    def work(k):
        for i in range(8):
            append_scenario_example(path, name="team", database=str(shop), question=f"q{k}-{i}", gold_sql="SELECT 1")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(yaml.safe_load(path.read_text())["examples"]) == 24


def test_wilson_interval_values():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert (low, high) == pytest.approx((0.7225, 1.0), abs=1e-4)
