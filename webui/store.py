"""The monitoring log and answer cache: one SQLite file in the instance folder.

Tables:
    questions     every question asked (page or API): when, database, schema hash, question, SQL,
                  success, error category, latencies, model (run id), cached, feedback, corrections.
    answer_cache  SQL per (model, schema hash, normalised question), so repeats skip the model.
    schemas       pasted schema texts by hash, so their questions can be re-run and exported.

Each call opens its own connection (WAL journal, busy timeout), so waitress threads never
share one.
"""

from __future__ import annotations

import datetime as _dt
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS questions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    database TEXT NOT NULL,
    schema_hash TEXT NOT NULL,
    question TEXT NOT NULL,
    sql TEXT NOT NULL,
    success INTEGER NOT NULL,
    error_category TEXT,
    error TEXT,
    latency_ms REAL NOT NULL,
    exec_ms REAL,
    model TEXT NOT NULL,
    cached INTEGER NOT NULL DEFAULT 0,
    origin TEXT NOT NULL DEFAULT 'page',
    feedback INTEGER,
    corrected_sql TEXT,
    expert_category TEXT,
    reviewed_by TEXT,
    reviewed_at REAL
);
CREATE INDEX IF NOT EXISTS questions_ts ON questions (ts);
CREATE INDEX IF NOT EXISTS questions_db ON questions (database, ts);
CREATE TABLE IF NOT EXISTS answer_cache (
    model TEXT NOT NULL,
    schema_hash TEXT NOT NULL,
    question_norm TEXT NOT NULL,
    sql TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    created REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, schema_hash, question_norm)
);
CREATE TABLE IF NOT EXISTS schemas (
    schema_hash TEXT PRIMARY KEY,
    schema TEXT NOT NULL
);
"""

EXPORT_COLUMNS = ["id", "timestamp", "database", "schema_hash", "question", "sql", "success", "error_category",
                  "error", "latency_ms", "exec_ms", "model", "cached", "origin", "feedback", "corrected_sql",
                  "expert_category", "reviewed_by"]

_SPACES = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s?.!]+$")


def normalise_question(question: str) -> str:
    """Lower case, single spaces, no trailing punctuation: the cache key of a question."""
    return _TRAILING.sub("", _SPACES.sub(" ", question.strip().lower()))


def iso(ts: float | None) -> str:
    """An epoch time as ISO 8601 UTC (seconds)."""
    if ts is None:
        return ""
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="seconds")


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


class MonitoringStore:
    """Reads and writes the monitoring database at ``path``."""

    def __init__(self, path: str):
        self.path = path
        with self._conn() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA_SQL)

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30.0)
        conn.row_factory = sqlite3.Row
        try:
            with conn:  # commit on success, roll back on error
                yield conn
        finally:
            conn.close()

    # -- writing -------------------------------------------------------------------------------
    def log_question(self, *, database: str, schema_hash: str, question: str, sql: str, success: bool,
                     error_category: str | None, error: str | None, latency_ms: float, exec_ms: float | None,
                     model: str, cached: bool, origin: str = "page") -> int:
        """Record one answered question.

        Returns:
            The new row id.
        """
        with self._conn() as conn:
            cur = conn.execute(
                "INSERT INTO questions (ts, database, schema_hash, question, sql, success, error_category, error,"
                " latency_ms, exec_ms, model, cached, origin) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (time.time(), database, schema_hash, question, sql, int(bool(success)), error_category, error,
                 float(latency_ms), exec_ms, model, int(bool(cached)), origin),
            )
            return int(cur.lastrowid)

    def set_feedback(self, qid: int, value: int) -> bool:
        """Thumbs up (1) or down (-1); False when the question does not exist."""
        with self._conn() as conn:
            return conn.execute("UPDATE questions SET feedback = ? WHERE id = ?", (value, qid)).rowcount == 1

    def set_correction(self, qid: int, sql: str) -> bool:
        """A user's corrected SQL for a question; False when the question does not exist."""
        with self._conn() as conn:
            return conn.execute("UPDATE questions SET corrected_sql = ? WHERE id = ?", (sql, qid)).rowcount == 1

    def mark_reviewed(self, qid: int, *, gold_sql: str, category: str, by: str) -> bool:
        """An expert's gold SQL and error category for a question."""
        with self._conn() as conn:
            return conn.execute(
                "UPDATE questions SET corrected_sql = ?, expert_category = ?, reviewed_by = ?, reviewed_at = ?"
                " WHERE id = ?", (gold_sql, category, by, time.time(), qid)).rowcount == 1

    def save_schema(self, digest: str, schema: str) -> None:
        with self._conn() as conn:
            conn.execute("INSERT OR IGNORE INTO schemas (schema_hash, schema) VALUES (?, ?)", (digest, schema))

    def get_schema(self, digest: str) -> str | None:
        with self._conn() as conn:
            row = conn.execute("SELECT schema FROM schemas WHERE schema_hash = ?", (digest,)).fetchone()
        return row[0] if row else None

    # -- answer cache --------------------------------------------------------------------------
    def cache_get(self, model: str, digest: str, question: str) -> tuple[str, float] | None:
        """(SQL, original model latency) of an earlier answer to the same question, or None."""
        key = (model, digest, normalise_question(question))
        with self._conn() as conn:
            row = conn.execute("SELECT sql, latency_ms FROM answer_cache WHERE model = ? AND schema_hash = ?"
                               " AND question_norm = ?", key).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE answer_cache SET hits = hits + 1 WHERE model = ? AND schema_hash = ?"
                         " AND question_norm = ?", key)
        return row[0], float(row[1])

    def cache_put(self, model: str, digest: str, question: str, sql: str, latency_ms: float) -> None:
        with self._conn() as conn:
            conn.execute("INSERT OR REPLACE INTO answer_cache (model, schema_hash, question_norm, sql, latency_ms,"
                         " created) VALUES (?,?,?,?,?,?)",
                         (model, digest, normalise_question(question), sql, float(latency_ms), time.time()))

    # -- reading -------------------------------------------------------------------------------
    def get(self, qid: int) -> dict[str, Any] | None:
        with self._conn() as conn:
            row = conn.execute("SELECT * FROM questions WHERE id = ?", (qid,)).fetchone()
        return dict(row) if row else None

    def recent(self, limit: int = 20, database: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM questions"
        args: list[Any] = []
        if database:
            sql += " WHERE database = ?"
            args.append(database)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._conn() as conn:
            return [dict(r) for r in conn.execute(sql, args)]

    def review_queue(self, limit: int = 50) -> list[dict[str, Any]]:
        """Failed or thumbs-down questions no expert has reviewed yet, newest first."""
        with self._conn() as conn:
            return [dict(r) for r in conn.execute(
                "SELECT * FROM questions WHERE reviewed_at IS NULL AND (success = 0 OR feedback = -1)"
                " ORDER BY id DESC LIMIT ?", (limit,))]

    def reviewed(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._conn() as conn:
            return [dict(r) for r in conn.execute(
                "SELECT * FROM questions WHERE reviewed_at IS NOT NULL ORDER BY reviewed_at DESC LIMIT ?", (limit,))]

    def corrected(self, database: str | None = None) -> list[dict[str, Any]]:
        """Questions with corrected SQL (by a user or an expert), oldest first."""
        sql = "SELECT * FROM questions WHERE corrected_sql IS NOT NULL AND corrected_sql != ''"
        args: list[Any] = []
        if database:
            sql += " AND database = ?"
            args.append(database)
        with self._conn() as conn:
            return [dict(r) for r in conn.execute(sql + " ORDER BY id", args)]

    def rows(self, since: float | None = None, database: str | None = None) -> Iterator[dict[str, Any]]:
        """Every logged question (optionally since an epoch time / for one database), oldest first."""
        where, args = self._where(since, database)
        with closing(sqlite3.connect(self.path, timeout=30.0)) as conn:
            conn.row_factory = sqlite3.Row
            for r in conn.execute(f"SELECT * FROM questions{where} ORDER BY id", args):
                d = dict(r)
                d["timestamp"] = iso(d["ts"])
                yield d

    @staticmethod
    def _where(since: float | None, database: str | None) -> tuple[str, list[Any]]:
        clauses, args = [], []
        if since is not None:
            clauses.append("ts >= ?")
            args.append(since)
        if database:
            clauses.append("database = ?")
            args.append(database)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _points(self, since: float | None, database: str | None) -> list[tuple[float, int, float, int, str]]:
        where, args = self._where(since, database)
        with self._conn() as conn:
            return [tuple(r) for r in conn.execute(
                f"SELECT ts, success, latency_ms, cached, database FROM questions{where} ORDER BY ts", args)]

    def summary(self, since: float | None = None, database: str | None = None) -> dict[str, Any]:
        """Totals: questions, success rate, latency p50/p95 (model answers and all), cache hits, feedback."""
        pts = self._points(since, database)
        where, args = self._where(since, database)
        with self._conn() as conn:
            up, down = conn.execute(
                f"SELECT COALESCE(SUM(feedback = 1), 0), COALESCE(SUM(feedback = -1), 0) FROM questions{where}",
                args).fetchone()
        n = len(pts)
        model_lat = [p[2] for p in pts if not p[3]]
        return {
            "n": n,
            "success_rate": (sum(p[1] for p in pts) / n) if n else None,
            "latency_p50": percentile(model_lat, 0.5),
            "latency_p95": percentile(model_lat, 0.95),
            "cached_rate": (sum(p[3] for p in pts) / n) if n else None,
            "thumbs_up": int(up),
            "thumbs_down": int(down),
        }

    def per_database(self, since: float | None = None) -> list[dict[str, Any]]:
        """The summary figures per database, busiest first."""
        groups: dict[str, list] = {}
        for p in self._points(since, None):
            groups.setdefault(p[4], []).append(p)
        out = []
        for name, pts in groups.items():
            lat = [p[2] for p in pts if not p[3]]
            out.append({"database": name, "n": len(pts), "success_rate": sum(p[1] for p in pts) / len(pts),
                        "latency_p50": percentile(lat, 0.5), "latency_p95": percentile(lat, 0.95),
                        "cached_rate": sum(p[3] for p in pts) / len(pts)})
        return sorted(out, key=lambda d: (-d["n"], d["database"]))

    def timeseries(self, since: float | None = None, database: str | None = None,
                   buckets: int = 24) -> list[dict[str, Any]]:
        """Success rate and model latency (p50, p95) in ``buckets`` equal time slices of the logged span."""
        pts = self._points(since, database)
        if not pts:
            return []
        t0, t1 = pts[0][0], pts[-1][0]
        width = max((t1 - t0) / buckets, 1.0)
        slices: dict[int, list] = {}
        for p in pts:
            slices.setdefault(min(int((p[0] - t0) / width), buckets - 1), []).append(p)
        out = []
        for i in sorted(slices):
            s = slices[i]
            lat = [p[2] for p in s if not p[3]]
            out.append({"start": t0 + i * width, "n": len(s), "success_rate": sum(p[1] for p in s) / len(s),
                        "latency_p50": percentile(lat, 0.5), "latency_p95": percentile(lat, 0.95)})
        return out

    def databases(self) -> list[str]:
        with self._conn() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT database FROM questions ORDER BY database")]
