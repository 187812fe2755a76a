"""The statement guard: t2sql's own check that a query only reads the connected database.

Every engine also enforces read-only on its side (see :mod:`t2sql.databases.connections`); this
guard is the second, engine-independent check. The text is parsed with sqlglot in the
connection's dialect and must be exactly one query (``SELECT``, ``WITH ... SELECT`` or a set
operation of them) that

- holds no data-changing or schema-changing statement anywhere (``WITH d AS (DELETE ...)``,
  ``SELECT ... INTO``, ``FOR UPDATE``),
- calls no function that reads files, other servers or the server's settings
  (``pg_read_file``, ``lo_import``, ``dblink``, ``LOAD_FILE``, ``read_csv``, ``load_extension``, ...),
- reads no system catalog or other database (``pg_catalog``, ``information_schema``, ``mysql.user``,
  ``sqlite_master``, a file name or a table function in ``FROM``),
- builds no string longer than :data:`MAX_STRING_CHARS` from a literal size
  (``repeat('x', 900000000)``, ``printf('%.*c', 900000000, 'x')``); such sizes must be literals.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp

from t2sql.data.schema import too_many_joins

#: The longest string a query may build with repeat/lpad/printf-style functions.
MAX_STRING_CHARS = 1_000_000

#: Functions refused by name (lower case), on every engine.
DENIED_FUNCTIONS = frozenset({
    # files and the server (PostgreSQL)
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir", "pg_ls_waldir",
    "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_file_write", "pg_file_rename", "pg_file_unlink",
    "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile", "pg_sleep",
    "pg_sleep_for", "pg_sleep_until", "set_config", "current_setting", "pg_advisory_lock", "txid_current",
    "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "cursor_to_xml", "cursor_to_xmlschema",
    "table_to_xml", "table_to_xml_and_xmlschema", "schema_to_xml", "database_to_xml", "database_to_xmlschema",
    "database_to_xml_and_xmlschema", "dblink", "dblink_exec", "dblink_connect", "dblink_send_query",
    "version", "inet_server_addr", "inet_server_port", "current_user", "session_user", "user", "current_database",
    "current_schema", "current_schemas", "nextval", "setval", "currval", "lastval",
    # MySQL / MariaDB
    "load_file", "sleep", "benchmark", "get_lock", "release_lock", "sys_eval", "sys_exec", "database", "schema",
    "system_user", "connection_id", "last_insert_id", "master_pos_wait", "uuid_short",
    # DuckDB
    "read_csv", "read_csv_auto", "read_parquet", "parquet_scan", "read_json", "read_json_auto", "read_json_objects",
    "read_ndjson", "read_ndjson_auto", "read_text", "read_blob", "glob", "sniff_csv", "parquet_metadata",
    "parquet_schema", "iceberg_scan", "delta_scan", "sqlite_scan", "postgres_scan", "mysql_scan", "getenv",
    "duckdb_settings", "duckdb_extensions", "duckdb_databases", "duckdb_secrets", "query", "query_table",
    # SQLite
    "load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "sqlite_version", "sqlite_source_id",
    "sqlite_compileoption_get", "sqlite_compileoption_used", "zeroblob", "randomblob",
})
#: Function name prefixes refused on every engine.
DENIED_PREFIXES = ("pg_", "lo_", "dblink", "read_", "duckdb_", "sqlite_", "xml", "sys_", "current_setting")
#: Functions whose size argument must be a literal no larger than :data:`MAX_STRING_CHARS`.
SIZED_FUNCTIONS = frozenset({"repeat", "lpad", "rpad", "pad", "space", "printf", "format", "replicate", "leftpad",
                             "rightpad", "repeat_row", "range", "generate_series", "exploding_generate_series",
                             "number_to_str"})
#: Schemas and databases outside the user's data.
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast", "mysql", "performance_schema", "sys",
                            "temp", "pg_temp", "system", "duckdb_catalog"})
_SYSTEM_TABLE = re.compile(r"^(pg_|sqlite_|duckdb_)", re.IGNORECASE)
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command,
           exp.Copy, exp.Into, exp.Lock, exp.Attach, exp.Detach, exp.Pragma, exp.Set, exp.Use, exp.Transaction,
           exp.Commit, exp.Rollback, exp.TruncateTable, exp.LoadData, exp.Grant, exp.Revoke, exp.Analyze)
_QUERIES = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery)


class GuardError(ValueError):
    """A statement the guard refuses; ``str()`` says why, ``kind`` is the error kind shown to users."""

    def __init__(self, message: str, kind: str = "denied"):
        super().__init__(message)
        self.kind = kind


def _function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    try:
        return node.sql_name().lower()
    except (AttributeError, TypeError):
        return type(node).__name__.lower()


def _literal_int(node: exp.Expression | None) -> int | None:
    if isinstance(node, exp.Neg):
        return None if _literal_int(node.this) is None else -_literal_int(node.this)
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return int(float(node.this))
        except (TypeError, ValueError):
            return None
    return None


def _check_sizes(func: exp.Func, name: str) -> None:
    args = [a for a in func.iter_expressions() if isinstance(a, exp.Expression)]
    numeric = [a for a in args if not (isinstance(a, exp.Literal) and a.is_string)]
    if name in {"printf", "format", "number_to_str"}:
        numeric = [a for a in args[1:] if not (isinstance(a, exp.Literal) and a.is_string)]
        # the values printed may be columns; a literal width is what makes a huge string
        for a in numeric:
            value = _literal_int(a)
            if value is not None and abs(value) > MAX_STRING_CHARS:
                raise GuardError(f"{name}() with a size of {value} is refused: strings are capped at "
                                 f"{MAX_STRING_CHARS} characters")
        fmt = args[0] if args else None
        if isinstance(fmt, exp.Literal) and fmt.is_string and re.search(r"%[-+ #0]*(\d{7,}|\*)|%\.(\d{7,}|\*)", fmt.this):
            if any(_literal_int(a) is None for a in numeric) or not numeric:
                raise GuardError(f"{name}() with a computed width is refused: widths must be literal numbers")
        return
    for a in numeric:
        value = _literal_int(a)
        if value is None and not isinstance(a, (exp.Column, exp.Literal)):
            continue
        if value is not None and abs(value) > MAX_STRING_CHARS:
            raise GuardError(f"{name}() with a size of {value} is refused: strings and series are capped at "
                             f"{MAX_STRING_CHARS}")
    if name in {"repeat", "space", "replicate", "lpad", "rpad", "pad", "range", "generate_series",
                "exploding_generate_series"}:
        sizes = args[1:2] if name not in {"space", "range", "generate_series", "exploding_generate_series"} else args
        for a in sizes:
            if _literal_int(a) is None and not (isinstance(a, exp.Literal) and a.is_string):
                raise GuardError(f"{name}() with a computed size is refused: sizes must be literal numbers "
                                 f"(at most {MAX_STRING_CHARS})")


def check_tree(tree: exp.Expression, *, database: str | None = None) -> exp.Expression:
    """Check one parsed statement; return it unchanged.

    Args:
        tree: the statement parsed by sqlglot.
        database: the connected database's name (a MySQL table qualified by it is allowed).

    Raises:
        GuardError: the statement is not a plain read of the connected database; the message says why.
    """
    if not isinstance(tree, _QUERIES):
        kind = type(tree).__name__.upper()
        raise GuardError(f"only reading queries (SELECT or WITH ... SELECT) are allowed, not {kind}")
    for node in tree.walk():
        if isinstance(node, _WRITES):
            what = "SELECT ... INTO" if isinstance(node, exp.Into) else \
                "FOR UPDATE/SHARE" if isinstance(node, exp.Lock) else type(node).__name__.upper()
            raise GuardError(f"only reading queries are allowed: {what} is refused")
        if isinstance(node, exp.Func):
            name = _function_name(node)
            if name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES):
                raise GuardError(f"the function {name}() is refused: it reads outside the database or "
                                 f"the server's state")
            if name in SIZED_FUNCTIONS:
                _check_sizes(node, name)
        if isinstance(node, exp.Table):
            if not isinstance(node.this, exp.Identifier):
                raise GuardError("only tables of the database can be read: files and table functions "
                                 "in FROM are refused")
            schema = (node.db or "").lower()
            catalog = (node.catalog or "").lower()
            if catalog and catalog not in {"main", (database or "").lower()}:
                raise GuardError(f"the table {node.sql()} is in another database: refused")
            if schema in SYSTEM_SCHEMAS or catalog in SYSTEM_SCHEMAS:
                raise GuardError(f"the table {node.sql()} is a system catalog: refused")
            if database is not None and schema and schema not in {database.lower(), "public", "main"}:
                raise GuardError(f"the table {node.sql()} is outside the database {database!r}: refused")
            if re.search(r"[/\\\\.:~]", node.name or ""):
                raise GuardError(f"{node.name!r} looks like a file: only tables of the database can be read")
            if _SYSTEM_TABLE.match(node.name or ""):
                raise GuardError(f"the table {node.name} is a system catalog: refused")
    return tree


def check_statement(sql: str, dialect: str = "sqlite", *, database: str | None = None) -> exp.Expression:
    """Parse ``sql`` in ``dialect`` and check it is exactly one reading query of the database.

    Args:
        sql: the statement text.
        dialect: sqlglot's dialect name (``sqlite``, ``postgres``, ``mysql``, ``duckdb``).
        database: the connected database's name, for MySQL's ``db.table`` references.

    Returns:
        The parsed statement.

    Raises:
        GuardError: refused (kind ``denied``) or unparseable (kind ``syntax``).
    """
    text = (sql or "").strip()
    if not text:
        raise GuardError("there is no SQL to run", kind="syntax")
    if too_many_joins(text):
        raise GuardError("the query chains too many JOINs to be checked", kind="syntax")
    if re.search(r"\binto\s+(out|dump)file\b", text, re.IGNORECASE):
        raise GuardError("only reading queries are allowed: INTO OUTFILE/DUMPFILE is refused")
    try:
        trees = [t for t in sqlglot.parse(text, read=dialect) if t is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise GuardError(f"syntax error: the SQL does not parse ({str(exc).splitlines()[0][:300]})",
                         kind="syntax") from None
    except RecursionError:
        raise GuardError("the SQL is nested too deeply to be checked", kind="syntax") from None
    if len(trees) != 1:
        raise GuardError(f"exactly one statement may run, got {len(trees)}: only reading queries are allowed")
    return check_tree(trees[0], database=database)
