"""The Ask page: databases, uploads, pasted schemas, results with pages, edited SQL, feedback, cache."""

from __future__ import annotations

import io
import re
import sqlite3
from html import unescape
from pathlib import Path

import pytest

from webui import create_app
from webui.testing import SPIDER_SAMPLE, LookupTranslator, app_settings, make_registry

STUDENT_DB = SPIDER_SAMPLE / "database" / "student_1" / "student_1.sqlite"


@pytest.fixture
def translators():
    """The lookup translators the app creates, so tests can count model calls."""
    made = []

    def factory(model_dir):
        tr = LookupTranslator(name=Path(model_dir).parent.name)
        made.append(tr)
        return tr

    factory.made = made
    return factory


@pytest.fixture
def app(tmp_path, translators):
    make_registry(tmp_path / "runs", with_model=False)
    return create_app(app_settings(tmp_path, TRANSLATOR_FACTORY=translators, MAX_CONTENT_LENGTH=256 * 1024))


@pytest.fixture
def client(app):
    return app.test_client()


def ask(client, question, database="student_1", **form):
    return client.post("/ask", data={"question": question, "database": database, **form})


def table_rows(html: str) -> list[list[str]]:
    body = re.search(r'<table class="data" id="result-table">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert body, "no result table on the page"
    return [[unescape(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
            for tr in re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)]


def test_index_lists_the_sample_databases_and_the_model(client):
    page = client.get("/").get_data(as_text=True)
    names = re.findall(r'<option value="([^"]+)"', page)
    assert len(names) == 24 and "student_1" in names and "wrestler" in names
    assert "run-a" in page  # the champion answers


def test_question_gives_sql_rows_latency_and_model(client):
    r = ask(client, "How many students are there?")
    assert r.status_code == 302 and re.fullmatch(r"/ask/\d+", r.headers["Location"])
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "SELECT count(*) FROM list" in page
    assert table_rows(page) == [["60"]]
    assert re.search(r'id="latency">\d+ ms', page)
    assert '<span class="badge">run-a</span>' in page


def test_result_pages_hold_25_rows_each(client):
    qid = ask(client, "What are the grade number and classroom number of each class in the list?").headers["Location"]
    conn = sqlite3.connect(f"file:{STUDENT_DB}?mode=ro", uri=True)
    sql = "SELECT firstname, lastname FROM list"
    expected = [[str(v).strip() for v in row] for row in conn.execute(sql)]
    conn.close()
    client.post(f"{qid}/run", data={"sql": sql, "action": "run"})
    first = client.get(qid, query_string={"sql": sql}).get_data(as_text=True)
    third = client.get(qid, query_string={"sql": sql, "page": 3}).get_data(as_text=True)
    assert table_rows(first) == expected[:25]
    assert table_rows(third) == expected[50:60]
    assert "rows 51–60 of 60" in third and "page 3 of 3" in third


def test_edited_sql_reruns_and_can_be_saved_as_correction(app, client):
    loc = ask(client, "How many students are there?").headers["Location"]
    r = client.post(f"{loc}/run", data={"sql": "SELECT count(*) FROM teachers", "action": "run"})
    assert r.status_code == 302 and "sql=SELECT" in r.headers["Location"]
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert table_rows(page) == [["12"]] and "edited" in page
    qid = int(loc.rsplit("/", 1)[1])
    store = app.extensions["t2sql.store"]
    client.post(f"{loc}/run", data={"sql": "SELECT nope FROM teachers", "action": "save"})
    assert store.get(qid)["corrected_sql"] is None  # SQL that does not run is refused
    client.post(f"{loc}/run", data={"sql": "SELECT count(*) FROM teachers", "action": "save"})
    assert store.get(qid)["corrected_sql"] == "SELECT count(*) FROM teachers"


def test_failing_query_gets_a_clear_message(client):
    loc = ask(client, "How many students are there?").headers["Location"]
    page = client.get(loc, query_string={"sql": "SELECT salary FROM list"}).get_data(as_text=True)
    assert 'id="query-error"' in page and "no such column: salary" in page
    assert "no such column" in page


def test_bad_inputs_are_refused_on_the_form(client):
    r = ask(client, "anything", database="no_such_db")
    assert r.status_code == 400 and "unknown database" in r.get_data(as_text=True)
    r = ask(client, "   ")
    assert r.status_code == 400 and "the question is empty" in r.get_data(as_text=True)
    assert client.get("/ask/99999").status_code == 404


def test_pasted_schema_gives_sql_checked_on_an_empty_database(client):
    schema = "CREATE TABLE singer (singer_id NUMBER PRIMARY KEY, name TEXT, age NUMBER)"
    r = ask(client, "How many singers are there?", database="", mode="schema", schema=schema)
    assert r.status_code == 302
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "SELECT count(*) FROM singer" in page
    assert table_rows(page) == [["0"]] and "pasted schema, no data" in page


def test_pasted_schema_with_anything_but_create_table_is_refused(client, tmp_path):
    target = tmp_path / "attached.db"
    r = ask(client, "q", database="", mode="schema",
            schema=f"ATTACH DATABASE '{target}' AS x; CREATE TABLE x.t (a TEXT)")
    assert r.status_code == 400 and "only CREATE TABLE" in r.get_data(as_text=True)
    assert not target.exists()


def test_upload_adds_a_database_that_can_be_asked(client, tmp_path):
    src = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(src)
    conn.executescript("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);"
                       "INSERT INTO items (name) VALUES ('pen'), ('ink'), ('pad');")
    conn.close()
    r = client.post("/ask/upload", data={"file": (io.BytesIO(src.read_bytes()), "my shop.sqlite")},
                    content_type="multipart/form-data")
    assert r.status_code == 302 and r.headers["Location"].endswith("database=my_shop")
    assert "my_shop" in client.get("/").get_data(as_text=True)
    page = client.get(ask(client, "How many items?", database="my_shop").headers["Location"]).get_data(as_text=True)
    assert table_rows(page) == [["3"]]


@pytest.mark.parametrize("payload, reason", [
    (b"PK\x03\x04 this is a zip file" * 10, "is not a SQLite database"),
    (b"SQLite format 3\x00" + b"\x00" * 200, "not a readable SQLite database"),
])
def test_upload_of_non_sqlite_is_refused(client, payload, reason):
    r = client.post("/ask/upload", data={"file": (io.BytesIO(payload), "x.sqlite")}, content_type="multipart/form-data")
    assert r.status_code == 400 and reason in r.get_data(as_text=True)


def test_upload_without_tables_is_refused(client, tmp_path):
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).execute("PRAGMA user_version = 1").connection.close()
    r = client.post("/ask/upload", data={"file": (io.BytesIO(empty.read_bytes()), "empty.sqlite")},
                    content_type="multipart/form-data")
    assert r.status_code == 400 and "has no tables" in r.get_data(as_text=True)


def test_upload_over_the_size_limit_is_refused(client):
    big = b"SQLite format 3\x00" + b"\x00" * (300 * 1024)
    r = client.post("/ask/upload", data={"file": (io.BytesIO(big), "big.sqlite")}, content_type="multipart/form-data")
    assert r.status_code == 413


def test_repeated_question_is_answered_from_the_cache(app, client, translators):
    first = client.get(ask(client, "How many students are there?").headers["Location"]).get_data(as_text=True)
    second = client.get(ask(client, "  how many STUDENTS are there ").headers["Location"]).get_data(as_text=True)
    assert "badge cached" not in first and "badge cached" in second
    assert sum(t.calls for t in translators.made) == 1
    rows = app.extensions["t2sql.store"].recent(2)
    assert [r["cached"] for r in rows] == [1, 0] and rows[0]["sql"] == rows[1]["sql"]
    ask(client, "How many students are there?", database="wrestler")  # another schema: not cached
    assert sum(t.calls for t in translators.made) == 2


def test_feedback_is_recorded(app, client):
    loc = ask(client, "How many students are there?").headers["Location"]
    qid = int(loc.rsplit("/", 1)[1])
    assert client.post(f"{loc}/feedback", data={"value": "down"}).status_code == 302
    assert app.extensions["t2sql.store"].get(qid)["feedback"] == -1
    assert client.post(f"{loc}/feedback", data={"value": "sideways"}).status_code == 400


def test_forms_need_a_csrf_token(tmp_path):
    make_registry(tmp_path / "runs", with_model=False)
    app = create_app(app_settings(tmp_path, WTF_CSRF_ENABLED=True))
    client = app.test_client()
    r = client.post("/ask", data={"question": "How many students are there?", "database": "student_1"})
    assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)
    page = client.get("/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = client.post("/ask", data={"question": "How many students are there?", "database": "student_1",
                                  "csrf_token": token})
    assert r.status_code == 302


def test_no_champion_gives_a_clear_message(tmp_path):
    make_registry(tmp_path / "runs", with_model=False, champion=None)
    client = create_app(app_settings(tmp_path)).test_client()
    assert "No model is available yet" in client.get("/").get_data(as_text=True)
    r = ask(client, "How many students are there?")
    assert r.status_code == 503 and "no champion" in r.get_data(as_text=True)
