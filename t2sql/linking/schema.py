"""Parsing the CREATE TABLE context into tables, columns, keys and sample values."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from t2sql.data.normalize import unquote_identifier

_LEX = re.compile(
    r"/\*.*?\*/|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|'(?:[^']|'')*'|[A-Za-z_][A-Za-z0-9_$]*"
    r"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\S", re.DOTALL)
_CONSTRAINT_WORDS = {"PRIMARY", "FOREIGN", "CONSTRAINT", "UNIQUE", "CHECK", "KEY"}
_TYPE_STOP = {"PRIMARY", "NOT", "NULL", "REFERENCES", "DEFAULT", "UNIQUE", "CHECK", "COLLATE", "CONSTRAINT",
              "AUTOINCREMENT", "GENERATED"}


@dataclass
class Column:
    name: str
    table: str
    type: str = ""
    samples: list[str] = field(default_factory=list)  # SQL literals as written in the comment


@dataclass
class Table:
    name: str
    columns: list[Column] = field(default_factory=list)


@dataclass
class Schema:
    """Tables (declaration order), their columns, and foreign keys as ((table, col), (table, col))."""

    tables: list[Table] = field(default_factory=list)
    foreign_keys: list[tuple[tuple[str, str], tuple[str, str]]] = field(default_factory=list)

    def table(self, name: str) -> Table | None:
        low = name.lower()
        return next((t for t in self.tables if t.name.lower() == low), None)


def _comment_values(comment: str) -> list[str]:
    body = comment[2:-2]
    return [m.group(0) for m in re.finditer(r"'(?:[^']|'')*'|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", body)]


def _split_top(tokens: list[str]) -> list[list[str]]:
    parts, cur, depth = [], [], 0
    for tok in tokens:
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        if tok == "," and depth == 0:
            parts.append(cur)
            cur = []
        else:
            cur.append(tok)
    if cur:
        parts.append(cur)
    return parts


def _names_in_parens(tokens: list[str], start: int) -> tuple[list[str], int]:
    """Names inside ``( a, b )`` starting at ``tokens[start] == '('``; returns them and the index after."""
    names, i = [], start + 1
    while i < len(tokens) and tokens[i] != ")":
        if tokens[i] != ",":
            names.append(unquote_identifier(tokens[i]))
        i += 1
    return names, i + 1


@functools.lru_cache(maxsize=4096)
def parse_context(context: str) -> Schema:
    """Read tables, columns, types, sample-value comments and foreign keys from CREATE TABLE text.

    Accepts what the data layer writes (``t2sql.data.schema``) and the plain statements of
    sql-create-context. Unreadable statements are skipped; an empty :class:`Schema` means none
    could be read.
    """
    tokens = _LEX.findall(context)
    schema = Schema()
    i, n = 0, len(tokens)
    while i < n:
        if not (tokens[i].upper() == "CREATE" and i + 2 < n and tokens[i + 1].upper() == "TABLE"):
            i += 1
            continue
        j = i + 2
        if tokens[j].upper() == "IF" and j + 3 < n:
            j += 3
        table = Table(unquote_identifier(tokens[j]))
        j += 1
        if j >= n or tokens[j] != "(":
            i = j
            continue
        depth, k = 1, j + 1
        while k < n and depth:
            depth += tokens[k] == "("
            depth -= tokens[k] == ")"
            k += 1
        body = tokens[j + 1:k - 1]
        i = k
        for part in _split_top(body):
            words = [t for t in part if not t.startswith("/*")]
            if not words:
                continue
            head = words[0].upper()
            if head in _CONSTRAINT_WORDS:
                if head == "FOREIGN" and "(" in words and "REFERENCES" in [w.upper() for w in words]:
                    cols, after = _names_in_parens(words, words.index("("))
                    r = [w.upper() for w in words].index("REFERENCES")
                    ref_table = unquote_identifier(words[r + 1]) if r + 1 < len(words) else ""
                    ref_cols = _names_in_parens(words, r + 2)[0] if r + 2 < len(words) and words[r + 2] == "(" else []
                    for a, b in zip(cols, ref_cols or cols):
                        schema.foreign_keys.append(((table.name, a), (ref_table, b)))
                continue
            col = Column(unquote_identifier(words[0]), table.name)
            if len(words) > 1 and _LEX.fullmatch(words[1]) and words[1][:1].isalpha() \
                    and words[1].upper() not in _TYPE_STOP:
                col.type = words[1].upper()
            upper = [w.upper() for w in words]
            if "REFERENCES" in upper:
                r = upper.index("REFERENCES")
                if r + 1 < len(words):
                    ref_cols = _names_in_parens(words, r + 2)[0] if r + 2 < len(words) and words[r + 2] == "(" else []
                    schema.foreign_keys.append(((table.name, col.name), (unquote_identifier(words[r + 1]),
                                                                          ref_cols[0] if ref_cols else col.name)))
            for t in part:
                if t.startswith("/*"):
                    col.samples.extend(_comment_values(t))
            table.columns.append(col)
        if table.columns:
            schema.tables.append(table)
    return schema
