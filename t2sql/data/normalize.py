"""Whitespace and quoting normalisation of records, so the same query is always written the same way.

Spider writes ``WHERE age  >  56`` and ``name = "Alice"``; WikiSQL-built answers write
``name = 'Alice'``. After :func:`normalize_answer` both are ``... > 56`` and ``name = 'Alice'``.
Text inside string literals is never changed.
"""

from __future__ import annotations

import re
from typing import Any

_WS = re.compile(r"\s+")
_TOKEN = re.compile(r'"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|\'(?:[^\']|\'\')*\'|[A-Za-z_][A-Za-z0-9_$]*|\S')
_CONSTRAINTS = {"PRIMARY", "FOREIGN", "CONSTRAINT", "UNIQUE", "CHECK"}


def normalize_text(text: str) -> str:
    """Collapse every run of whitespace to one space and strip the ends."""
    return _WS.sub(" ", text).strip()


def unquote_identifier(token: str) -> str:
    """An identifier without its SQL quoting ("x", `x`, [x])."""
    if token[:1] == '"':
        return token[1:-1].replace('""', '"')
    if token[:1] in "`[":
        return token[1:-1]
    return token


def context_identifiers(context: str) -> set[str]:
    """Lower-case table and column names declared by CREATE TABLE statements.

    When no statement can be read, every word of the context counts, so that nothing that might
    be a name is taken for a string value.
    """
    tokens = _TOKEN.findall(re.sub(r"/\*.*?\*/", " ", context, flags=re.DOTALL))
    names: set[str] = set()
    i, n = 0, len(tokens)
    while i < n:
        if tokens[i].upper() == "CREATE" and i + 2 < n and tokens[i + 1].upper() == "TABLE":
            j = i + 2
            if tokens[j].upper() == "IF" and j + 3 < n:  # IF NOT EXISTS
                j += 3
            names.add(unquote_identifier(tokens[j]).lower())
            j += 1
            if j < n and tokens[j] == "(":
                depth, expect_name = 1, True
                j += 1
                while j < n and depth:
                    tok = tokens[j]
                    if tok == "(":
                        depth += 1
                    elif tok == ")":
                        depth -= 1
                    elif tok == "," and depth == 1:
                        expect_name = True
                        j += 1
                        continue
                    elif expect_name and depth == 1:
                        if tok.upper() not in _CONSTRAINTS:
                            names.add(unquote_identifier(tok).lower())
                    expect_name = False
                    j += 1
            i = j
        else:
            i += 1
    if not names:
        names = {unquote_identifier(t).lower() for t in tokens if t[:1] not in "'" and (t[:1].isalpha() or t[:1] in '_"`[')}
    return names


def _scan(sql: str) -> list[tuple[str, str]]:
    """Split SQL into ("code", text) and ("single"|"double"|"other", literal with its quotes) pieces.

    An unterminated quote makes the rest of the text one piece of its kind, left as it is.
    """
    pieces: list[tuple[str, str]] = []
    i, start, n = 0, 0, len(sql)
    closers = {"'": ("'", "single"), '"': ('"', "double"), "`": ("`", "other"), "[": ("]", "other")}
    while i < n:
        ch = sql[i]
        if ch not in closers:
            i += 1
            continue
        if start < i:
            pieces.append(("code", sql[start:i]))
        close, kind = closers[ch]
        j = i + 1
        while j < n:
            if sql[j] == close:
                if close in "'\"" and j + 1 < n and sql[j + 1] == close:  # doubled quote inside a literal
                    j += 2
                    continue
                break
            j += 1
        pieces.append((kind, sql[i:j + 1]))
        i = start = j + 1
    if start < n:
        pieces.append(("code", sql[start:]))
    return pieces


def normalize_answer(sql: str, context: str = "") -> str:
    """Collapse whitespace outside string literals, drop a trailing ``;``, and write string values in
    single quotes.

    A double-quoted token is a string value (SQLite's fallback) unless it names something in the
    schema: only tokens that match no word of ``context`` are rewritten to ``'...'``, so quoted
    identifiers stay identifiers.

    Args:
        sql: one SQL query.
        context: the CREATE TABLE statements the query runs against.

    Returns:
        The normalised query.
    """
    names = context_identifiers(context) if context else set()
    out = []
    for kind, text in _scan(sql):
        if kind == "code":
            out.append(_WS.sub(" ", text))
        elif kind == "double" and len(text) >= 2 and text.endswith('"'):
            inner = text[1:-1].replace('""', '"')
            if inner.lower() in names:
                out.append(text)
            else:
                out.append("'" + inner.replace("'", "''") + "'")
        else:
            out.append(text)
    result = "".join(out).strip()
    while result.endswith(";"):
        result = result[:-1].rstrip()
    return result


def normalize_record(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a record with its question, context and answer normalised."""
    out = dict(record)
    out["question"] = normalize_text(record["question"])
    out["context"] = normalize_text(record["context"])
    out["answer"] = normalize_answer(record["answer"], out["context"])
    return out
