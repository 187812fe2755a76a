"""Generated or edited SQL cannot change a database, read other files, or run forever; admin actions need a login."""

from __future__ import annotations

import hashlib
import shutil
import time

import pytest

from webui import create_app
from webui.testing import SPIDER_SAMPLE, app_settings, make_registry

WRITES = [
    ("DROP TABLE list", "denied"),
    ("DELETE FROM list", "denied"),
    ("UPDATE list SET grade = 0", "denied"),
    ("INSERT INTO teachers VALUES ('a', 'b', 1)", "denied"),
    ("CREATE TABLE evil (x TEXT)", "denied"),
    ("ALTER TABLE list ADD COLUMN evil TEXT", "denied"),
    ("ATTACH DATABASE '{tmp}/evil.sqlite' AS evil", "denied"),
    ("PRAGMA journal_mode = WAL", "denied"),
    ("PRAGMA user_version = 7", "denied"),
    ("PRAGMA writable_schema = ON", "denied"),
    ("VACUUM INTO '{tmp}/copy.sqlite'", "denied runtime"),  # SQLite says "authorization denied" here
    ("SELECT 1; DROP TABLE list", "runtime denied"),  # refused by the statement guard (one statement only)
    ("REPLACE INTO teachers VALUES ('a', 'b', 1)", "denied"),
]
RUNAWAY = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def env(tmp_path):
    dbs = tmp_path / "dbs"
    dbs.mkdir()
    db = dbs / "student_1.sqlite"
    shutil.copy(SPIDER_SAMPLE / "database" / "student_1" / "student_1.sqlite", db)
    db.chmod(0o644)  # writable on disk: only the connection may stop writes
    make_registry(tmp_path / "runs", with_model=False)
    app = create_app(app_settings(tmp_path, DATABASE_DIRS=[str(dbs)], QUERY_TIMEOUT_S=0.5))
    return app.test_client(), db, tmp_path


@pytest.mark.parametrize("sql, kind", WRITES)
def test_api_refuses_writes_and_leaves_the_file_identical(env, sql, kind):
    client, db, tmp = env
    before = sha256(db)
    r = client.post("/api/query", json={"sql": sql.format(tmp=tmp), "database": "student_1"})
    assert r.status_code == 400
    assert r.json["error_kind"] in kind.split()
    assert sha256(db) == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["student_1.sqlite"]  # no journal, WAL or copies
    assert not (tmp / "evil.sqlite").exists() and not (tmp / "copy.sqlite").exists()
    assert client.post("/api/query", json={"sql": "SELECT count(*) FROM list", "database": "student_1"}).json[
        "rows"] == [[60]]


@pytest.mark.parametrize("sql", ["DROP TABLE list", "DELETE FROM list", "UPDATE list SET grade = 0",
                                 "ATTACH DATABASE 'x.sqlite' AS x", "PRAGMA user_version = 7"])
def test_edited_sql_on_the_page_is_refused(env, sql):
    client, db, _ = env
    before = sha256(db)
    loc = client.post("/ask", data={"question": "How many students are there?", "database": "student_1"}).headers[
        "Location"]
    client.post(f"{loc}/run", data={"sql": sql, "action": "save"})
    page = client.get(loc, query_string={"sql": sql}).get_data(as_text=True)
    assert "The query did not run (denied)" in page and "Only reading queries are allowed" in page
    assert sha256(db) == before


def test_runaway_recursive_query_is_stopped_by_the_time_limit(env):
    client, db, _ = env
    before = sha256(db)
    t0 = time.perf_counter()
    r = client.post("/api/query", json={"sql": RUNAWAY, "database": "student_1"})
    elapsed = time.perf_counter() - t0
    assert r.status_code == 400 and r.json["error_kind"] == "timeout"
    assert "0.5 s time limit" in r.json["error"]
    assert elapsed < 30  # stopped, not run to the end (it never ends)
    assert sha256(db) == before
    loc = client.post("/ask", data={"question": "How many students are there?", "database": "student_1"}).headers[
        "Location"]
    page = client.get(loc, query_string={"sql": RUNAWAY}).get_data(as_text=True)
    assert "The query did not run (timeout)" in page and "Queries stop after 0.5 s" in page


def test_row_cap_truncates(tmp_path):
    make_registry(tmp_path / "runs", with_model=False)
    client = create_app(app_settings(tmp_path, ROW_CAP=7)).test_client()
    r = client.post("/api/query", json={"sql": "SELECT * FROM list", "database": "student_1"})
    assert r.status_code == 200 and len(r.json["rows"]) == 7 and r.json["truncated"] is True
    r = client.post("/api/query", json={"sql": "SELECT * FROM teachers LIMIT 3", "database": "student_1"})
    assert len(r.json["rows"]) == 3 and r.json["truncated"] is False


