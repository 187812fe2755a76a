"""Answer a question end to end: pick the model, build the context, translate (or reuse a cached
answer), run the SQL safely and log everything. The Ask page and the JSON API both call this.

All SQL, generated or edited by a user, on a registered database runs through
:meth:`t2sql.databases.connections.Connection.execute`: t2sql's statement guard, then the engine's
read-only session (SQLite: read-only file and the reads-only authorizer), a time limit and a row cap.
The model writes SQLite-style SQL; on PostgreSQL, MySQL/MariaDB and DuckDB it is rewritten into the
database's dialect before it runs, and that is the SQL shown, logged and edited. Pasted schemas run
on an in-memory SQLite database through :func:`t2sql.evaluation.execution.execute`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from flask import current_app

from t2sql.databases import introspect
from t2sql.databases.connections import ConnectionConfigError
from t2sql.databases.dialects import to_dialect
from t2sql.evaluation.categories import categorize
from t2sql.evaluation.execution import ExecResult, connect_schema, execute
from webui.databases import Database, DatabaseCatalog, SchemaError, check_schema, schema_hash
from webui.store import MonitoringStore
from webui.translators import ModelChoice, ModelUnavailable, TranslatorPool

MAX_QUESTION_CHARS = 1000
MAX_SQL_CHARS = 20_000
SCHEMA_PREFIX = "schema:"


class TargetError(ValueError):
    """The database is unknown or the pasted schema is refused; the message says which."""


@dataclass
class Target:
    """What a question is about: a registered database file, or pasted CREATE TABLE text."""

    label: str  # database name, or "schema:<hash>" for pasted schemas
    db: Database | None = None
    schema_text: str | None = None

    @property
    def executable_on_data(self) -> bool:
        return self.db is not None


@dataclass
class Answer:
    """One answered question as shown on the page and returned by the API."""

    id: int
    question: str
    database: str
    sql: str
    latency_ms: float
    model: str
    cached: bool
    result: ExecResult | None = None
    context: str = ""
    model_error: str | None = None


def cell(value: Any) -> Any:
    """A result value that JSON and HTML can show: blobs summarised, non-finite floats as text."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<blob {len(bytes(value))} bytes>"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class AnswerService:
    """The GUI's one way of turning questions into SQL and SQL into rows.

    Args:
        catalog: registered databases.
        translators: the current model.
        store: the monitoring log and answer cache.
        timeout_s: time limit of one query.
        row_cap: rows fetched at most.
        use_cache: answer repeated questions from the cache.
        max_schema_chars: size limit of pasted schemas.
    """

    def __init__(self, catalog: DatabaseCatalog, translators: TranslatorPool, store: MonitoringStore, *,
                 timeout_s: float, row_cap: int, use_cache: bool = True, max_schema_chars: int = 100_000):
        self.catalog = catalog
        self.translators = translators
        self.store = store
        self.timeout_s = timeout_s
        self.row_cap = row_cap
        self.use_cache = use_cache
        self.max_schema_chars = max_schema_chars
        self._results: OrderedDict[tuple[int, str], ExecResult] = OrderedDict()
        self._lock = threading.Lock()

    # -- targets -------------------------------------------------------------------------------
    def target(self, database: str | None = None, schema: str | None = None) -> Target:
        """The database called ``database``, or a checked pasted ``schema``.

        Raises:
            TargetError: neither or both given, the database is unknown, or the schema is refused.
        """
        database = (database or "").strip() or None
        schema = schema if schema and schema.strip() else None
        if database and schema:
            raise TargetError("give either a database or a schema, not both")
        if database:
            if database.startswith(SCHEMA_PREFIX):
                text = self.store.get_schema(database[len(SCHEMA_PREFIX):])
                if text is None:
                    raise TargetError(f"unknown pasted schema {database!r}")
                return Target(database, schema_text=text)
            db = self.catalog.get(database)
            if db is None:
                raise TargetError(f"unknown database {database!r}: choose one of the registered databases")
            return Target(db.name, db=db)
        if schema:
            try:
                check_schema(schema, self.max_schema_chars)
            except SchemaError as exc:
                raise TargetError(str(exc)) from None
            digest = schema_hash(schema)
            self.store.save_schema(digest, schema)
            return Target(SCHEMA_PREFIX + digest, schema_text=schema)
        raise TargetError("choose a database, upload one, or paste CREATE TABLE statements")

    def context(self, target: Target, choice: ModelChoice | None) -> str:
        """The CREATE TABLE text the model reads for ``target``, written as the model was trained."""
        if target.db is None:
            return target.schema_text or ""
        try:
            if choice is None:
                return self.catalog.schema(target.db)
            return self.catalog.schema(target.db, with_types=choice.with_types, sample_values=choice.sample_values)
        except (ConnectionConfigError, RuntimeError, OSError) as exc:
            raise TargetError(f"the database {target.label!r} cannot be read: {exc}") from None

    # -- running SQL ---------------------------------------------------------------------------
    def run_sql(self, target: Target, sql: str, row_cap: int | None = None) -> ExecResult:
        """Run one statement on the target, read-only, within the time limit and row cap."""
        sql = (sql or "").strip()
        if not sql:
            return ExecResult(ok=False, error="there is no SQL to run", error_kind="syntax")
        if len(sql) > MAX_SQL_CHARS:
            return ExecResult(ok=False, error=f"the SQL has {len(sql)} characters; at most {MAX_SQL_CHARS} run",
                              error_kind="runtime")
        cap = row_cap or self.row_cap
        if target.db is not None:
            try:
                db_conn = self.catalog.connection(target.db)
            except (ConnectionConfigError, FileNotFoundError, OSError) as exc:
                return ExecResult(ok=False, error=str(exc), error_kind="runtime")
            return db_conn.execute(sql, timeout_s=self.timeout_s, row_cap=cap)
        conn = connect_schema(target.schema_text or "")  # checked by check_schema when it was pasted
        try:
            return execute(conn, sql, timeout_s=self.timeout_s, row_cap=cap)
        finally:
            conn.close()

    def dialect(self, target: Target) -> str:
        """The SQL dialect of the target's database (``sqlite`` for files and pasted schemas)."""
        if target.db is None or target.db.spec is None:
            return "sqlite"
        try:
            return self.catalog.connection(target.db).dialect
        except ConnectionConfigError:
            return "sqlite"

    def in_dialect(self, target: Target, sql: str) -> str:
        """The model's SQLite-style SQL rewritten for the target's engine (unchanged for SQLite)."""
        dialect = self.dialect(target)
        if dialect == "sqlite" or not sql:
            return sql
        try:
            conn = self.catalog.connection(target.db)
            return to_dialect(sql, dialect, introspect.stored_names(conn))
        except (ConnectionConfigError, RuntimeError):
            return sql

    def as_sqlite(self, target: Target, sql: str) -> str:
        """SQL in the target's dialect written back in SQLite's (training records are SQLite-style); unchanged
        for SQLite targets or SQL sqlglot cannot read."""
        dialect = self.dialect(target)
        if dialect == "sqlite" or not sql:
            return sql
        import sqlglot

        try:
            return sqlglot.transpile(sql, read=dialect, write="sqlite")[0]
        except (sqlglot.errors.SqlglotError, IndexError, RecursionError):
            return sql

    def remember_result(self, qid: int, sql: str, result: ExecResult) -> None:
        with self._lock:
            self._results[(qid, sql)] = result
            while len(self._results) > 32:
                self._results.popitem(last=False)

    def result_for(self, qid: int, target: Target, sql: str) -> ExecResult:
        """The rows of ``sql`` for a logged question: the fresh result once, then run again."""
        with self._lock:
            hit = self._results.pop((qid, sql), None)
        return hit if hit is not None else self.run_sql(target, sql)

    # -- answering -----------------------------------------------------------------------------
    def answer(self, question: str, target: Target, *, origin: str = "page", row_cap: int | None = None) -> Answer:
        """Translate, run and log one question.

        Args:
            question: the user's question (at most ``MAX_QUESTION_CHARS``).
            target: from :meth:`target`.
            origin: ``page`` or ``api`` (recorded in the log).
            row_cap: rows to fetch (default: the service's cap).

        Returns:
            The logged :class:`Answer`; SQL errors are in ``answer.result``.

        Raises:
            ValueError: the question is empty or too long.
            ModelUnavailable: no model can answer.
        """
        question = " ".join((question or "").split())
        if not question:
            raise ValueError("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise ValueError(f"the question has {len(question)} characters; at most {MAX_QUESTION_CHARS} are accepted")
        choice = self.translators.current()
        context = self.context(target, choice)
        if choice is not None and choice.question_values and target.db is not None:
            context = introspect.with_question_values(question, context, self.catalog.connection(target.db))
        digest = schema_hash(context)
        t0 = time.perf_counter()
        hit = self.store.cache_get(choice.label, digest, question) if self.use_cache else None
        model_error = None
        if hit is not None:
            sql, cached = hit[0], True
            latency = (time.perf_counter() - t0) * 1000.0
        else:
            cached = False
            try:
                sql, latency, _ = self.translators.translate(question, context, choice)
            except ModelUnavailable:
                raise
            except Exception as exc:  # a model that fails on this input: logged, shown, not a crash
                sql, latency = "", (time.perf_counter() - t0) * 1000.0
                model_error = f"the model failed: {type(exc).__name__}: {exc}"
            else:
                if self.use_cache:
                    self.store.cache_put(choice.label, digest, question, sql, latency)
        if model_error:
            result = ExecResult(ok=False, error=model_error, error_kind="model_error")
        else:
            sql = self.in_dialect(target, sql)
            result = self.run_sql(target, sql, row_cap)
        if result.ok:
            category = None
        elif model_error:
            category = "model_error"
        else:  # the evaluation's category names, so the log and the reports count alike
            category = categorize(correct=False, parse_ok=True, exec_error_kind=result.error_kind)
        qid = self.store.log_question(
            database=target.label, schema_hash=digest, question=question, sql=sql, success=result.ok,
            error_category=category, error=result.error, latency_ms=latency,
            exec_ms=result.elapsed_ms if not model_error else None, model=choice.label, cached=cached, origin=origin,
        )
        if row_cap is None:  # the page shows this result next; a capped check is not worth keeping
            self.remember_result(qid, sql, result)
        return Answer(qid, question, target.label, sql, latency, choice.label, cached, result, context, model_error)


def service() -> AnswerService:
    """The app's :class:`AnswerService`."""
    return current_app.extensions["t2sql.answers"]


__all__ = ["Answer", "AnswerService", "ModelUnavailable", "Target", "TargetError", "cell", "service"]
