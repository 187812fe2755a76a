"""Monitoring: every question logged, dashboard figures, plot, CSV, training and scenario exports, expert review."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest
import yaml

from t2sql.evaluation.scenarios import load_scenarios
from webui.store import MonitoringStore, normalise_question, percentile
from webui.testing import SPIDER_SAMPLE


def translate(client, question, database="student_1"):
    r = client.post("/api/translate", json={"question": question, "database": database})
    assert r.status_code == 200, r.json
    return r.json


@pytest.fixture
def traffic(client):
    """Four questions on student_1 (one a repeat; one, asked on the page, gets SQL that fails) and one on wrestler."""
    ok1 = translate(client, "How many students are there?")
    ok2 = translate(client, "Find the grade taught in classroom 103.")
    client.post("/api/translate", json={"question": "How many students are there?", "database": "student_1"})
    loc = client.post("/ask", data={"question": "Which teacher is the oldest?", "database": "student_1"}).headers[
        "Location"]
    ok3 = translate(client, "How many wrestlers are there?", "wrestler")
    return {"ok": [ok1["id"], ok2["id"], ok3["id"]], "loc": loc, "fail": int(loc.rsplit("/", 1)[1])}


def login(client):
    assert client.post("/auth/login", data={"username": "admin", "password": "s3cret"}).status_code == 302


def test_every_question_is_logged_with_its_fields(app, traffic):
    store = app.extensions["t2sql.store"]
    rows = list(store.rows())
    assert len(rows) == 5
    first = rows[0]
    assert first["database"] == "student_1" and first["question"] == "How many students are there?"
    assert first["sql"] == "SELECT count(*) FROM list" and first["success"] == 1 and first["model"] == "run-a"
    assert len(first["schema_hash"]) == 16 and first["latency_ms"] >= 0 and first["timestamp"].endswith("+00:00")
    assert [r["cached"] for r in rows] == [0, 0, 1, 0, 0]
    assert [r["origin"] for r in rows] == ["api", "api", "api", "page", "api"]
    assert [r["success"] for r in rows] == [1, 1, 1, 0, 1]
    fail = store.get(traffic["fail"])
    assert fail["sql"] == "SELECT oldest FROM list" and fail["error_category"] == "unknown_column"
    assert "no such column: oldest" in fail["error"]


def test_dashboard_figures(app, client, traffic):
    store = app.extensions["t2sql.store"]
    s = store.summary()
    assert s["n"] == 5 and s["success_rate"] == pytest.approx(4 / 5) and s["cached_rate"] == pytest.approx(1 / 5)
    per = {d["database"]: d for d in store.per_database()}
    assert per["student_1"]["n"] == 4 and per["student_1"]["success_rate"] == 0.75
    assert per["wrestler"]["n"] == 1 and per["wrestler"]["success_rate"] == 1.0
    page = client.get("/monitoring").get_data(as_text=True)
    assert '<div class="metric-value">5</div>' in page and "80.0%" in page and "20.0%" in page
    assert 'id="per-database"' in page and "75.0%" in page
    one = client.get("/monitoring?database=student_1").get_data(as_text=True)
    assert '<div class="metric-value">4</div>' in one and "75.0%" in one and "25.0%" in one
    series = store.timeseries()
    assert sum(p["n"] for p in series) == 5
    assert sum(p["success_rate"] * p["n"] for p in series) == pytest.approx(4)


def test_plot_is_a_png(client, traffic):
    for query in ("?database=student_1&period=all", "?database=nothing"):
        r = client.get("/monitoring/plot.png" + query)
        assert r.status_code == 200 and r.mimetype == "image/png" and r.data[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_export(client, traffic):
    r = client.get("/monitoring/export.csv?period=all")
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert len(rows) == 5
    assert rows[0]["question"] == "How many students are there?" and rows[0]["success"] == "1"
    assert {"timestamp", "database", "sql", "error_category", "latency_ms", "model", "feedback",
            "corrected_sql"} <= set(rows[0])
    only = list(csv.DictReader(io.StringIO(client.get("/monitoring/export.csv?database=wrestler").get_data(
        as_text=True))))
    assert [r["database"] for r in only] == ["wrestler"]


def test_corrections_export_as_training_records_and_scenarios(client, traffic):
    loc = traffic["loc"]
    client.post(f"{loc}/run", data={"sql": "SELECT lastname FROM teachers LIMIT 1", "action": "save"})
    schema = "CREATE TABLE singer (id NUMBER, name TEXT)"
    r = client.post("/ask", data={"question": "Names of singers?", "mode": "schema", "schema": schema})
    client.post(f"{r.headers['Location']}/run", data={"sql": "SELECT name FROM singer", "action": "save"})

    lines = client.get("/monitoring/export/training.jsonl").get_data(as_text=True).splitlines()
    records = [json.loads(x) for x in lines]
    assert len(records) == 2
    db_rec, schema_rec = records
    assert set(db_rec) == {"id", "question", "context", "answer", "db_id", "db_path", "source"}
    assert db_rec["answer"] == "SELECT lastname FROM teachers LIMIT 1" and db_rec["db_id"] == "student_1"
    assert db_rec["db_path"].endswith("student_1.sqlite") and db_rec["context"].startswith("CREATE TABLE list")
    assert db_rec["source"] == "spider"
    assert schema_rec["context"] == schema and schema_rec["db_id"] is None and schema_rec["source"] == "create_context"

    text = client.get("/monitoring/export/scenario/student_1.yaml").get_data(as_text=True)
    data = yaml.safe_load(text)
    assert data["name"] == "webui-student_1" and data["database"].endswith("student_1.sqlite")
    assert data["examples"] == [{"question": "Which teacher is the oldest?",
                                 "gold_sql": "SELECT lastname FROM teachers LIMIT 1",
                                 "model_sql": "SELECT oldest FROM list"}]
    assert client.get("/monitoring/export/scenario/wrestler.yaml").status_code == 404
    zf = zipfile.ZipFile(io.BytesIO(client.get("/monitoring/export/scenarios.zip").data))
    assert zf.namelist() == ["scenarios/webui-student_1.yaml"]


def test_review_saves_gold_sql_in_the_scenario_format(app, client, traffic, tmp_path):
    store = app.extensions["t2sql.store"]
    failed = traffic["fail"]
    client.post(f"/ask/{traffic['ok'][1]}/feedback", data={"value": "down"})
    assert client.get("/review").status_code == 302  # experts log in
    login(client)
    page = client.get("/review").get_data(as_text=True)
    assert f'id="review-{failed}"' in page and f'id="review-{traffic["ok"][1]}"' in page
    assert f'id="review-{traffic["ok"][0]}"' not in page  # ran and no thumbs down
    assert 'value="wrong_condition"' in page and 'value="correct"' not in page
    assert '>SELECT oldest FROM list</textarea>' in page  # the model's SQL is the expert's starting point

    r = client.post(f"/review/{failed}", data={"gold_sql": "SELECT nope FROM teachers", "category": "unknown_column"},
                    follow_redirects=True)
    assert "the gold SQL must run" in r.get_data(as_text=True)
    r = client.post(f"/review/{failed}", data={"gold_sql": "SELECT 1", "category": "made_up"}, follow_redirects=True)
    assert "choose an error category" in r.get_data(as_text=True)
    r = client.post(f"/review/{failed}", data={"gold_sql": "SELECT lastname FROM teachers ORDER BY classroom LIMIT 1;",
                                               "category": "unknown_column"}, follow_redirects=True)
    assert "saved to scenario file webui-student_1.yaml" in r.get_data(as_text=True)
    assert f'id="review-{failed}"' not in r.get_data(as_text=True)

    path = tmp_path / "instance" / "scenarios" / "webui-student_1.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["name"] == "webui-student_1"
    assert data["examples"] == [{"question": "Which teacher is the oldest?",
                                 "gold_sql": "SELECT lastname FROM teachers ORDER BY classroom LIMIT 1",
                                 "category": "unknown_column", "model_sql": "SELECT oldest FROM list"}]
    records = load_scenarios(path)  # the evaluation reads what the review wrote
    assert records[0]["answer"] == data["examples"][0]["gold_sql"] and records[0]["db_id"] == "student_1"
    row = store.get(failed)
    assert row["expert_category"] == "unknown_column" and row["reviewed_by"] == "admin:admin"
    assert client.get("/review/scenarios/webui-student_1.yaml").status_code == 200
    assert client.get("/review/scenarios/..%2Fmonitoring.sqlite").status_code == 404


def test_store_helpers(tmp_path):
    assert normalise_question("  How MANY   singers?? ") == "how many singers"
    assert percentile([], 0.5) is None
    assert percentile([1, 2, 3, 4], 0.5) == 2.5 and percentile([10, 20], 0.95) == pytest.approx(19.5)
    store = MonitoringStore(str(tmp_path / "m.sqlite"))
    assert store.summary() == {"n": 0, "success_rate": None, "latency_p50": None, "latency_p95": None,
                               "cached_rate": None, "thumbs_up": 0, "thumbs_down": 0}
    assert store.timeseries() == [] and store.set_feedback(1, 1) is False


def test_monitoring_page_works_without_questions(client):
    page = client.get("/monitoring").get_data(as_text=True)
    assert "No questions yet" in page
    assert (SPIDER_SAMPLE / "database").is_dir()