def test_uploaded_database_is_only_read(env):
    client, _, tmp = env
    import io
    import sqlite3

    src = tmp / "up.sqlite"
    conn = sqlite3.connect(src)
    conn.executescript("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2);")
    conn.close()
    client.post("/ask/upload", data={"file": (io.BytesIO(src.read_bytes()), "up.sqlite")},
                content_type="multipart/form-data")
    stored = next((tmp / "instance" / "uploads").glob("up*.sqlite"))
    before = sha256(stored)
    assert client.post("/api/query", json={"sql": "DELETE FROM t", "database": "up"}).status_code == 400
    assert client.post("/api/query", json={"sql": "SELECT sum(x) FROM t", "database": "up"}).json["rows"] == [[3]]
    assert sha256(stored) == before


def test_admin_actions_need_a_login(env):
    client, _, _ = env
    for path in ("/models/run-b/promote", "/pipelines/start", "/review/1"):
        r = client.post(path, data={"reason": "x", "config_path": "x", "gold_sql": "SELECT 1", "category": "other"})
        assert r.status_code == 302 and "/auth/login" in r.headers["Location"], path
    assert client.get("/review").status_code == 302


def test_login_checks_the_password_hash(env):
    client, _, _ = env
    assert client.post("/auth/login", data={"username": "admin", "password": "wrong"}).status_code == 401
    assert client.post("/auth/login", data={"username": "root", "password": "s3cret"}).status_code == 401
    r = client.post("/auth/login", data={"username": "admin", "password": "s3cret", "next": "//evil.example/x"})
    assert r.status_code == 302 and r.headers["Location"] == "/"  # no open redirect
    assert client.get("/review").status_code == 200
    client.post("/auth/logout")
    assert client.get("/review").status_code == 302


def test_login_is_disabled_without_a_password(tmp_path, monkeypatch):
    monkeypatch.delenv("T2SQL_ADMIN_PASSWORD", raising=False)
    make_registry(tmp_path / "runs", with_model=False)
    client = create_app(app_settings(tmp_path, ADMIN_PASSWORD=None)).test_client()
    r = client.post("/auth/login", data={"username": "admin", "password": ""})
    assert r.status_code == 403 and "T2SQL_ADMIN_PASSWORD" in r.get_data(as_text=True)


def test_secret_and_password_come_from_the_environment(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("T2SQL_SECRET_KEY", "from-env")
    monkeypatch.setenv("T2SQL_ADMIN_PASSWORD", "envpass")
    app = create_app({"INSTANCE_PATH": str(tmp_path / "i"), "REGISTRY_ROOT": str(tmp_path / "runs")})
    assert app.config["SECRET_KEY"] == "from-env"
    assert app.config["ADMIN_PASSWORD_HASH"].startswith(("scrypt:", "pbkdf2:"))
    assert "envpass" not in str(app.config["ADMIN_PASSWORD_HASH"])
    monkeypatch.delenv("T2SQL_SECRET_KEY")
    with caplog.at_level("WARNING"):
        a1 = create_app({"INSTANCE_PATH": str(tmp_path / "i"), "REGISTRY_ROOT": str(tmp_path / "runs")})
        a2 = create_app({"INSTANCE_PATH": str(tmp_path / "i"), "REGISTRY_ROOT": str(tmp_path / "runs")})
    assert a1.config["SECRET_KEY"] != a2.config["SECRET_KEY"] and len(a1.config["SECRET_KEY"]) == 64
    assert "T2SQL_SECRET_KEY is not set" in caplog.text


def test_debug_mode_is_refused_outside_development(tmp_path, monkeypatch):
    monkeypatch.delenv("T2SQL_ENV", raising=False)
    app = create_app({"INSTANCE_PATH": str(tmp_path / "i"), "REGISTRY_ROOT": str(tmp_path / "runs"), "DEBUG": True,
                      "SECRET_KEY": "x"})
    assert app.debug is False
    app = create_app({"INSTANCE_PATH": str(tmp_path / "i"), "REGISTRY_ROOT": str(tmp_path / "runs"), "DEBUG": True,
                      "SECRET_KEY": "x", "T2SQL_ENV": "development"})
    assert app.debug is True


def test_pages_send_security_headers(env):
    client, _, _ = env
    r = client.get("/")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "HttpOnly" in (client.post("/auth/login", data={"username": "admin", "password": "s3cret"})
                          .headers.get("Set-Cookie", ""))
