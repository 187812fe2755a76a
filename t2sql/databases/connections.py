"""Connections by URL to SQLite, DuckDB, PostgreSQL and MySQL/MariaDB, read-only on every engine.

    conn = Connection("postgresql+psycopg://ro_user@127.0.0.1:5432/shop", password_env="SHOP_PASSWORD")
    result = conn.execute("SELECT count(*) FROM orders")            # guarded, read-only, time- and row-capped
    conn.masked_url                                                   # postgresql+psycopg://ro_user:***@...

Read-only is enforced twice. t2sql's guard (:mod:`t2sql.databases.guard`) admits exactly one
reading query; then the engine itself refuses writes:

- SQLite: the file opened with ``mode=ro`` and an authorizer that allows reads only
  (:func:`t2sql.evaluation.execution.connect_readonly`), a progress handler for the time limit,
  ``SQLITE_LIMIT_LENGTH`` for string and blob sizes;
- PostgreSQL: ``default_transaction_read_only=on`` for the session, each query in a
  ``READ ONLY`` transaction with ``SET LOCAL statement_timeout`` and rolled back;
- MySQL/MariaDB: the session's transactions read only, each query in ``START TRANSACTION READ ONLY``
  with ``max_execution_time`` (MySQL) or ``max_statement_time`` (MariaDB), then rolled back; strings
  are capped by the server's ``max_allowed_packet``;
- DuckDB: the file opened ``read_only=True`` with ``enable_external_access=false`` (no files,
  ATTACH, INSTALL or LOAD), a ``memory_limit``, and the configuration locked; the time limit
  interrupts the query.

Passwords never leave this module: :attr:`Connection.masked_url` and every error message go
through :func:`mask_url` / :func:`scrub`. A password comes from the URL, from an environment
variable (``password_env``), from ``${VAR}`` placeholders in the URL, or from a secrets file.
At most :data:`MAX_CONCURRENT_QUERIES` queries run at once across all connections, each holding at
most ``row_cap`` rows of at most :data:`MAX_RESULT_BYTES` bytes.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from t2sql.databases.dialects import rewrite, sqlglot_dialect
from t2sql.databases.guard import GuardError, check_statement
from t2sql.evaluation.execution import ExecResult, classify_error, connect_readonly

#: Queries running at once across every connection of the process; others wait up to their time limit.
MAX_CONCURRENT_QUERIES = 4
#: Bytes of text and blobs one result may hold; past it the result is truncated.
MAX_RESULT_BYTES = 16 * 1024 * 1024
#: Longest string or blob an engine may build (SQLite's SQLITE_LIMIT_LENGTH).
MAX_VALUE_BYTES = 10 * 1024 * 1024
#: Seconds a server's schema, sample values and value index stay cached.
SCHEMA_CACHE_S = 600
#: DuckDB's memory limit per database.
DUCKDB_MEMORY_LIMIT = "256MB"
SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
DUCKDB_SUFFIXES = (".duckdb", ".ddb")
_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_QUERIES)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]*@", re.IGNORECASE)


class ConnectionConfigError(ValueError):
    """A connection URL or setting is unusable; the message names it with the password masked."""


def _sa():
    import sqlalchemy

    return sqlalchemy


def mask_url(url: Any) -> str:
    """The URL as text with its password replaced by ``***`` (SQLAlchemy's ``hide_password``)."""
    sa = _sa()
    if isinstance(url, sa.engine.URL):
        return url.render_as_string(hide_password=True)
    text = str(url)
    try:
        return sa.engine.make_url(text).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: scrub whatever looks like user:password@
        return scrub(text)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without any of ``secrets`` (plain or URL-quoted) and without ``user:password@`` in URLs."""
    from urllib.parse import quote, quote_plus

    out = _URL_PASSWORD.sub(r"\1:***@", str(text))
    for secret in secrets:
        if secret and len(secret) >= 1:
            for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
                out = out.replace(form, "***")
    return out


def _expand(text: str) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise ConnectionConfigError(f"the environment variable {name} named in a connection URL is not set")
        return os.environ[name]

    return _VAR.sub(sub, text)


def parse_url(text: str | os.PathLike[str], *, password: str | None = None):
    """A SQLAlchemy URL from a URL text or a database file path.

    A path ending in ``.sqlite``/``.sqlite3``/``.db`` is SQLite, ``.duckdb``/``.ddb`` DuckDB;
    ``${VAR}`` placeholders are filled from the environment; ``password`` replaces the URL's.

    Raises:
        ConnectionConfigError: not a URL of a supported engine (the message masks the password).
    """
    sa = _sa()
    raw = os.fspath(text).strip()
    if not raw:
        raise ConnectionConfigError("the connection URL is empty")
    if "://" not in raw:
        path = Path(raw).expanduser()
        if path.suffix.lower() in DUCKDB_SUFFIXES:
            raw = f"duckdb:///{path.resolve()}"
        elif path.suffix.lower() in SQLITE_SUFFIXES or path.is_file():
            raw = f"sqlite:///{path.resolve()}"
        else:
            raise ConnectionConfigError(f"{raw!r} is neither a URL (postgresql+psycopg://..., mysql+pymysql://..., "
                                        f"duckdb:///file.duckdb, sqlite:///file.sqlite) nor a database file")
    try:
        url = sa.engine.make_url(_expand(raw))
    except ConnectionConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises ArgumentError and ValueError alike
        raise ConnectionConfigError(f"connection URL {mask_url(raw)}: {scrub(str(exc))}") from None
    try:
        sqlglot_dialect(url.get_backend_name())
    except ValueError as exc:
        raise ConnectionConfigError(f"connection URL {mask_url(url)}: {exc}") from None
    if password is not None:
        url = url.set(password=password)
    if url.get_backend_name() in ("sqlite", "duckdb"):
        if not url.database or url.database == ":memory:":
            raise ConnectionConfigError(f"connection URL {mask_url(url)}: name a database file")
    elif not url.database:
        raise ConnectionConfigError(f"connection URL {mask_url(url)}: name the database (…/dbname)")
    return url


def read_secrets(path: str | os.PathLike[str] | None) -> dict[str, str]:
    """A secrets file (YAML or JSON mapping of name -> password); {} without a path.

    Raises:
        ConnectionConfigError: the file is unreadable or not a mapping of strings.
    """
    if not path:
        return {}
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConnectionConfigError(f"secrets file {p}: {type(exc).__name__}") from None
    if not isinstance(data, dict) or not all(isinstance(v, (str, int)) for v in data.values()):
        raise ConnectionConfigError(f"secrets file {p}: must map names to passwords")
    return {str(k): str(v) for k, v in data.items()}


@dataclass(frozen=True)
class ConnectionSpec:
    """A named connection as an admin configures it; the password is never stored here.

    Attributes:
        name: the name users choose the database by.
        url: SQLAlchemy URL or database file (without a password; ``${VAR}`` placeholders allowed).
        password_env: environment variable holding the password.
        password_secret: key of the password in the secrets file.
    """

    name: str
    url: str
    password_env: str | None = None
    password_secret: str | None = None

    def password(self, secrets: dict[str, str] | None = None) -> str | None:
        """The password from the environment or the secrets file (None when neither is configured).

        Raises:
            ConnectionConfigError: the named variable or secret is missing.
        """
        if self.password_env:
            if self.password_env not in os.environ:
                raise ConnectionConfigError(f"connection {self.name!r}: the environment variable "
                                            f"{self.password_env} is not set")
            return os.environ[self.password_env]
        if self.password_secret:
            if self.password_secret not in (secrets or {}):
                raise ConnectionConfigError(f"connection {self.name!r}: the secret {self.password_secret!r} is not "
                                            f"in the secrets file")
            return (secrets or {})[self.password_secret]
        return None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("name", self.name), ("url", self.url), ("password_env", self.password_env),
                                  ("password_secret", self.password_secret)) if v}


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,59}$")


def check_spec(spec: ConnectionSpec) -> ConnectionSpec:
    """Check a connection's name and URL; the URL must not carry a password itself.

    Raises:
        ConnectionConfigError: the field at fault is named, the URL masked.
    """
    if not _NAME.match(spec.name or ""):
        raise ConnectionConfigError(f"name {spec.name!r}: letters, digits, '_', '-' and '.' only (at most 60)")
    url = parse_url(spec.url) if not _VAR.search(spec.url) else None
    if url is not None and url.password and not _VAR.search(spec.url):
        raise ConnectionConfigError(f"url {mask_url(url)}: do not write the password into the URL; name an "
                                    f"environment variable (password_env) or a secret (password_secret)")
    if spec.password_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", spec.password_env):
        raise ConnectionConfigError(f"password_env {spec.password_env!r}: not an environment variable name")
    return spec


def load_connections(path: str | os.PathLike[str]) -> list[ConnectionSpec]:
    """The connections of a YAML file ``{connections: [{name, url, password_env?, password_secret?}]}``.

    A missing file has none.

    Raises:
        ConnectionConfigError: the file or an entry is invalid (the entry and field are named).
    """
    p = Path(path)
    if not p.is_file():
        return []
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConnectionConfigError(f"connections file {p}: {type(exc).__name__}: {scrub(str(exc))}") from None
    entries = data.get("connections", []) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConnectionConfigError(f"connections file {p}: expected 'connections:' with a list of entries")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("url"):
            raise ConnectionConfigError(f"connections file {p}: entry {i + 1} needs 'name' and 'url'")
        unknown = set(entry) - {"name", "url", "password_env", "password_secret"}
        if unknown:
            raise ConnectionConfigError(f"connections file {p}: entry {entry['name']!r}: unknown field "
                                        f"{sorted(unknown)[0]!r}")
        try:
            out.append(check_spec(ConnectionSpec(str(entry["name"]), str(entry["url"]), entry.get("password_env"),
                                                 entry.get("password_secret"))))
        except ConnectionConfigError as exc:
            raise ConnectionConfigError(f"connections file {p}: entry {entry['name']!r}: {exc}") from None
    return out


def save_connections(path: str | os.PathLike[str], specs: Iterable[ConnectionSpec]) -> None:
    """Write connections to a YAML file (atomically); passwords are never part of a spec."""
    from t2sql.io import atomic_open

    with atomic_open(Path(path)) as f:
        yaml.safe_dump({"connections": [s.as_dict() for s in specs]}, f, sort_keys=False)


def _plain(value: Any) -> Any:
    """A fetched value as SQLite would give it: numbers, text, bytes or None."""
    if value is None or isinstance(value, (int, float, str, bytes)):
        return int(value) if isinstance(value, bool) else value
    if isinstance(value, decimal.Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, (memoryview, bytearray)):
        return bytes(value)
    if isinstance(value, _dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (_dt.timedelta, uuid.UUID)):
        return str(value)
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _fetch(cursor, row_cap: int) -> tuple[list[tuple], list[str], bool]:
    columns = [d[0] for d in (cursor.description or [])]
    rows: list[tuple] = []
    size = 0
    truncated = False
    while True:
        batch = cursor.fetchmany(min(500, row_cap + 1 - len(rows)))
        if not batch:
            break
        for raw in batch:
            row = tuple(_plain(v) for v in raw)
            size += sum(len(v) for v in row if isinstance(v, (str, bytes)))
            if len(rows) >= row_cap or size > MAX_RESULT_BYTES:
                truncated = True
                break
            rows.append(row)
        if truncated or len(rows) >= row_cap + 1:
            break
    return rows, columns, truncated


def _classify(exc: BaseException, dialect: str) -> str:
    """The error kind of a server's exception, in the SQLite kinds :class:`ExecResult` uses."""
    code = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "diag", None), "sqlstate", None)
    if dialect == "postgres" and code:
        if code in ("25006", "42501"):
            return "denied"
        if code == "57014":
            return "timeout"
        if code == "42P01":
            return "no_such_table"
        if code in ("42703", "42702"):
            return "no_such_column"
        if code.startswith("42601"):
            return "syntax"
        return "runtime"
    if dialect == "mysql" and getattr(exc, "args", None) and isinstance(exc.args[0], int):
        errno = exc.args[0]
        if errno in (1792, 1142, 1044, 1045, 1227, 1290, 1370):
            return "denied"
        if errno in (3024, 1969, 1317, 2013):
            return "timeout"
        if errno == 1146:
            return "no_such_table"
        if errno in (1054, 1052):
            return "no_such_column"
        if errno in (1064, 1149):
            return "syntax"
        return "runtime"
    name = type(exc).__name__
    msg = str(exc).lower()
    if name == "InterruptException" or "interrupted" in msg:
        return "timeout"
    if name in ("PermissionException",) or "read-only" in msg or "read only" in msg or "cannot execute" in msg:
        return "denied"
    if name == "CatalogException" and "table" in msg:
        return "no_such_table"
    if name == "BinderException" and "column" in msg:
        return "no_such_column"
    if name == "ParserException":
        return "syntax"
    return classify_error(str(exc))


