"""The databases questions can be asked about: SQLite files in configured folders, uploads, and
connections by URL (PostgreSQL, MySQL/MariaDB, DuckDB, SQLite) that an admin configures.

Connections live in a YAML file (``CONNECTIONS_FILE``, by default ``connections.yaml`` in the
instance folder, edited on the Connections page or by hand): a name, a URL without password and
where the password comes from (``password_env``: an environment variable; ``password_secret``: a key
of the secrets file ``T2SQL_DB_SECRETS``). Pages and API answers only ever show masked URLs.

A database is named after its file (``concert_singer.sqlite`` -> ``concert_singer``); Spider's
layout (``database/<db_id>/<db_id>.sqlite``) and flat folders both work. Uploads are checked to
be SQLite (magic header, opens, has tables) before they are kept. Pasted CREATE TABLE text is
checked by running it on an empty in-memory database under an authorizer that allows nothing
but creating tables and indexes.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from t2sql.databases import introspect
from t2sql.databases.connections import (Connection, ConnectionConfigError, ConnectionSpec, check_spec,
                                         load_connections, read_secrets, save_connections)

SQLITE_MAGIC = b"SQLite format 3\x00"
SUFFIXES = (".sqlite", ".sqlite3", ".db")
_NAME = re.compile(r"[^A-Za-z0-9_-]+")


class UploadError(ValueError):
    """An uploaded file is not an acceptable SQLite database; the message says why."""


class SchemaError(ValueError):
    """Pasted schema text is not a set of CREATE TABLE statements that run."""


@dataclass(frozen=True)
class Database:
    """One registered database: a SQLite file (``path``) or a configured connection (``spec``)."""

    name: str
    path: Path | None
    uploaded: bool
    spec: ConnectionSpec | None = None
    engine: str = "sqlite"


def schema_hash(schema: str) -> str:
    """A short stable hash of a schema text (whitespace-insensitive)."""
    return hashlib.sha256(" ".join(schema.split()).encode()).hexdigest()[:16]


class DatabaseCatalog:
    """SQLite files found in ``dirs`` (searched two levels deep) and in ``upload_dir``.

    Args:
        dirs: folders of databases shipped with the deployment.
        upload_dir: where accepted uploads are stored.
    """

    def __init__(self, dirs: list[str], upload_dir: str, connections_file: str | None = None,
                 secrets_file: str | None = None, timeout_s: float = 5.0, row_cap: int = 1000):
        self.dirs = [Path(d) for d in dirs]
        self.upload_dir = Path(upload_dir)
        self.connections_file = Path(connections_file) if connections_file else None
        self.secrets_file = secrets_file
        self.timeout_s = timeout_s
        self.row_cap = row_cap
        self._schemas: dict[tuple, str] = {}
        self._conns: dict[tuple, Connection] = {}
        self._lock = threading.Lock()

    # -- connections by URL ---------------------------------------------------------------------
    def specs(self) -> list[ConnectionSpec]:
        """The configured connections (none without a connections file).

        Raises:
            ConnectionConfigError: the file is invalid (the entry and field are named).
        """
        return load_connections(self.connections_file) if self.connections_file else []

    def add_connection(self, spec: ConnectionSpec, *, check: bool = True) -> Database:
        """Add (or replace) a connection after checking that it opens and has tables.

        Raises:
            ConnectionConfigError: invalid, or the database cannot be read (message without password).
        """
        if self.connections_file is None:
            raise ConnectionConfigError("no connections file is configured (CONNECTIONS_FILE)")
        check_spec(spec)
        taken = {d.name for d in self.list() if d.spec is None}
        if spec.name in taken:
            raise ConnectionConfigError(f"name {spec.name!r}: a database file of that name exists")
        db = Database(spec.name, None, False, spec, _engine_of(spec))
        if check:
            conn = self._open(db)
            try:
                names = introspect.tables(conn) if conn.dialect != "sqlite" else [1]
            except Exception as exc:  # noqa: BLE001 - any failure to read is the admin's to see, masked
                conn.close()
                raise ConnectionConfigError(f"connection {spec.name!r} ({conn.masked_url}) does not open: "
                                            f"{conn.scrub(str(exc))}") from None
            if not names:
                raise ConnectionConfigError(f"connection {spec.name!r} ({conn.masked_url}) has no tables")
        with self._lock:
            specs = [s for s in self.specs() if s.name != spec.name] + [spec]
            save_connections(self.connections_file, specs)
            self._drop(spec.name)
        return db

    def remove_connection(self, name: str) -> bool:
        """Remove a configured connection; False when there is none of that name."""
        if self.connections_file is None:
            return False
        with self._lock:
            specs = self.specs()
            kept = [s for s in specs if s.name != name]
            if len(kept) == len(specs):
                return False
            save_connections(self.connections_file, kept)
            self._drop(name)
        return True

    def _drop(self, name: str) -> None:
        for key in [k for k in self._conns if k[0] == name]:
            self._conns.pop(key).close()

    def _open(self, db: Database) -> Connection:
        if db.spec is None:
            return Connection(str(db.path), name=db.name, timeout_s=self.timeout_s, row_cap=self.row_cap)
        password = db.spec.password(read_secrets(self.secrets_file) if db.spec.password_secret else None)
        return Connection(db.spec.url, name=db.name, password=password, timeout_s=self.timeout_s,
                          row_cap=self.row_cap)

    def connection(self, db: Database) -> Connection:
        """The open :class:`Connection` of a database (one per database and configuration, reused).

        Raises:
            ConnectionConfigError: the connection's URL or password is unusable (message masked).
        """
        key = (db.name, str(db.path), db.spec)
        with self._lock:
            conn = self._conns.get(key)
        if conn is not None:
            return conn
        conn = self._open(db)
        with self._lock:
            self._conns.setdefault(key, conn)
            return self._conns[key]

    @staticmethod
    def _scan(folder: Path) -> list[Path]:
        if not folder.is_dir():
            return []
        found = []
        for entry in sorted(folder.iterdir()):
            if entry.is_file() and entry.suffix in SUFFIXES:
                found.append(entry)
            elif entry.is_dir():
                found.extend(sorted(p for p in entry.iterdir() if p.is_file() and p.suffix in SUFFIXES))
        return found

    def list(self) -> list[Database]:
        """Every database, shipped ones first, by name; the first file of a name wins."""
        seen: dict[str, Database] = {}
        for folder in self.dirs:
            for path in self._scan(folder):
                seen.setdefault(path.stem, Database(path.stem, path.resolve(), False))
        for path in self._scan(self.upload_dir):
            seen.setdefault(path.stem, Database(path.stem, path.resolve(), True))
        try:
            specs = self.specs()
        except ConnectionConfigError:
            specs = []  # an invalid file is reported on the Connections page
        for spec in specs:
            seen.setdefault(spec.name, Database(spec.name, None, False, spec, _engine_of(spec)))
        return list(seen.values())

    def get(self, name: str) -> Database | None:
        """The database called ``name``, or None."""
        for db in self.list():
            if db.name == name:
                return db
        return None

    def schema(self, db: Database, *, with_types: bool = True, sample_values: int = 0) -> str:
        """CREATE TABLE statements of a database, as the model saw them in training (cached per file version).

        Connections by URL are read through :func:`t2sql.databases.introspect.create_tables` (cached per connection).
        """
        if db.spec is not None:
            return introspect.create_tables(self.connection(db), sample_values=sample_values, with_types=with_types)
        st = db.path.stat()
        key = (str(db.path), st.st_mtime_ns, st.st_size, with_types, sample_values)
        with self._lock:
            if key in self._schemas:
                return self._schemas[key]
        text = introspect.sqlite_create_tables(db.path, sample_values=sample_values, with_types=with_types)
        with self._lock:
            self._schemas[key] = text
        return text

    # -- uploads -------------------------------------------------------------------------------
    def _free_name(self, stem: str) -> str:
        taken = {db.name for db in self.list()}
        name, i = stem, 2
        while name in taken:
            name = f"{stem}_{i}"
            i += 1
        return name

    def save_upload(self, stream: IO[bytes], filename: str) -> Database:
        """Check an uploaded file and keep it under a free name.

        Args:
            stream: the file's bytes (its size is already capped by ``MAX_CONTENT_LENGTH``).
            filename: the name the browser sent; only its stem is used, cleaned.

        Returns:
            The new database.

        Raises:
            UploadError: not a SQLite file, unreadable, or without tables.
        """
        stem = _NAME.sub("_", Path(filename or "").stem).strip("_-")[:60] or "uploaded"
        head = stream.read(len(SQLITE_MAGIC))
        if head != SQLITE_MAGIC:
            raise UploadError(f"{filename or 'the file'} is not a SQLite database (its header is not "
                              f"'SQLite format 3')")
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.upload_dir / f".upload-{os.getpid()}-{threading.get_ident()}-{time.time_ns()}.part"
        try:
            with open(tmp, "wb") as out:
                out.write(head)
                while chunk := stream.read(1 << 20):
                    out.write(chunk)
            tables = _check_sqlite(tmp)
            if not tables:
                raise UploadError(f"{filename}: the database has no tables")
            with self._lock:
                name = self._free_name(stem)
                final = self.upload_dir / f"{name}.sqlite"
                os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        return Database(name, final.resolve(), True)


def _engine_of(spec: ConnectionSpec) -> str:
    from t2sql.databases.dialects import sqlglot_dialect

    url = spec.url
    if "://" not in url:
        return "duckdb" if url.lower().endswith((".duckdb", ".ddb")) else "sqlite"
    try:
        return sqlglot_dialect(url.split("://", 1)[0])
    except ValueError:
        return "unknown"


def _check_sqlite(path: Path) -> list[str]:
    """Table names of a SQLite file after an integrity check; switches WAL files to rollback mode.

    Raises:
        UploadError: the file does not open or fails the check.
    """
    deadline = time.perf_counter() + 10.0
    try:
        conn = sqlite3.connect(str(path))
    except sqlite3.Error as exc:
        raise UploadError(f"the file does not open as SQLite: {exc}") from None
    try:
        conn.set_progress_handler(lambda: 1 if time.perf_counter() > deadline else 0, 10000)
        conn.execute("PRAGMA trusted_schema = OFF")
        ok = conn.execute("PRAGMA quick_check").fetchone()
        if not ok or ok[0] != "ok":
            raise UploadError(f"the database fails SQLite's integrity check: {ok[0] if ok else 'no answer'}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            conn.execute("PRAGMA journal_mode = DELETE")  # read-only opens of WAL files need write access
        return [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    except sqlite3.Error as exc:
        raise UploadError(f"the file is not a readable SQLite database: {exc}") from None
    finally:
        conn.close()


_SCHEMA_ALLOWED = {sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_REINDEX,
                   sqlite3.SQLITE_TRANSACTION}
_SCHEMA_MASTER = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_READ}


def _schema_authorizer(action: int, arg1, arg2, dbname, source) -> int:
    if action in _SCHEMA_ALLOWED and dbname in (None, "main"):
        return sqlite3.SQLITE_OK
    if action in _SCHEMA_MASTER and dbname in (None, "main"):
        if arg1 == "sqlite_master" or action == sqlite3.SQLITE_READ:
            return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def check_schema(text: str, max_chars: int = 100_000) -> list[str]:
    """Check pasted schema text: only CREATE TABLE / CREATE INDEX statements that SQLite accepts.

    Anything else (ATTACH, PRAGMA, CREATE TABLE ... AS SELECT, INSERT, views, triggers) is refused,
    so the text is safe to hand to :func:`t2sql.evaluation.execution.connect_schema`.

    Args:
        text: the statements, separated by semicolons.
        max_chars: size limit.

    Returns:
        The names of the tables created.

    Raises:
        SchemaError: empty, too long, refused or invalid; the message gives SQLite's reason.
    """
    if not text or not text.strip():
        raise SchemaError("the schema is empty: paste CREATE TABLE statements")
    if len(text) > max_chars:
        raise SchemaError(f"the schema has {len(text)} characters; at most {max_chars} are accepted")
    conn = sqlite3.connect(":memory:")
    deadline = time.perf_counter() + 2.0
    try:
        conn.set_authorizer(_schema_authorizer)
        conn.set_progress_handler(lambda: 1 if time.perf_counter() > deadline else 0, 1000)
        conn.executescript(text)
        conn.set_authorizer(None)
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    except (sqlite3.Error, sqlite3.Warning, ValueError) as exc:
        msg = str(exc)
        if "not authorized" in msg or "authorization denied" in msg:
            msg = "only CREATE TABLE and CREATE INDEX statements are accepted"
        raise SchemaError(f"the schema does not run: {msg}") from None
    finally:
        conn.close()
    if not tables:
        raise SchemaError("the schema creates no tables")
    return tables
