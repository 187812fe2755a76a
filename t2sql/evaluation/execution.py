"""Run SQL safely on SQLite: read-only, reads-only authorizer, time limit and row cap.

Everything that executes generated or user-edited SQL (evaluation, ``t2sql ask``, the web GUI)
goes through :func:`execute`. The database file is opened read-only through a URI, an
authorizer refuses anything but reads (no ATTACH, PRAGMA, DDL or DML), a progress handler
aborts queries past their time limit, strings and blobs are capped at :data:`MAX_VALUE_BYTES`,
and at most ``row_cap`` rows are fetched. Other engines (PostgreSQL, MySQL/MariaDB, DuckDB) and
the statement guard are in :mod:`t2sql.databases`.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

_ALLOWED = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}


#: Longest string or blob a query may build (SQLITE_LIMIT_LENGTH): ``printf('%.*c', 900000000, 'x')`` cannot
#: grow the process by gigabytes inside one function call, where the time limit cannot reach.
MAX_VALUE_BYTES = 10 * 1024 * 1024


_SIZED_CALL = re.compile(r"\b(printf|format|zeroblob|randomblob|replace|substr|char)\s*\(", re.IGNORECASE)
_BIG_NUMBER = re.compile(r"(?<![\w.])\d{8,}")


def oversized_call(sql: str) -> bool:
    """True when ``sql`` calls a string-building function next to a literal of 8 or more digits.

    SQLite's printf pads in a loop that neither the time limit nor the length cap stops early
    (``printf('%.*c', 900000000, 'x')`` ran 10 s against a 0.5 s limit); such text is refused before it runs.
    """
    return bool(_SIZED_CALL.search(sql)) and bool(_BIG_NUMBER.search(sql))


def limit_sizes(conn: sqlite3.Connection, max_bytes: int = MAX_VALUE_BYTES) -> sqlite3.Connection:
    """Cap the strings and blobs ``conn`` can build at ``max_bytes`` (SQLite's ``SQLITE_LIMIT_LENGTH``)."""
    if hasattr(conn, "setlimit"):
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_bytes)
    return conn


def _authorizer(action: int, arg1, arg2, dbname, source) -> int:
    if action in _ALLOWED:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


@dataclass
class ExecResult:
    """The outcome of one query."""

    ok: bool
    rows: list[tuple] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None  # "timeout", "denied", "syntax", "no_such_table", "no_such_column", "runtime"
    elapsed_ms: float = 0.0
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": [list(r) for r in self.rows], "columns": self.columns, "error": self.error,
                "error_kind": self.error_kind, "elapsed_ms": self.elapsed_ms, "truncated": self.truncated}


def connect_readonly(db_path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open an existing SQLite file read-only with the reads-only authorizer installed.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(db_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"database not found: {path}")
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, check_same_thread=False)
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    conn.set_authorizer(_authorizer)
    return limit_sizes(conn)


def connect_schema(context: str) -> sqlite3.Connection:
    """An in-memory database built from CREATE TABLE statements, then locked to reads only.

    Raises:
        sqlite3.Error: the statements do not run.
    """
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.executescript(context)
    conn.set_authorizer(_authorizer)
    return limit_sizes(conn)


def lock_reads_only(conn: sqlite3.Connection) -> sqlite3.Connection:
    """Install the reads-only authorizer on a connection (after it has been filled) and return it."""
    conn.set_authorizer(_authorizer)
    return conn


def classify_error(message: str) -> str:
    m = message.lower()
    if "interrupted" in m:
        return "timeout"
    if "not authorized" in m or "prohibited" in m or "readonly" in m or "read-only" in m:
        return "denied"
    if "no such table" in m:
        return "no_such_table"
    if "no such column" in m or "ambiguous column" in m:
        return "no_such_column"
    if "syntax error" in m or "incomplete input" in m or "unrecognized token" in m:
        return "syntax"
    return "runtime"


def execute(conn_or_path: sqlite3.Connection | str | os.PathLike[str], sql: str, *, timeout_s: float = 5.0,
            row_cap: int = 10000) -> ExecResult:
    """Run one statement and fetch at most ``row_cap`` rows within ``timeout_s`` seconds.

    Args:
        conn_or_path: a connection from :func:`connect_readonly` / :func:`connect_schema`, or a file path.
        sql: a single SQL statement.

    Returns:
        An :class:`ExecResult`; failures are reported in it, never raised.
    """
    if oversized_call(sql):
        return ExecResult(ok=False, error=f"a string of that size is refused: strings and blobs are capped at "
                                          f"{MAX_VALUE_BYTES} bytes", error_kind="denied")
    own = not isinstance(conn_or_path, sqlite3.Connection)
    try:
        conn = connect_readonly(conn_or_path) if own else conn_or_path
    except (FileNotFoundError, sqlite3.Error) as exc:
        return ExecResult(ok=False, error=str(exc), error_kind="runtime")
    deadline = time.perf_counter() + timeout_s
    conn.set_progress_handler(lambda: 1 if time.perf_counter() > deadline else 0, 1000)
    t0 = time.perf_counter()
    try:
        cur = conn.execute(sql)
        rows = cur.fetchmany(row_cap + 1)
        columns = [d[0] for d in (cur.description or [])]
        truncated = len(rows) > row_cap
        return ExecResult(ok=True, rows=rows[:row_cap], columns=columns, truncated=truncated,
                          elapsed_ms=(time.perf_counter() - t0) * 1000.0)
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as exc:
        msg = str(exc)
        kind = classify_error(msg)
        if kind == "timeout":
            msg = f"query stopped after the {timeout_s:g} s time limit"
        return ExecResult(ok=False, error=msg, error_kind=kind, elapsed_ms=(time.perf_counter() - t0) * 1000.0)
    finally:
        conn.set_progress_handler(None, 0)
        if own:
            conn.close()
