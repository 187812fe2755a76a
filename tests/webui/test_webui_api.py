"""The JSON API: translate, query, databases, model and its OpenAPI description; bad input is a 4xx JSON."""

from __future__ import annotations

import pytest

from webui import create_app
from webui.testing import app_settings, make_registry


def test_translate_with_a_database(app, client):
    r = client.post("/api/translate", json={"question": "How many students are there?", "database": "student_1"})
    assert r.status_code == 200
    assert r.json["sql"] == "SELECT count(*) FROM list"
    assert r.json["model"] == "run-a" and r.json["cached"] is False and r.json["executes"] is True
    assert r.json["latency_ms"] >= 0
    row = app.extensions["t2sql.store"].get(r.json["id"])
    assert row["origin"] == "api" and row["success"] == 1 and row["database"] == "student_1"
    again = client.post("/api/translate", json={"question": "how many students are there", "database": "student_1"})
    assert again.json["cached"] is True and again.json["sql"] == r.json["sql"]


def test_translate_with_a_pasted_schema(client):
    schema = "CREATE TABLE singer (singer_id NUMBER PRIMARY KEY, name TEXT)"
    r = client.post("/api/translate", json={"question": "How many singers are there?", "schema": schema})
    assert r.status_code == 200
    assert r.json["sql"] == "SELECT count(*) FROM singer" and r.json["executes"] is True
    assert r.json["database"].startswith("schema:")


def test_query_returns_columns_and_rows(client):
    r = client.post("/api/query", json={"sql": "SELECT lastname, classroom FROM teachers ORDER BY classroom LIMIT 2",
                                        "database": "student_1"})
    assert r.status_code == 200
    assert r.json["columns"] == ["LastName", "Classroom"]
    assert r.json["rows"] == [["MACROSTIE", 101], ["COVIN", 102]]
    assert r.json["truncated"] is False and r.json["elapsed_ms"] >= 0


def test_query_values_are_json(client):
    r = client.post("/api/query", json={"sql": "SELECT x'0102', 1e999, -1e999, NULL", "database": "student_1"})
    assert r.status_code == 200
    assert r.json["rows"] == [["<blob 2 bytes>", "inf", "-inf", None]]


@pytest.mark.parametrize("path, kwargs, status, message", [
    ("/api/translate", {"data": "question=x", "content_type": "application/x-www-form-urlencoded"}, 415, "JSON"),
    ("/api/translate", {"data": "{not json", "content_type": "application/json"}, 400, "not valid JSON"),
    ("/api/translate", {"json": ["a", "list"]}, 400, "JSON object"),
    ("/api/translate", {"json": {"question": "q"}}, 422, "exactly one of"),
    ("/api/translate", {"json": {"question": "q", "database": "student_1", "schema": "CREATE TABLE t (x)"}}, 422,
     "exactly one of"),
    ("/api/translate", {"json": {"question": "", "database": "student_1"}}, 422, "question"),
    ("/api/translate", {"json": {"question": "   ", "database": "student_1"}}, 422, "empty"),
    ("/api/translate", {"json": {"question": "x" * 1001, "database": "student_1"}}, 422, "question"),
    ("/api/translate", {"json": {"question": 3, "database": "student_1"}}, 422, "question"),
    ("/api/translate", {"json": {"question": "q", "database": "student_1", "extra": 1}}, 422, "Extra inputs"),
    ("/api/translate", {"json": {"question": "q", "database": "nope"}}, 404, "unknown database"),
    ("/api/translate", {"json": {"question": "q", "schema": "DROP TABLE x"}}, 422, "schema"),
    ("/api/translate", {"json": {"question": "q\ud800", "database": "student_1"}}, 422, "unicode"),
    ("/api/query", {"json": {"sql": "SELECT 1"}}, 422, "database"),
    ("/api/query", {"json": {"sql": "SELECT 1", "database": "nope"}}, 404, "unknown database"),
    ("/api/query", {"json": {"sql": "SELEC 1", "database": "student_1"}}, 400, "syntax error"),
    ("/api/query", {"json": {"sql": "SELECT 1", "database": "student_1", "limit": 3}}, 422, "Extra inputs"),
])
def test_bad_input_gets_a_4xx_json_answer(client, path, kwargs, status, message):
    r = client.post(path, **kwargs)
    assert r.status_code == status
    assert r.is_json and r.json["status"] == status
    assert message in r.json["error"]


def test_unknown_routes_and_methods_answer_json(client):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.is_json
    r = client.get("/api/translate")
    assert r.status_code == 405 and r.is_json


def test_body_over_the_limit_is_413_json(tmp_path):
    make_registry(tmp_path / "runs", with_model=False)
    client = create_app(app_settings(tmp_path, MAX_CONTENT_LENGTH=1024)).test_client()
    r = client.post("/api/query", json={"sql": "SELECT '" + "x" * 5000 + "'", "database": "student_1"})
    assert r.status_code == 413 and r.is_json


def test_no_model_is_503(tmp_path):
    make_registry(tmp_path / "runs", with_model=False, champion=None)
    client = create_app(app_settings(tmp_path)).test_client()
    r = client.post("/api/translate", json={"question": "q", "database": "student_1"})
    assert r.status_code == 503 and "no champion" in r.json["error"]
    assert client.get("/api/model").status_code == 503


def test_databases_and_model(client):
    names = [d["name"] for d in client.get("/api/databases").json["databases"]]
    assert len(names) == 24 and "student_1" in names
    assert client.get("/api/model").json["model"] == "run-a"


def test_openapi_document_describes_every_route(app, client):
    doc = client.get("/api/openapi.json").json
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/api/translate", "/api/query", "/api/databases", "/api/model"}
    api_rules = {r.rule for r in app.url_map.iter_rules() if r.rule.startswith("/api/")} - {"/api/openapi.json"}
    assert api_rules == set(doc["paths"])
    schemas = doc["components"]["schemas"]
    assert schemas["TranslateRequest"]["properties"].keys() >= {"question", "database", "schema"}
    assert schemas["QueryResponse"]["required"] == ["columns", "rows", "truncated", "elapsed_ms"]

    def refs(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(doc):
        assert ref.split("/")[-1] in schemas, ref
    assert "anyOf" not in str(schemas)  # OpenAPI 3.0 style: nullable, not anyOf with null
