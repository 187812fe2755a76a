"""PostgreSQL end to end: load-db, `t2sql ask` (question and --sql), the judge via a URL, the GUI and API.

The server is the session's temporary PostgreSQL (``postgres_server``); the password reaches
t2sql only through an environment variable and must never appear in any output.
"""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest

from cli import main
from t2sql.databases.connections import Connection, ConnectionSpec, save_connections
from webui import create_app
from webui.testing import SPIDER_SAMPLE, LookupTranslator, app_settings, make_registry

DBS = ["student_1", "musical", "gymnast", "race_track"]
CLASSROOMS = "Report the number of students in each classroom."


@pytest.fixture(scope="module")
def pg(postgres_server, tmp_path_factory):
    """The sample databases loaded with `t2sql load-db`; the URL template without password."""
    mp = pytest.MonkeyPatch()
    mp.setenv("T2SQL_TEST_PG_PASSWORD", postgres_server.password)
    files = [str(SPIDER_SAMPLE / "database" / d / f"{d}.sqlite") for d in DBS]
    template = postgres_server.url("e2e_{db_id}", with_password=False)
    assert main(["load-db", *files, "--to", template, "--create", "--replace",
                 "--password-env", "T2SQL_TEST_PG_PASSWORD"]) == 0
    yield template, postgres_server
    mp.undo()


def test_load_db_copies_every_table_and_row(pg, capsys):
    template, srv = pg
    conn = Connection(template.replace("{db_id}", "student_1"), password=srv.password)
    try:
        assert conn.execute("SELECT count(*) FROM list").rows == [(60,)]
        assert conn.execute("SELECT count(*) FROM teachers").rows == [(12,)]
        # numeric text (race.Track_ID is text in SQLite) joins integer keys as SQLite's affinity does
        race = Connection(template.replace("{db_id}", "race_track"), password=srv.password)
        assert race.execute("SELECT count(*) FROM race AS r JOIN track AS t ON r.Track_ID = t.Track_ID",
                            read="sqlite").rows == [(7,)]
        race.close()
    finally:
        conn.close()


