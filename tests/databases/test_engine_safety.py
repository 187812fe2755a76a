"""The web GUI's hostile inputs against every engine: SQLite, DuckDB, PostgreSQL and MariaDB.

Each engine holds Spider's ``student_1`` as a connection of the GUI. Every hostile statement must
be refused, change nothing (a checksum of a dump of every table, read through a separate admin
connection, is the same before and after), leak nothing from outside the database (no file
contents, no password, no system catalog) and leave the server answering.
"""

from __future__ import annotations

import hashlib
import shutil
import time

import pytest
import sqlalchemy as sa

from t2sql.databases.connections import Connection, ConnectionSpec, save_connections
from t2sql.databases.load import load_sqlite
from webui import create_app
from webui.testing import SPIDER_SAMPLE, app_settings, make_registry

STUDENT = SPIDER_SAMPLE / "database" / "student_1" / "student_1.sqlite"
ENGINES = ["sqlite", "duckdb", "postgres", "mariadb"]

# (sql, engines it applies to or None for all)
HOSTILE = [
    ("DROP TABLE list", None),
    ("DELETE FROM list", None),
    ("UPDATE list SET grade = 0", None),
    ("INSERT INTO teachers VALUES ('a', 'b', 1)", None),
    ("CREATE TABLE evil (x TEXT)", None),
    ("ALTER TABLE list ADD COLUMN evil TEXT", None),
    ("ATTACH DATABASE '{tmp}/evil.sqlite' AS evil", None),
    ("PRAGMA journal_mode = WAL", None),
    ("PRAGMA user_version = 7", None),
    ("VACUUM INTO '{tmp}/copy.sqlite'", None),
    ("SELECT 1; DROP TABLE list", None),
    ("REPLACE INTO teachers VALUES ('a', 'b', 1)", None),
    ("WITH d AS (DELETE FROM list RETURNING *) SELECT count(*) FROM d", None),
    ("SELECT * INTO evil FROM list", None),
    ("SELECT * FROM list FOR UPDATE", None),
    ("TRUNCATE TABLE list", None),
    ("GRANT ALL ON list TO PUBLIC", None),
    ("SET default_transaction_read_only = off", None),
    ("COMMIT", None),
    ("SELECT pg_read_file('/etc/passwd')", None),
    ("SELECT pg_read_binary_file('/etc/passwd')", None),
    ("SELECT pg_ls_dir('.')", None),
    ("COPY list TO '{tmp}/out.csv'", None),
    ("COPY (SELECT 1) TO PROGRAM 'touch {tmp}/pwned'", None),
    ("SELECT lo_import('/etc/passwd')", None),
    ("SELECT dblink('host=127.0.0.1', 'DELETE FROM list')", None),
    ("SELECT query_to_xml('DELETE FROM list', true, true, '')", None),
    ("SELECT set_config('default_transaction_read_only', 'off', false)", None),
    ("SELECT current_setting('data_directory')", None),
    ("SELECT * FROM pg_catalog.pg_authid", None),
    ("SELECT * FROM pg_shadow", None),
    ("SELECT * FROM information_schema.tables", None),
    ("SELECT LOAD_FILE('/etc/passwd')", None),
    ("SELECT * FROM list INTO OUTFILE '{tmp}/out.txt'", None),
    ("SELECT 'x' INTO DUMPFILE '{tmp}/dump.bin'", None),
    ("SELECT * FROM mysql.user", None),
    ("SELECT SLEEP(30)", None),
    ("SELECT * FROM read_csv('/etc/passwd')", None),
    ("SELECT * FROM read_parquet('/etc/passwd')", None),
    ("SELECT * FROM read_json('/etc/passwd')", None),
    ("SELECT * FROM '/etc/passwd'", None),
    ("INSTALL httpfs", None),
    ("LOAD httpfs", None),
    ("SELECT load_extension('/tmp/evil')", None),
    ("SELECT * FROM sqlite_master", None),
    ("SELECT printf('%.*c', 900000000, 'x')", None),
    ("SELECT repeat('x', 900000000)", None),
    ("SELECT lpad('x', 900000000, 'y')", None),
]
RUNAWAY = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
CROSS = "SELECT count(*) FROM list a, list b, list c, list d, list e, list f"
LEAKS = ["root:x:0:0", "/bin/bash", "data_directory", "rolpassword", "authentication_string"]