@dataclass
class Connection:
    """One database, by URL or file path, answering guarded read-only queries.

    Args:
        url: a SQLAlchemy URL (``postgresql+psycopg://``, ``mysql+pymysql://``, ``duckdb:///``,
            ``sqlite:///``) or a database file path.
        name: the name shown to users (default: the database's name).
        password: replaces the URL's password (from :meth:`ConnectionSpec.password`).
        password_env: read the password from this environment variable.
        timeout_s: default time limit per query.
        row_cap: default rows fetched at most.
    """

    url: Any
    name: str | None = None
    password: str | None = None
    password_env: str | None = None
    timeout_s: float = 5.0
    row_cap: int = 1000
    _engine: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _flavour: str | None = field(default=None, init=False, repr=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.password_env:
            if self.password_env not in os.environ:
                raise ConnectionConfigError(f"the environment variable {self.password_env} (password of "
                                            f"{mask_url(self.url)}) is not set")
            self.password = os.environ[self.password_env]
        self.url = parse_url(self.url, password=self.password) if not isinstance(self.url, _sa().engine.URL) \
            else (self.url.set(password=self.password) if self.password is not None else self.url)
        self.password = self.url.password if self.url.password else None
        self.backend = self.url.get_backend_name()
        self.dialect = sqlglot_dialect(self.backend)
        self.database = Path(self.url.database).stem if self.dialect in ("sqlite", "duckdb") else self.url.database
        self.name = self.name or self.database

    # -- identity ------------------------------------------------------------------------------
    @property
    def masked_url(self) -> str:
        """The URL without its password, safe for pages, logs and API answers."""
        return mask_url(self.url)

    @property
    def path(self) -> Path | None:
        """The database file of a SQLite or DuckDB connection (None for servers)."""
        return Path(self.url.database).resolve() if self.dialect in ("sqlite", "duckdb") else None

    def scrub(self, text: str) -> str:
        """``text`` with this connection's password (and any URL password) masked."""
        return scrub(text, [self.password])

    def version(self) -> tuple:
        """A value that changes when the database may have changed: a file's mtime and size; for servers
        the current :data:`SCHEMA_CACHE_S` period, so a server's schema is read again at most that often."""
        if self.path is not None:
            try:
                st = self.path.stat()
                return (st.st_mtime_ns, st.st_size)
            except OSError:
                return (0, 0)
        return (int(time.time() // SCHEMA_CACHE_S),)

    def __repr__(self) -> str:  # never the password
        return f"Connection({self.masked_url!r}, name={self.name!r})"

    # -- engines -------------------------------------------------------------------------------
    def engine(self):
        """The SQLAlchemy engine of a server or DuckDB connection, created once, sessions read-only."""
        if self.dialect == "sqlite":
            raise ValueError("SQLite connections use sqlite3 directly")
        with self._lock:
            if self._engine is None:
                self._engine = self._create_engine()
            return self._engine

    def _create_engine(self):
        sa = _sa()
        ms = int(self.timeout_s * 1000)
        kwargs: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
        if self.dialect == "postgres":
            kwargs.update(pool_size=2, max_overflow=2, pool_timeout=max(1.0, self.timeout_s), connect_args={
                "connect_timeout": 10, "application_name": "t2sql",
                "options": f"-c default_transaction_read_only=on -c statement_timeout={ms} "
                           f"-c idle_in_transaction_session_timeout={max(ms * 4, 60000)} -c lock_timeout={ms} "
                           f"-c work_mem=16MB"})
        elif self.dialect == "mysql":
            kwargs.update(pool_size=2, max_overflow=2, pool_timeout=max(1.0, self.timeout_s), pool_recycle=3600,
                          connect_args={"connect_timeout": 10, "read_timeout": int(self.timeout_s) + 30,
                                        "charset": "utf8mb4", "init_command": "SET SESSION div_precision_increment = 30"})
        elif self.dialect == "duckdb":
            if not self.path or not self.path.is_file():
                raise ConnectionConfigError(f"connection URL {self.masked_url}: the DuckDB file does not exist")
            kwargs.update(connect_args={"read_only": True, "config": {
                "enable_external_access": False, "memory_limit": DUCKDB_MEMORY_LIMIT, "threads": 2,
                "autoinstall_known_extensions": False, "autoload_known_extensions": False,
                "lock_configuration": True}})
        return sa.create_engine(self.url, **kwargs)

    def close(self) -> None:
        """Close pooled connections."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    # -- running SQL ---------------------------------------------------------------------------
    def guard(self, sql: str, *, read: str | None = None):
        """Parse and check ``sql`` (in ``read``'s dialect, default this connection's); the checked tree.

        Raises:
            GuardError: refused or unparseable.
        """
        return check_statement(sql, read or self.dialect,
                               database=self.database if self.dialect == "mysql" else None)

    def prepare(self, sql: str, *, read: str | None = None, names: Iterable[str] | None = None) -> str:
        """``sql`` checked by the guard and written in this connection's dialect (what runs and is shown).

        Args:
            sql: one statement.
            read: the dialect it is written in (``sqlite`` for the model's SQL; default: this connection's).
            names: stored table/column names (their case is kept); default: read from the database.

        Raises:
            GuardError: refused or unparseable.
        """
        source = sqlglot_dialect(read or self.dialect)
        tree = self.guard(sql, read=source)
        if source == self.dialect:
            if self.dialect == "sqlite":  # sqlite3 runs one statement at most, under the reads-only authorizer
                return sql
            # servers run the statement as sqlglot read it, so no text its parser saw differently (a
            # second statement hidden in a string's escapes or a comment) reaches the server
            return tree.sql(dialect=self.dialect)
        if names is None:
            from t2sql.databases.introspect import stored_names

            names = stored_names(self)
        tree = rewrite(tree, self.dialect, names)
        out = tree.sql(dialect=self.dialect)
        self.guard(out)  # what runs is checked in its own dialect too
        return out

    def execute(self, sql: str, *, read: str | None = None, timeout_s: float | None = None,
                row_cap: int | None = None) -> ExecResult:
        """Check, rewrite for the engine and run one statement read-only within the limits.

        Args:
            sql: the statement.
            read: its dialect (``sqlite`` for the model's SQL; default: this connection's own).
            timeout_s: time limit (default the connection's).
            row_cap: rows fetched at most (default the connection's).

        Returns:
            An :class:`ExecResult`; a refusal has ``error_kind="denied"`` (or ``syntax``), messages
            never hold the password.
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        row_cap = self.row_cap if row_cap is None else row_cap
        try:
            text = self.prepare(sql, read=read)
        except GuardError as exc:
            return ExecResult(ok=False, error=self.scrub(str(exc)), error_kind=exc.kind)
        except Exception as exc:  # noqa: BLE001 - introspection failing: a server that is down
            return ExecResult(ok=False, error=self.scrub(f"{type(exc).__name__}: {exc}"), error_kind="runtime")
        return self.run_unchecked(text, timeout_s=timeout_s, row_cap=row_cap)

    def run_unchecked(self, sql: str, *, timeout_s: float | None = None, row_cap: int | None = None) -> ExecResult:
        """Run SQL in this dialect *without* t2sql's guard, still read-only on the engine and within limits.

        For SQL t2sql writes itself (introspection, sample values) and for text :meth:`prepare`
        returned; everything else goes through :meth:`execute`.
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        row_cap = self.row_cap if row_cap is None else row_cap
        t0 = time.perf_counter()
        if not _SLOTS.acquire(timeout=max(0.1, timeout_s)):
            return ExecResult(ok=False, error=f"too many queries are running; none finished within {timeout_s:g} s",
                              error_kind="timeout")
        try:
            if self.dialect == "sqlite":
                return self._run_sqlite(sql, timeout_s, row_cap)
            return self._run_server(sql, timeout_s, row_cap, t0)
        finally:
            _SLOTS.release()

    def _run_sqlite(self, sql: str, timeout_s: float, row_cap: int) -> ExecResult:
        from t2sql.evaluation.execution import execute

        try:
            conn = connect_readonly(self.url.database)
        except (FileNotFoundError, sqlite3.Error, OSError) as exc:
            return ExecResult(ok=False, error=str(exc), error_kind="runtime")
        try:
            result = execute(conn, sql, timeout_s=timeout_s, row_cap=row_cap)
        finally:
            conn.close()
        return result

    def _run_server(self, sql: str, timeout_s: float, row_cap: int, t0: float) -> ExecResult:
        ms = max(1, int(timeout_s * 1000))
        raw = None
        timer = None
        try:
            raw = self.engine().raw_connection()
            cur = raw.cursor()
            if self.dialect == "postgres":
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute(f"SET LOCAL statement_timeout = {ms}")
            elif self.dialect == "mysql":
                if self._flavour is None:
                    cur.execute("SELECT VERSION()")
                    self._flavour = "mariadb" if "mariadb" in str(cur.fetchone()[0]).lower() else "mysql"
                if self._flavour == "mariadb":
                    cur.execute(f"SET SESSION max_statement_time = {timeout_s:.3f}")
                else:
                    cur.execute(f"SET SESSION max_execution_time = {ms}")
                cur.execute("SET SESSION TRANSACTION READ ONLY")
                cur.execute("START TRANSACTION READ ONLY")
            elif self.dialect == "duckdb":
                timer = threading.Timer(timeout_s, raw.driver_connection.interrupt)
                timer.daemon = True
                timer.start()
            t0 = time.perf_counter()
            cur.execute(sql)
            rows, columns, truncated = _fetch(cur, row_cap)
            return ExecResult(ok=True, rows=rows, columns=columns, truncated=truncated,
                              elapsed_ms=(time.perf_counter() - t0) * 1000.0)
        except Exception as exc:  # noqa: BLE001 - every driver error becomes a reported failure
            inner = getattr(exc, "orig", None) or exc
            kind = _classify(inner, self.dialect)
            msg = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
            if kind == "timeout":
                msg = f"query stopped after the {timeout_s:g} s time limit"
            return ExecResult(ok=False, error=self.scrub(msg)[:2000], error_kind=kind,
                              elapsed_ms=(time.perf_counter() - t0) * 1000.0)
        finally:
            if timer is not None:
                timer.cancel()
            if raw is not None:
                try:
                    raw.rollback()
                except Exception:  # noqa: BLE001 - a broken connection is dropped from the pool
                    try:
                        raw.invalidate()
                    except Exception:  # noqa: BLE001
                        pass
                raw.close()


def open_connection(url_or_path: str | os.PathLike[str], **kwargs: Any) -> Connection:
    """A :class:`Connection` for a URL or database file (keyword arguments as :class:`Connection`).

    Raises:
        ConnectionConfigError: the URL is unusable (the message masks the password).
    """
    return Connection(os.fspath(url_or_path), **kwargs)
