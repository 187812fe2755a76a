"""The statement guard, the dialect rewrites, URL masking, charts and CSV: no server needed."""

from __future__ import annotations

import csv
import io

import pytest

from t2sql.databases.charts import chart_kind, chart_svg, result_csv
from t2sql.databases.connections import (Connection, ConnectionConfigError, ConnectionSpec, check_spec,
                                         load_connections, mask_url, parse_url, save_connections, scrub)
from t2sql.databases.dialects import to_dialect
from t2sql.databases.guard import GuardError, check_statement

READS = [
    ("sqlite", "SELECT name, count(*) FROM singer GROUP BY name HAVING count(*) > 1 ORDER BY 2 DESC LIMIT 3"),
    ("sqlite", "WITH t AS (SELECT 1 AS x) SELECT x FROM t UNION SELECT 2"),
    ("sqlite", "SELECT printf('%.2f', avg(age)), lpad(name, 10, ' '), repeat('-', 3) FROM singer"),
    ("postgres", "SELECT generate_series(1, 5)"),
    ("mysql", "SELECT * FROM shop.orders"),
    ("duckdb", "SELECT strftime(d, '%Y') FROM t"),
]
REFUSED = [
    ("sqlite", "DELETE FROM t", "DELETE"),
    ("sqlite", "SELECT 1; SELECT 2", "exactly one statement"),
    ("postgres", "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "DELETE"),
    ("postgres", "SELECT * INTO t2 FROM t", "INTO"),
    ("postgres", "SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
    ("postgres", "SELECT * FROM pg_catalog.pg_authid", "system catalog"),
    ("postgres", "SELECT * FROM generate_series(1, 10)", "table functions"),
    ("postgres", "SELECT repeat('x', n) FROM t", "computed size"),
    ("mysql", "SELECT LOAD_FILE('/etc/passwd')", "load_file"),
    ("mysql", "SELECT * FROM t INTO OUTFILE '/tmp/x'", "OUTFILE"),
    ("mysql", "SELECT * FROM other_db.t", "outside the database"),
    ("duckdb", "SELECT * FROM read_csv('/etc/passwd')", "table functions"),
    ("duckdb", "SELECT * FROM '/etc/passwd'", "looks like a file"),
    ("duckdb", "ATTACH 'x.db'", "ATTACH"),
    ("sqlite", "SELECT load_extension('x')", "load_extension"),
    ("sqlite", "SELECT printf('%.*c', 900000000, 'x')", "900000000"),
    ("sqlite", "SELEC 1", "syntax error"),
]


@pytest.mark.parametrize("dialect, sql", READS)
def test_the_guard_lets_reads_pass(dialect, sql):
    check_statement(sql, dialect, database="shop" if dialect == "mysql" else None)


@pytest.mark.parametrize("dialect, sql, reason", REFUSED)
def test_the_guard_refuses_with_the_reason(dialect, sql, reason):
    with pytest.raises(GuardError) as info:
        check_statement(sql, dialect, database="shop" if dialect == "mysql" else None)
    assert reason.lower() in str(info.value).lower()
    assert info.value.kind == ("syntax" if reason == "syntax error" else "denied")


def test_sqlite_sql_is_rewritten_for_each_dialect():
    names = ["singer", "name", "country", "singer_id"]
    pg = to_dialect('SELECT Name FROM singer WHERE Country = "France" AND Name LIKE \'%jo%\'', "postgres", names)
    assert pg == "SELECT name FROM singer WHERE country = 'France' AND name ILIKE '%jo%'"
    grouped = to_dialect("SELECT T2.Name, count(*) FROM concert AS T1 JOIN singer AS T2 ON T1.Singer_ID = "
                         "T2.Singer_ID GROUP BY T1.Singer_ID", "postgres", names)
    assert grouped.startswith("SELECT MIN(T2.name), COUNT(*)")
    assert "LOWER(" in to_dialect("SELECT Name FROM singer WHERE Name LIKE 'a%'", "mysql", ["Name", "singer"])
    assert to_dialect("SELECT Name FROM singer", "sqlite") == "SELECT Name FROM singer"


def test_passwords_are_masked_in_urls_and_messages(monkeypatch):
    url = "postgresql+psycopg://analyst:s3cr%40t!@db.example:5432/sales"
    assert mask_url(url) == "postgresql+psycopg://analyst:***@db.example:5432/sales"
    assert "s3cr" not in scrub(f"could not connect to {url}: password s3cr@t! rejected", ["s3cr@t!"])
    monkeypatch.setenv("SALES_PW", "hunter2")
    conn = Connection("postgresql+psycopg://analyst@db.example/sales", password_env="SALES_PW")
    assert conn.password == "hunter2" and "hunter2" not in repr(conn) and "hunter2" not in conn.masked_url
    with pytest.raises(ConnectionConfigError, match="NOT_SET_PW"):
        Connection("postgresql+psycopg://a@h/db", password_env="NOT_SET_PW")
    with pytest.raises(ConnectionConfigError) as info:
        parse_url("oracle://u:topsecret@h/db")
    assert "topsecret" not in str(info.value) and "unsupported database engine" in str(info.value)


def test_connection_files_name_the_field_at_fault(tmp_path):
    path = tmp_path / "connections.yaml"
    save_connections(path, [ConnectionSpec("sales", "postgresql+psycopg://ro@127.0.0.1/sales", "SALES_PW")])
    assert load_connections(path) == [ConnectionSpec("sales", "postgresql+psycopg://ro@127.0.0.1/sales", "SALES_PW")]
    with pytest.raises(ConnectionConfigError, match="do not write the password") as info:
        check_spec(ConnectionSpec("x", "postgresql+psycopg://ro:pw123@127.0.0.1/sales"))
    assert "pw123" not in str(info.value)
    path.write_text("connections:\n  - name: a\n    url: sqlite:///x.sqlite\n    colour: red\n")
    with pytest.raises(ConnectionConfigError, match="unknown field 'colour'"):
        load_connections(path)
    with pytest.raises(ConnectionConfigError, match="name 'bad name'"):
        check_spec(ConnectionSpec("bad name", "sqlite:///x.sqlite"))


def test_chart_kinds():
    assert chart_kind(["country", "n"], [("France", 3), ("Spain", 1)]) == "bar"
    assert chart_kind(["day", "sales"], [("2024-05-01", 3.5), ("2024-05-02", 1)]) == "line"
    assert chart_kind(["year", "n"], [(2001, 3), (2002, 4)]) == "line"
    assert chart_kind(["name"], [("a",), ("b",)]) is None
    assert chart_kind(["a", "b"], [("x", "y"), ("z", "w")]) is None
    assert chart_kind(["a", "n"], [("x", 1)]) is None  # one row
    svg = chart_svg(["country", "n"], [("<script>alert(1)</script>", 3), ("Spain", 1)])
    assert svg.startswith("<svg") and svg.count('class="bar"') == 2
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "http" not in svg.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    line = chart_svg(["day", "sales"], [("2024-05-02", 1), ("2024-05-01", 3.5), ("2024-05-03", 2)])
    assert 'class="line"' in line and line.count("<circle") == 3


def test_csv_has_every_row_and_defuses_formulas():
    text = result_csv(["name", "n", "blob"], [("=cmd()", 1, b"\x00\x01"), (None, -2.5, None)])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["name", "n", "blob"], ["'=cmd()", "1", "0x0001"], ["", "-2.5", ""]]


def test_sqlite_strings_and_blobs_are_capped_and_huge_padding_is_refused_at_once():
    import time

    from t2sql.evaluation.execution import MAX_VALUE_BYTES, connect_readonly, execute
    from webui.testing import SPIDER_SAMPLE

    conn = connect_readonly(SPIDER_SAMPLE / "database" / "student_1" / "student_1.sqlite")
    try:
        t0 = time.perf_counter()
        r = execute(conn, "SELECT printf('%.*c', 900000000, 'x')", timeout_s=0.5)
        assert not r.ok and r.error_kind == "denied" and time.perf_counter() - t0 < 0.5
        r = execute(conn, "SELECT length(zeroblob(9999999)) + length(zeroblob(9999999) || zeroblob(9999999))",
                    timeout_s=0.5)
        assert not r.ok and "too big" in r.error and MAX_VALUE_BYTES < 2 * 9999999
        r = execute(conn, "SELECT length(replace(hex(zeroblob(6000000)), '0', 'ab'))", timeout_s=2)
        assert not r.ok and "too big" in r.error  # 24 MB built by a query: refused by the length cap
        assert execute(conn, "SELECT length(hex(zeroblob(1000)))").rows == [(2000,)]
    finally:
        conn.close()


def test_a_password_can_come_from_the_secrets_file(tmp_path):
    from t2sql.databases.connections import read_secrets

    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("sales: 'p@ss w0rd'\n")
    spec = ConnectionSpec("sales", "postgresql+psycopg://ro@127.0.0.1/sales", password_secret="sales")
    password = spec.password(read_secrets(secrets))
    conn = Connection(spec.url, password=password)
    assert conn.url.password == "p@ss w0rd" and "p@ss" not in conn.masked_url
    assert "p@ss" not in conn.scrub("FATAL: password 'p@ss w0rd' / p%40ss%20w0rd rejected")
    with pytest.raises(ConnectionConfigError, match="secret 'other'"):
        ConnectionSpec("x", spec.url, password_secret="other").password(read_secrets(secrets))
    secrets.write_text("- not a mapping\n")
    with pytest.raises(ConnectionConfigError, match="must map names to passwords"):
        read_secrets(secrets)


def test_ask_on_a_duckdb_file(tmp_path, capsys):
    from cli import main
    from t2sql.databases.load import load_sqlite
    from webui.testing import SPIDER_SAMPLE

    db = tmp_path / "school.duckdb"
    load_sqlite(SPIDER_SAMPLE / "database" / "student_1" / "student_1.sqlite", f"duckdb:///{db}")
    before = db.read_bytes()
    assert main(["ask", "--sql", "SELECT grade, count(*) FROM list GROUP BY grade ORDER BY grade", "--db", str(db),
                 "--chart", str(tmp_path / "c.svg")]) == 0
    out = capsys.readouterr().out
    assert "SQL (duckdb)" in out and "(7 rows)" in out and (tmp_path / "c.svg").read_text().startswith("<svg")
    assert main(["ask", "--sql", "SELECT * FROM read_csv('/etc/passwd')", "--db", f"duckdb:///{db}"]) == 1
    assert "table functions" in capsys.readouterr().err
    assert main(["ask", "--sql", "DELETE FROM list", "--db", str(db)]) == 1
    assert db.read_bytes() == before


def test_schema_only_records_are_not_sent_to_the_server():
    from t2sql.evaluation.judge import ExampleScorer, ScoringOptions

    scorer = ExampleScorer(ScoringOptions(database_url="postgresql+psycopg://u@127.0.0.1:1/{db_id}", fuzz_databases=1))
    try:
        line, _ = scorer.score({"question": "q", "answer": "SELECT count(*) FROM t",
                                "context": "CREATE TABLE t (x NUMBER)"}, "SELECT count(*) FROM t")
    finally:
        scorer.close()
    assert line["eval_mode"] == "fuzz" and line["execution_match"] is True