class Engine:
    """One engine's copy of student_1: the GUI's connection URL and an admin URL for checksums."""

    def __init__(self, name: str, url: str, admin_url: str, password: str | None, alive):
        self.name, self.url, self.admin_url, self.password, self.alive = name, url, admin_url, password, alive

    def checksum(self) -> str:
        """SHA-256 of every table's rows (sorted) and the table names, read with the admin account."""
        if self.name == "duckdb":  # one process may open a DuckDB file only one way at a time
            conn = Connection(self.admin_url)
            try:
                names = sorted(r[0] for r in conn.run_unchecked(
                    "SELECT table_name FROM duckdb_tables()").rows)
                dump = [(n, sorted(map(repr, conn.run_unchecked(f'SELECT * FROM "{n}"', row_cap=10**6).rows)))
                        for n in names]
            finally:
                conn.close()
        else:
            engine = sa.create_engine(self.admin_url)
            try:
                with engine.connect() as c:
                    names = sorted(sa.inspect(c).get_table_names())
                    dump = [(n, sorted(map(repr, c.exec_driver_sql(
                        f"SELECT * FROM {'`' + n + '`' if self.name == 'mariadb' else chr(34) + n + chr(34)}")
                        .fetchall()))) for n in names]
            finally:
                engine.dispose()
        return hashlib.sha256(repr((names, dump)).encode()).hexdigest()


