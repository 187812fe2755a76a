"""The stored values of a database that a question names, written into its schema context.

"How many climbers are from the United Kingdom?" names a value of ``climber.Country``, a column the
question never names. Linking such words to their column (as BRIDGE-style text-to-SQL models do)
needs the database: :func:`question_values` finds the question's word runs among the distinct text
values of every column, and :func:`with_question_values` writes the hits into the context as sample
comments (``Country TEXT /* 'United Kingdom' */``), where the prompt's link marks pick them up.

The database is only read (opened read-only, each query under a time limit); the value index of a
file is built once per process and file version.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

from t2sql.data.schema import _connect_ro, _distinct_values, _format_value, quote_identifier

#: Distinct values read per column, and the longest value (in characters) that is indexed.
MAX_VALUES_PER_COLUMN = 5000
MAX_VALUE_CHARS = 60
#: The longest value (in words) matched against the question.
MAX_VALUE_WORDS = 6
_WORDS = re.compile(r"[a-z0-9]+")
_NAME = r"\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]"
_HEAD = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(" + _NAME + r"|[^\s(]+)\s*\(", re.IGNORECASE)
_COLUMN = re.compile(r"\s*(" + _NAME + r"|[A-Za-z_][A-Za-z0-9_$]*)")
#: Words that say nothing when a column happens to store them as a value.
_COMMON = {"a", "an", "the", "of", "in", "on", "at", "to", "for", "by", "with", "and", "or", "is", "are", "was",
           "be", "it", "its", "all", "any", "each", "every", "what", "which", "who", "how", "many", "much", "most",
           "least", "more", "less", "than", "that", "this", "there", "their", "have", "has", "do", "does", "did",
           "not", "no", "yes", "name", "names", "number", "id", "list", "show", "give", "find", "return", "count",
           "total", "average", "different", "distinct", "other", "one", "s", "t"}


def _key(text: str) -> str:
    return " ".join(_WORDS.findall(text.lower()))


def index_values(triples) -> dict[str, list[tuple[str, str, str]]]:
    """Lower-cased word key -> [(table, column, stored value)] from ``(table, column, value)`` triples.

    Values that are too long, common words or numbers are left out; any database engine can feed this
    (:mod:`t2sql.databases.introspect` does for servers).
    """
    index: dict[str, list[tuple[str, str, str]]] = {}
    for table, column, value in triples:
        if not isinstance(value, str) or not 2 <= len(value) <= MAX_VALUE_CHARS:
            continue
        key = _key(value)
        words = key.split()
        if not words or len(words) > MAX_VALUE_WORDS or key in _COMMON or key.isdigit():
            continue
        index.setdefault(key, []).append((table, column, value))
    return index


def _read_index(path: str) -> dict[str, list[tuple[str, str, str]]]:
    """Lower-cased word key -> [(table, column, stored value)] for the text values of every column."""
    triples: list[tuple[str, str, str]] = []
    conn = _connect_ro(path)
    try:
        try:
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        except sqlite3.DatabaseError:
            return {}
        for table in tables:
            qt = quote_identifier(table)
            try:
                columns = [r[1] for r in conn.execute(f"PRAGMA table_info({qt})").fetchall()]
            except sqlite3.Error:
                continue
            for column in columns:
                for value in _distinct_values(conn, table, column, MAX_VALUES_PER_COLUMN, text_chars=MAX_VALUE_CHARS):
                    triples.append((table, column, value))
    finally:
        conn.close()
    return index_values(triples)


@functools.lru_cache(maxsize=32)
def _index(path: str, mtime_ns: int, size: int) -> dict[str, list[tuple[str, str, str]]]:
    return _read_index(path)


def question_values(db_path: str | os.PathLike[str], question: str, max_per_column: int = 2
                    ) -> dict[tuple[str, str], list[str]]:
    """The stored text values the question names, per ``(table, column)`` (lower-case names).

    A value matches a run of the question's words (case and punctuation ignored: "st. louis"
    matches ``'St. Louis'``); a run inside a longer matching run does not count; common words
    (``the``, ``yes``, ``name``) and numbers are never values.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(db_path).resolve()
    st = path.stat()
    return match_index(_index(str(path), st.st_mtime_ns, st.st_size), question, max_per_column)


def match_index(index: dict[str, list[tuple[str, str, str]]], question: str, max_per_column: int = 2
                ) -> dict[tuple[str, str], list[str]]:
    """The values of ``index`` (from :func:`index_values`) that ``question`` names, per lower-case ``(table, column)``."""
    words = _WORDS.findall(question.lower())
    spans: list[tuple[int, int, str]] = []
    for n in range(min(MAX_VALUE_WORDS, len(words)), 0, -1):
        for i in range(len(words) - n + 1):
            if any(a <= i and i + n <= b for a, b, _ in spans):
                continue
            key = " ".join(words[i:i + n])
            if key in index:
                spans.append((i, i + n, key))
    out: dict[tuple[str, str], list[str]] = {}
    for _, _, key in sorted(spans):
        for table, column, value in index[key]:
            hits = out.setdefault((table.lower(), column.lower()), [])
            if value not in hits and len(hits) < max_per_column:
                hits.append(value)
    return out


def add_column_comments(context: str, values: dict[tuple[str, str], list[Any]]) -> str:
    """``context`` with ``/* values */`` after each named column of its CREATE TABLE statements.

    ``values`` maps lower-case ``(table, column)`` to values; columns not in the context are ignored.
    """
    if not values:
        return context
    out: list[str] = []
    i, n = 0, len(context)
    while i < n:
        m = _HEAD.search(context, i)
        if m is None:
            out.append(context[i:])
            break
        out.append(context[i:m.end()])
        table = _unquote(m.group(1)).lower()
        j, depth, start, quote = m.end(), 1, m.end(), ""
        while j < n and depth:
            ch = context[j]
            if quote:
                if ch == quote:
                    quote = ""
            elif ch in "'\"`":
                quote = ch
            elif ch == "[":
                quote = "]"
            elif context.startswith("/*", j):
                end = context.find("*/", j + 2)
                j = n if end < 0 else end + 2
                continue
            elif ch == "(":
                depth += 1
            elif ch == ")" or (ch == "," and depth == 1):
                if ch == ")":
                    depth -= 1
                if depth <= 1:
                    if ch == "," or depth == 0:
                        out.append(_commented(context[start:j], table, values))
                        out.append(ch)
                        start = j + 1
            j += 1
        if depth:  # unterminated statement: keep the rest as it is
            out.append(context[start:])
        i = j
    return "".join(out)


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] + name[-1] in ('""', "``", "[]"):
        return name[1:-1].replace('""', '"')
    return name


def _commented(part: str, table: str, values: dict[tuple[str, str], list[Any]]) -> str:
    m = _COLUMN.match(part)
    if m is None:
        return part
    hits = values.get((table, _unquote(m.group(1)).lower()))
    # a value already written (a context given its values twice) is not repeated
    shown = [v for v in (_format_value(h) for h in hits or ()) if v is not None and v not in part]
    if not shown:
        return part
    return part.rstrip() + " /* " + ", ".join(shown) + " */"


def with_question_values(question: str, context: str, db_path: str | os.PathLike[str] | None) -> str:
    """``context`` with the values of ``db_path`` that ``question`` names; unchanged without a readable file."""
    if not db_path:
        return context
    try:
        hits = question_values(db_path, question)
    except (OSError, sqlite3.Error, ValueError):
        return context
    return add_column_comments(context, hits)