def _ask(args, capsys):
    code = main(["ask", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ask_sql_runs_through_the_guard_and_refusals_exit_non_zero(pg, capsys):
    template, srv = pg
    url = template.replace("{db_id}", "student_1")
    code, out, err = _ask(["--sql", "SELECT classroom, count(*) FROM list GROUP BY classroom ORDER BY 1 LIMIT 2",
                           "--db", url, "--password-env", "T2SQL_TEST_PG_PASSWORD"], capsys)
    assert code == 0 and "101 | 3\n102 | 7" in out and "SQL (postgres)" in out
    for sql, reason in [("DROP TABLE list", "only reading queries"),
                        ("SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
                        ("SELECT 1; DELETE FROM list", "exactly one statement")]:
        code, out, err = _ask(["--sql", sql, "--db", url, "--password-env", "T2SQL_TEST_PG_PASSWORD"], capsys)
        assert code != 0 and reason in err, (sql, err)
        assert srv.password not in out + err
    # SQLite-style SQL given as such is rewritten (double-quoted string, LIKE)
    code, out, _ = _ask(["--sql", 'SELECT count(*) FROM list WHERE LastName LIKE "mad%"', "--sql-dialect", "sqlite",
                         "--db", url, "--password-env", "T2SQL_TEST_PG_PASSWORD"], capsys)
    assert code == 0 and "ILIKE 'mad%'" in out and "\n1\n" in out
    code, out, err = _ask(["--sql", "SELECT 1", "--db", url, "--password-env", "NO_SUCH_VARIABLE_T2SQL"], capsys)
    assert code == 2 and "NO_SUCH_VARIABLE_T2SQL" in err


def test_ask_a_question_on_postgres(pg, capsys, tmp_path, monkeypatch):
    """The question path of `t2sql ask` with a deterministic translator, then with the real tiny model."""
    template, srv = pg
    url = template.replace("{db_id}", "student_1")

    class Lookup(LookupTranslator):
        model_dir = "lookup"
        prompt = None

        def translate_one(self, question, context, db_path=None):
            assert "CREATE TABLE list" in context and db_path is None
            return super().translate_one(question, context)

    from t2sql import inference

    monkeypatch.setattr(inference.Translator, "load", classmethod(lambda cls, *a, **k: Lookup()))
    chart = tmp_path / "chart.svg"
    out_csv = tmp_path / "rows.csv"
    code, out, err = _ask([CLASSROOMS, "--db", url, "--password-env", "T2SQL_TEST_PG_PASSWORD",
                           "--csv", str(out_csv), "--chart", str(chart)], capsys)
    assert code == 0, err
    assert "postgres" in out and "(12 rows)" in out
    assert chart.read_text().startswith("<svg") and len(list(csv.reader(out_csv.open()))) == 13
    assert srv.password not in out + err
    monkeypatch.undo()

    make_registry(tmp_path / "runs")  # an untrained tiny T5: garbage SQL, but the real path end to end
    code, out, err = _ask(["How many students are there?", "--db", url, "--password-env", "T2SQL_TEST_PG_PASSWORD",
                           "--registry", str(tmp_path / "runs"), "--timeout", "2"], capsys)
    assert "SQL (" in out and ", postgres):" in out
    assert code == 0 or "the query failed" in out
    assert srv.password not in out + err


def test_the_judge_scores_gold_sql_100_percent_on_postgres(pg, tmp_path, capsys):
    template, srv = pg
    spider = tmp_path / "spider"
    (spider / "database").mkdir(parents=True)
    for d in DBS:
        shutil.copytree(SPIDER_SAMPLE / "database" / d, spider / "database" / d)
    shutil.copy(SPIDER_SAMPLE / "tables.json", spider / "tables.json")
    questions = [q for q in json.loads((SPIDER_SAMPLE / "train_spider.json").read_text()) if q["db_id"] in DBS]
    (spider / "dev.json").write_text(json.dumps(questions))
    preds = tmp_path / "pred.sql"
    preds.write_text("".join(" ".join(q["query"].split()) + "\n" for q in questions))
    out = tmp_path / "results.json"
    assert main(["score", "--predictions", str(preds), "--spider", str(spider), "--out", str(out),
                 "--db-url", template.replace("e2e_", "e2e_"), "--password-env", "T2SQL_TEST_PG_PASSWORD"]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert len(results) == len(questions) > 150
    assert all(r["execution_match"] is True for r in results), [r for r in results if not r["execution_match"]][:3]
    assert srv.password not in printed + out.read_text()
    # a wrong prediction is caught on the server as well
    wrong = preds.read_text().splitlines()
    wrong[0] = "SELECT count(*) FROM list WHERE grade = 99"
    preds.write_text("\n".join(wrong) + "\n")
    main(["score", "--predictions", str(preds), "--spider", str(spider), "--out", str(out),
          "--db-url", template, "--password-env", "T2SQL_TEST_PG_PASSWORD"])
    assert json.loads(out.read_text())[0]["execution_match"] is False


@pytest.fixture
def gui(pg, tmp_path, monkeypatch):
    template, srv = pg
    monkeypatch.setenv("T2SQL_TEST_PG_PASSWORD", srv.password)
    empty = tmp_path / "none"
    empty.mkdir()
    save_connections(tmp_path / "connections.yaml", [
        ConnectionSpec("school", template.replace("{db_id}", "student_1"), password_env="T2SQL_TEST_PG_PASSWORD")])
    make_registry(tmp_path / "runs", with_model=False)
    app = create_app(app_settings(tmp_path, DATABASE_DIRS=[str(empty)], CONNECTIONS_FILE=str(tmp_path /
                                                                                          "connections.yaml")))
    yield app.test_client(), srv
    app.extensions["t2sql.answers"].catalog._drop("school")


def test_the_gui_answers_from_postgres_with_a_chart_and_csv(gui):
    client, srv = gui
    r = client.post("/ask", data={"question": CLASSROOMS, "database": "school"})
    assert r.status_code == 302
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert 'id="result-chart"' in page and 'class="bar"' in page and ">postgres<" in page
    assert "GROUP BY classroom" in page and srv.password not in page
    csv_url = r.headers["Location"] + "/result.csv"
    got = client.get(csv_url)
    assert got.status_code == 200 and got.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(got.get_data(as_text=True))))
    assert len(rows) == 13 and rows[0][0] == "classroom"

    api = client.post("/api/translate", json={"question": CLASSROOMS, "database": "school"}).json
    assert api["dialect"] == "postgres" and api["executes"] is True
    q = client.post("/api/query", json={"sql": "SELECT classroom, count(*) FROM list GROUP BY classroom",
                                        "database": "school"}).json
    assert q["chart"] == "bar" and len(q["rows"]) == 12
    svg = client.post("/api/query", json={"sql": "SELECT classroom, count(*) FROM list GROUP BY classroom",
                                          "database": "school", "format": "svg"})
    assert svg.mimetype == "image/svg+xml" and svg.get_data(as_text=True).startswith("<svg")
    none = client.post("/api/query", json={"sql": "SELECT * FROM list", "database": "school", "format": "svg"})
    assert none.status_code == 422
    c = client.post("/api/query", json={"sql": "SELECT * FROM teachers", "database": "school", "format": "csv"})
    assert c.mimetype == "text/csv" and len(c.get_data(as_text=True).strip().splitlines()) == 13


def test_an_admin_adds_a_connection_and_no_password_is_shown(gui, pg):
    client, srv = gui
    template, _ = pg
    assert client.post("/connections", data={"name": "m", "url": "sqlite:///x.sqlite"}).status_code == 302  # login
    client.post("/auth/login", data={"username": "admin", "password": "s3cret"})
    bad = client.post("/connections", data={"name": "leaky", "url": template.replace("{db_id}", "musical").replace(
        "t2sql@", f"t2sql:{srv.password}@")})
    assert bad.status_code == 400 and "do not write the password" in bad.get_data(as_text=True)
    assert srv.password not in bad.get_data(as_text=True)
    wrong = client.post("/connections", data={"name": "wrongpw", "url": template.replace("{db_id}", "musical"),
                                              "password_env": "PATH"})
    assert wrong.status_code == 400 and "does not open" in wrong.get_data(as_text=True)
    import os

    assert os.environ["PATH"] not in wrong.get_data(as_text=True)  # the wrong password is not echoed
    ok = client.post("/connections", data={"name": "musicals", "url": template.replace("{db_id}", "musical"),
                                           "password_env": "T2SQL_TEST_PG_PASSWORD"})
    assert ok.status_code == 302
    page = client.get("/connections").get_data(as_text=True)
    assert "musicals" in page and "T2SQL_TEST_PG_PASSWORD" in page and srv.password not in page
    assert {"name": "musicals", "uploaded": False, "engine": "postgres"} in client.get("/api/databases").json[
        "databases"]
    r = client.post("/api/query", json={"sql": "SELECT count(*) FROM musical", "database": "musicals"})
    assert r.json["rows"] == [[7]]
    assert client.post("/connections/musicals/delete").status_code == 302
    assert "musicals" not in {d["name"] for d in client.get("/api/databases").json["databases"]}


def test_schema_and_question_values_come_from_the_server(pg):
    from t2sql.data.schema import sqlite_create_tables
    from t2sql.databases import introspect

    template, srv = pg
    conn = Connection(template.replace("{db_id}", "race_track"), password=srv.password)
    try:
        context = introspect.create_tables(conn, sample_values=2)
        assert context.startswith("CREATE TABLE race (race_id NUMBER PRIMARY KEY /* 1, 2 */, name TEXT /* ")
        assert "FOREIGN KEY (track_id) REFERENCES track(track_id)" in context
        plain = introspect.create_tables(conn)
        # the same tables, columns, types and keys as the SQLite file, names as PostgreSQL stores them
        sqlite_text = sqlite_create_tables(SPIDER_SAMPLE / "database" / "race_track" / "race_track.sqlite")
        assert plain.lower().replace('"', "") == sqlite_text.lower().replace('"', "").replace(
            "track_id text", "track_id number")
        hinted = introspect.with_question_values("Which races were held in class GT?", plain, conn)
        assert "class TEXT /* 'GT' */" in hinted
    finally:
        conn.close()


def test_eval_config_names_the_server_and_its_password_variable(pg, monkeypatch):
    from t2sql.config import EvalConfig
    from t2sql.evaluation.judge import ExampleScorer, ScoringOptions

    template, srv = pg
    cfg = EvalConfig(database_url=template, database_password_env="T2SQL_TEST_PG_PASSWORD")
    monkeypatch.setenv("T2SQL_TEST_PG_PASSWORD", srv.password)
    options = ScoringOptions.from_config(cfg)
    assert options.database_url == template and srv.password not in repr(options)
    scorer = ExampleScorer(options)
    try:
        record = {"db_id": "student_1", "question": "q", "answer": "SELECT count(*) FROM list",
                  "db_path": "/nonexistent/student_1.sqlite"}  # the server is used, not the file
        line, _ = scorer.score(record, "SELECT count(*) FROM list WHERE grade >= 0")
        assert line["execution_match"] is True and line["eval_mode"] == "database"
        line, _ = scorer.score(record, "SELECT count(*) FROM teachers")
        assert line["execution_match"] is False
        line, _ = scorer.score(record, "DELETE FROM list")
        assert line["executed"] is False and line["error_category"] is not None
    finally:
        scorer.close()
    monkeypatch.delenv("T2SQL_TEST_PG_PASSWORD")
    with pytest.raises(ValueError, match="T2SQL_TEST_PG_PASSWORD"):
        ScoringOptions.from_config(cfg)


def test_corrections_on_a_server_are_exported_in_sqlite_dialect(gui):
    client, _ = gui
    loc = client.post("/ask", data={"question": "Which students are called Mad...?", "database": "school"}).headers[
        "Location"]
    fixed = "SELECT lastname FROM list WHERE lastname ILIKE 'mad%'"
    client.post(f"{loc}/run", data={"sql": fixed, "action": "save"})
    lines = [json.loads(x) for x in client.get("/monitoring/export/training.jsonl").get_data(as_text=True).splitlines()]
    mine = [x for x in lines if x["question"] == "Which students are called Mad...?"]
    assert mine and mine[0]["answer"] == "SELECT lastname FROM list WHERE LOWER(lastname) LIKE LOWER('mad%')"
    assert mine[0]["db_path"] is None and mine[0]["context"].startswith("CREATE TABLE list")