@pytest.fixture(scope="module", params=ENGINES)
def engine(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        db = tmp / "student_1.sqlite"
        shutil.copy(STUDENT, db)
        db.chmod(0o644)  # writable on disk: only the connection may stop writes
        yield Engine("sqlite", f"sqlite:///{db}", f"sqlite:///{db}", None, lambda: True)
    elif request.param == "duckdb":
        db = tmp / "student_1.duckdb"
        load_sqlite(STUDENT, f"duckdb:///{db}")
        yield Engine("duckdb", f"duckdb:///{db}", f"duckdb:///{db}", None, lambda: True)
    elif request.param == "postgres":
        srv = request.getfixturevalue("postgres_server")
        load_sqlite(STUDENT, srv.url("student_safety"), create=True, replace=True)
        yield Engine("postgres", srv.url("student_safety", with_password=False), srv.url("student_safety"),
                     srv.password, srv.alive)
    else:
        srv = request.getfixturevalue("mariadb_server")
        load_sqlite(STUDENT, srv.url("student_safety"), create=True, replace=True)
        yield Engine("mariadb", srv.url("student_safety", with_password=False), srv.url("student_safety"),
                     srv.password, srv.alive)


@pytest.fixture(scope="module")
def env(engine, tmp_path_factory, monkeypatch_module):
    tmp = tmp_path_factory.mktemp(f"app-{engine.name}")
    empty = tmp / "no-files"
    empty.mkdir()
    spec = ConnectionSpec("student_1", engine.url, password_env="T2SQL_TEST_DB_PASSWORD" if engine.password else None)
    if engine.password:
        monkeypatch_module.setenv("T2SQL_TEST_DB_PASSWORD", engine.password)
    save_connections(tmp / "connections.yaml", [spec])
    make_registry(tmp / "runs", with_model=False)
    app = create_app(app_settings(tmp, DATABASE_DIRS=[str(empty)], CONNECTIONS_FILE=str(tmp / "connections.yaml"),
                                  QUERY_TIMEOUT_S=0.5))
    yield app.test_client(), tmp
    app.extensions["t2sql.answers"].catalog._drop("student_1")


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _query(client, sql):
    return client.post("/api/query", json={"sql": sql, "database": "student_1"})


def test_the_engine_answers_reads(env, engine):
    client, _ = env
    r = _query(client, "SELECT count(*) FROM list")
    assert r.status_code == 200 and r.json["rows"] == [[60]]
    dialect = {"mariadb": "mysql"}.get(engine.name, engine.name)
    for question in ("How many students are there?", "Report the number of students in each classroom.",
                     "Find the last names of all the teachers that teach GELL TAMI."):
        t = client.post("/api/translate", json={"question": question, "database": "student_1"}).json
        assert t["executes"] is True and t["dialect"] == dialect, (engine.name, t)
    q = client.post("/api/query", json={"sql": "SELECT classroom, count(*) FROM list GROUP BY classroom",
                                        "database": "student_1"}).json
    assert q["chart"] == "bar" and sum(r[1] for r in q["rows"]) == 60
    assert client.get("/api/databases").json["databases"] == [
        {"name": "student_1", "uploaded": False, "engine": {"mariadb": "mysql"}.get(engine.name, engine.name)}]


def test_hostile_inputs_write_nothing_leak_nothing_and_leave_the_server_up(env, engine):
    client, tmp = env
    before = engine.checksum()
    files_before = sorted(p.name for p in tmp.iterdir())
    for template, only in HOSTILE:
        if only and engine.name not in only:
            continue
        sql = template.format(tmp=tmp)
        t0 = time.perf_counter()
        r = _query(client, sql)
        assert r.status_code == 400, (engine.name, sql, r.json)
        assert r.json["error_kind"] in ("denied", "syntax"), (engine.name, sql, r.json)
        assert time.perf_counter() - t0 < 5, (engine.name, sql)
        text = r.get_data(as_text=True)
        for leak in LEAKS + ([engine.password] if engine.password else []):
            assert leak not in text, (engine.name, sql, leak)
    assert engine.checksum() == before
    assert sorted(p.name for p in tmp.iterdir()) == files_before  # no OUTFILE, COPY, ATTACH or VACUUM file
    assert engine.alive()
    assert _query(client, "SELECT count(*) FROM list").json["rows"] == [[60]]


def test_edited_sql_on_the_page_is_refused(env, engine):
    client, _ = env
    before = engine.checksum()
    loc = client.post("/ask", data={"question": "How many students are there?", "database": "student_1"}).headers[
        "Location"]
    for sql in ("DROP TABLE list", "DELETE FROM list", "SELECT pg_read_file('/etc/passwd')"):
        client.post(f"{loc}/run", data={"sql": sql, "action": "save"})
        page = client.get(loc, query_string={"sql": sql}).get_data(as_text=True)
        assert "The query did not run (denied)" in page and "Only reading queries are allowed" in page
    assert engine.checksum() == before


def test_a_runaway_query_is_stopped(env, engine):
    client, _ = env
    t0 = time.perf_counter()
    r = _query(client, CROSS if engine.name in ("mariadb", "duckdb") else RUNAWAY)
    assert time.perf_counter() - t0 < 20
    assert r.status_code == 400 and r.json["error_kind"] == "timeout", r.json
    assert "0.5 s time limit" in r.json["error"]
    assert engine.alive() and _query(client, "SELECT count(*) FROM teachers").json["rows"] == [[12]]


def test_the_engine_itself_refuses_writes_without_the_guard(engine):
    """The second line of defence: the read-only session, with t2sql's guard bypassed."""
    conn = Connection(engine.admin_url, timeout_s=2)
    before = engine.checksum() if engine.name != "duckdb" else None
    try:
        for sql in ("DELETE FROM list", "CREATE TABLE evil (x INTEGER)", "UPDATE teachers SET classroom = 0"):
            res = conn.run_unchecked(sql)
            assert not res.ok and res.error_kind == "denied", (engine.name, sql, res)
    finally:
        conn.close()
    if before is not None:
        assert engine.checksum() == before


def test_concurrent_queries_are_bounded(env, engine):
    from concurrent.futures import ThreadPoolExecutor

    from t2sql.databases import connections

    client, _ = env
    running, peak = [0], [0]
    real = connections.Connection._run_server if engine.name != "sqlite" else connections.Connection._run_sqlite

    def counted(self, *args):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.05)
            return real(self, *args)
        finally:
            running[0] -= 1

    mp = pytest.MonkeyPatch()
    mp.setattr(connections.Connection, "_run_server" if engine.name != "sqlite" else "_run_sqlite", counted)
    try:
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda _: _query(client, "SELECT count(*) FROM list").status_code, range(24)))
    finally:
        mp.undo()
    assert peak[0] <= connections.MAX_CONCURRENT_QUERIES
    assert results.count(200) >= 12  # the rest may wait past the 0.5 s limit and get a 400 'too many queries'


QUOTING = [
    "SELECT 'a\\'; DELETE FROM list; -- '",          # a backslash escape in MySQL, the end of a string elsewhere
    "SELECT $$a$$; DELETE FROM list",                 # dollar quoting (PostgreSQL)
    "SELECT 1 /* ; DELETE FROM list; */",
    "SELECT 1 -- \n; DELETE FROM list",
    "SELECT E'\\''; DELETE FROM list; --'",
]


def test_quoting_tricks_run_at_most_one_read(env, engine):
    """Text another parser could split differently: refused, or run as the one read sqlglot saw."""
    client, _ = env
    before = engine.checksum()
    for sql in QUOTING:
        r = _query(client, sql)
        assert r.status_code in (200, 400), (engine.name, sql)
        if r.status_code == 400:
            assert r.json["error_kind"] in ("denied", "syntax", "runtime", "no_such_column"), (engine.name, r.json)
    assert engine.checksum() == before and engine.alive()
    assert _query(client, "SELECT count(*) FROM list").json["rows"] == [[60]]
