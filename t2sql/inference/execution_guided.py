"""Execution-guided decoding: among the beam candidates, answer with the first one that runs.

A candidate runs when SQLite parses and executes it without error on the question's database
(opened read-only) or, when there is none, on an empty database built from the schema (the
CREATE TABLE statements of the context): that still catches syntax errors, unknown tables and
unknown columns, which are most execution failures of small models. On a real database a
candidate that returns an answer (a row with a non-NULL value) is preferred to one that runs but
returns nothing, which is rarely what a question asks for; the first that runs is kept when none
answers. When no candidate runs, the best beam is kept.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from t2sql.evaluation.execution import connect_readonly, connect_schema, execute

log = logging.getLogger(__name__)

_CREATE = re.compile(r"(?i)\s*;?\s*(?=\bCREATE\s+TABLE\b)")


def schema_connection(context: str) -> sqlite3.Connection:
    """An empty read-only database built from a schema; statements need not be separated by ``;``.

    Raises:
        sqlite3.Error: the statements do not run even once separated.
    """
    try:
        return connect_schema(context)
    except sqlite3.Error:
        statements = [s.strip().rstrip(";") for s in _CREATE.split(context) if s.strip()]
        return connect_schema(";\n".join(statements) + ";")


@dataclass
class GuidedStats:
    """Counts over the questions of one ``translate`` call."""

    questions: int = 0
    first_ran: int = 0  # the best beam ran: nothing changed
    later_ran: int = 0  # a later beam was picked
    none_ran: int = 0  # no beam ran: the best beam was kept
    unchecked: int = 0  # no database and an unusable schema: the best beam was kept
    executions: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class ExecutionChecker:
    """Opens each database or schema once and tells whether SQL runs on it.

    Args:
        timeout_s: per-query time limit.
    """

    def __init__(self, timeout_s: float = 2.0):
        self.timeout_s = timeout_s
        self._conns: dict[tuple[str, str], sqlite3.Connection | None] = {}

    def connection(self, db_path: str | os.PathLike[str] | None, context: str) -> sqlite3.Connection | None:
        """A read-only connection to ``db_path``, else to an empty database built from ``context``; None if neither opens."""
        key = ("db", str(db_path)) if db_path else ("schema", context)
        if key not in self._conns:
            conn = None
            try:
                conn = connect_readonly(db_path) if db_path else schema_connection(context)
            except (OSError, sqlite3.Error) as exc:
                log.debug("execution-guided decoding cannot check against %s: %s", key[0], exc)
            self._conns[key] = conn
        return self._conns[key]

    def runs(self, conn: sqlite3.Connection, sql: str) -> bool:
        return self.check(conn, sql)[0]

    def check(self, conn: sqlite3.Connection, sql: str) -> tuple[bool, bool]:
        """``(runs, answers)``: it executes without error; its first row holds a non-NULL value."""
        if not sql.strip():
            return False, False
        result = execute(conn, sql, timeout_s=self.timeout_s, row_cap=1)
        if not result.ok:
            return False, False
        return True, bool(result.rows) and any(v is not None for v in result.rows[0])

    def close(self) -> None:
        for conn in self._conns.values():
            if conn is not None:
                conn.close()
        self._conns.clear()


def pick_runnable(candidates: Sequence[str], db_path: str | os.PathLike[str] | None, context: str,
                  checker: ExecutionChecker, stats: GuidedStats | None = None) -> int:
    """Index of the candidate to answer with (0 when none runs or nothing can be checked).

    On the question's database: the first candidate that runs and returns an answer, else the
    first that runs. On an empty database built from the schema (no rows to tell apart): the
    first that runs.

    Args:
        candidates: SQL candidates, best first.
        db_path: the question's SQLite file, or None.
        context: CREATE TABLE statements, used when there is no database.
        checker: connection cache and time limit.
        stats: counters updated in place.
    """
    stats = stats if stats is not None else GuidedStats()
    stats.questions += 1
    conn = checker.connection(db_path, context)
    if conn is None:
        stats.unchecked += 1
        return 0
    first_ran = None
    for i, sql in enumerate(candidates):
        stats.executions += 1
        ran, answered = checker.check(conn, sql)
        if ran and first_ran is None:
            first_ran = i
            if not db_path:
                break
        if ran and answered:
            first_ran = i
            break
    if first_ran is None:
        stats.none_ran += 1
        return 0
    if first_ran == 0:
        stats.first_ran += 1
    else:
        stats.later_ran += 1
    return first_ran
