"""Constrained decoding (PICARD-style): at each step only tokens that keep the output a prefix of a
valid query over the prompt's own schema are allowed.

    tr = Translator(model_dir, constrained=True)

How a step is constrained, per row: the scores are sorted and candidates are checked best first,
only until the needed number of valid tokens is found (1 for greedy, ``num_beams`` for beam search)
or :data:`TOP_K` candidates have been looked at; the others are masked to ``-inf``. When none of the
checked ones is valid, the row keeps its unconstrained best token, so decoding never dead-ends (and
is unconstrained from there on: a prefix that is already invalid is not checked again).

A candidate is checked on decoded text: the row's generated tokens and the candidate, each token
written as its own piece of text (:func:`piece_texts`), are read by a small SQL lexer and an
incremental grammar (:class:`PrefixChecker`):

- known keywords, functions, operators and punctuation, in a valid order (operands and operators
  alternate, clauses come in SQL's order per query level, ``GROUP``/``ORDER`` take ``BY``, ...),
  parentheses balanced, quotes closed before the end;
- only the schema items the row's prompt shows: the linked format's table and column numbers
  (``t1``, ``c7``) of that row's input, or (plain format, and the linked format's targets written
  with real names when a query could not be numbered) the table and column names of its context;
- question-word pointers (``w5``) only within the question's length, and as a value's first or last
  word only a question word that can be a value (:data:`VALUE_RULE`, :func:`value_words`): a number,
  a word in quotes, a capitalised word that does not begin a sentence, a word of a stored value the
  input shows, or punctuation that ends one of those (``Ph.D.``, never a value's first word); a ``LIKE``
  pattern (a literal with ``%``) may point at any word; a finished literal holds a pointer or a letter or
  digit (not ``'?'`` or ``'%'``); formats that do not show the stored values a question names
  (``question_values``) leave values free;
- no arithmetic operator next to a quoted string (``'%' % '%'``);
- a last word still being written (``c`` of ``c12``, split by a tokenizer into pieces) only when it
  is the beginning of an allowed word.

End-of-sequence is allowed only when the whole output is a complete query that sqlglot parses and
whose columns each belong to a table its query (or an enclosing one) reads, where that is decidable
(no subquery in the FROM clause, qualifiers that resolve).

:class:`SQLConstraint` holds what one batch needs (the tokenizer's piece texts and one
:class:`RowSchema` per row); backends apply it with :meth:`SQLConstraint.mask_numpy` (ONNX's own
greedy loop) or as a Hugging Face ``LogitsProcessor`` (:meth:`SQLConstraint.logits_processor`,
greedy and beam search).
"""

from __future__ import annotations

import bisect
import functools
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from t2sql.data.schema import too_many_joins
from t2sql.linking.pointers import NUMBER_WORDS

#: Candidates checked per row and step before falling back to the unconstrained best token.
TOP_K = 16
#: Subtracted from the score of a token kept only because no checked one was valid: in beam search a
#: beam that leaves the grammar sinks below every valid one, yet decoding goes on if none is left.
FALLBACK_PENALTY = 1e4
#: Most parentheses open at once (Spider's deepest queries open 4).
MAX_DEPTH = 8
#: Whether a value's pointers must name question words that can be values (:attr:`RowSchema.value_words`);
#: read when a checker is made.
VALUE_RULE = True

KEYWORDS = frozenset("""SELECT FROM WHERE GROUP BY HAVING ORDER LIMIT OFFSET JOIN ON AS AND OR NOT IN LIKE GLOB
BETWEEN IS NULL DISTINCT ASC DESC UNION INTERSECT EXCEPT ALL EXISTS CASE WHEN THEN ELSE END LEFT RIGHT FULL
INNER OUTER CROSS NATURAL USING TRUE FALSE COLLATE NOCASE""".split())
FUNCTIONS = frozenset("""COUNT SUM AVG MIN MAX ABS LENGTH LOWER UPPER ROUND SUBSTR SUBSTRING STRFTIME DATE TIME
DATETIME JULIANDAY CAST COALESCE IFNULL NULLIF INSTR REPLACE TRIM LTRIM RTRIM TOTAL GROUP_CONCAT IIF""".split())
_CAST_TYPES = frozenset({"INTEGER", "INT", "REAL", "TEXT", "NUMERIC", "FLOAT"})
_CLAUSE = {"SELECT": 1, "FROM": 2, "WHERE": 3, "GROUP": 4, "HAVING": 5, "ORDER": 6, "LIMIT": 7}

_LEX = re.compile(r"""(?P<ws>[ ])|(?P<sq>'(?:[^']|'')*'?)|(?P<dq>"(?:[^"]|"")*"?)|(?P<bq>`[^`]*`?|\[[^\]]*\]?)
    |(?P<num>\d+(?:\.\d*)?)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<op><=|>=|<>|!=|==|\|\||[=<>+\-*/%!|])
    |(?P<punct>[(),.;])""", re.VERBOSE)
_POINTER = re.compile(r"w(\d+)$")
_SHORT_ALIAS = re.compile(r"[A-Za-z]{1,2}\d{0,2}$")
_ITEM_NUMBER = re.compile(r"[tcw]\d+$")
_POINTER_LITERAL = re.compile(r"'\s+%?\s*(?:w\d*\s*)*%?\s*'?$")
#: What a value written out (not pointed at) cannot hold: a schema or question-word number, a clause keyword.
_SQL_IN_TEXT = re.compile(r"\b(?:[tcw]\d+|SELECT|FROM|WHERE|GROUP BY|ORDER BY|HAVING|INTERSECT|UNION|EXCEPT|JOIN)\b")


# -- what a row may name -------------------------------------------------------------------------

@dataclass(frozen=True)
class RowSchema:
    """The schema items and question words one row's output may name.

    Attributes:
        tables: table words written as they must be (the linked format's ``t1``, ``t2``...).
        columns: column words written as they must be (``c1``...).
        table_names: table names, lower-cased (compared case-insensitively).
        column_names: column names, lower-cased.
        owners: column word (numbers as written, names lower-cased) -> the table words holding it.
        n_words: question words a pointer ``w<k>`` may name (0: pointers are not allowed).
        aliases: words usable as table aliases before their ``AS`` (``T1``.. in the linked format,
            ``t1``/``T1``.. in the plain one), compared as written; without numbered tables any short
            word (``a``, ``s2``) may be one too. An alias used must be declared by the end.
        restrict_names: False when no schema could be read: identifiers are then not restricted.
        check_owners: whether a whole query's columns must belong to tables it reads; False where the
            prompt format makes each SELECT read the tables of its columns on output (``fix_tables``):
            its targets name a column's table only through the repair.
        numeric_words: the pointers ``w<k>`` whose question word is a number (holds a digit, or is a
            number word): a bare pointer compared with ``<``, ``>``, ``<=``, ``>=`` or after ``LIMIT``
            must name one of them.
        value_words: the pointers ``w<k>`` that may begin or end a value (a bare pointer, or a quoted
            pointer literal that is not a ``LIKE`` pattern); None where any may (formats that do not
            write the stored values the question names into the input: ``question_values``).
        punctuation_words: the pointers ``w<k>`` whose question word holds no letter or digit: one
            can end a value (``Ph.D.``) but not begin one (with :data:`VALUE_RULE`).
    """

    tables: frozenset[str] = frozenset()
    columns: frozenset[str] = frozenset()
    table_names: frozenset[str] = frozenset()
    column_names: frozenset[str] = frozenset()
    owners: dict[str, frozenset[str]] = field(default_factory=dict)
    n_words: int = 0
    aliases: frozenset[str] = frozenset()
    restrict_names: bool = True
    check_owners: bool = True
    numeric_words: frozenset[int] = frozenset()
    value_words: frozenset[int] | None = None
    punctuation_words: frozenset[int] = frozenset()

    @functools.cached_property
    def vocabulary(self) -> list[tuple[str, str, bool]]:
        """Every word this row may write (keywords, functions, items, pointers, aliases), as sorted
        (lower-cased, as written, case matters) triples, for completing a word still being written.
        Numbers (``t1``, ``c7``, ``w5``, alias ``T1``) must be written as they are; keywords and
        real names in any case."""
        exact = self.tables | self.columns | self.aliases | {f"w{i}" for i in range(1, self.n_words + 1)}
        loose = set(KEYWORDS) | set(FUNCTIONS) | _CAST_TYPES | self.table_names | self.column_names
        return sorted({(w.lower(), w, True) for w in exact} | {(w.lower(), w, False) for w in loose})

    def categories(self, word: str) -> frozenset[str]:
        """What ``word`` can be here: ``kw``, ``func``, ``table``, ``column``, ``pointer``, ``alias``."""
        up, low = word.upper(), word.lower()
        cats = set()
        if up in KEYWORDS:
            cats.add("kw")
        if up in FUNCTIONS:
            cats.add("func")
        if up in _CAST_TYPES:
            cats.add("type")
        if word in self.tables or low in self.table_names or (not self.restrict_names and up not in KEYWORDS):
            cats.add("table")
        if word in self.columns or low in self.column_names or (not self.restrict_names and up not in KEYWORDS):
            cats.add("column")
        m = _POINTER.match(word)
        if m and 1 <= int(m.group(1)) <= self.n_words:
            cats.add("pointer")
        if word in self.aliases or (not self.tables and up not in KEYWORDS and _SHORT_ALIAS.match(word)):
            cats.add("alias")  # names, not numbers: a short alias (T1, a, s2) may be used before its AS
        return frozenset(cats)

    def completions(self, partial: str, limit: int = 64) -> list[str]:
        """Allowed words that begin with ``partial`` (case-insensitively), at most ``limit``."""
        low = partial.lower()
        vocab = self.vocabulary
        out = []
        for i in range(bisect.bisect_left(vocab, (low, "", False)), len(vocab)):
            key, word, exact = vocab[i]
            if not key.startswith(low) or len(out) >= limit:
                break
            if exact and not word.startswith(partial):
                continue
            out.append(word if exact else partial + word[len(partial):])
        return out

    # -- building ---------------------------------------------------------------------------------
    @staticmethod
    def for_pair(question: str, context: str, source: str, prompt=None) -> "RowSchema":
        """What the row of (``question``, ``context``) may name, its model input being ``source``.

        The linked format with placeholders: the table and column numbers ``source`` shows, with the
        tables that hold them, and the question's word count when it numbers question words; the
        real names of ``context`` too (a target the format could not number is written with them).
        The plain format: the names of ``context``.
        """
        return _for_pair(question or "", context or "", source or "", _prompt_key(prompt))

    @staticmethod
    def from_source(source: str, prompt=None) -> "RowSchema":
        """What a row may name, read from its model input alone (no real names for the linked format)."""
        return _for_pair("", "", source or "", _prompt_key(prompt))


def _prompt_key(prompt) -> tuple[str, bool, bool, bool, bool]:
    if prompt is None:
        return ("plain", False, False, False, False)
    options = prompt.options
    return (prompt.format, bool(getattr(options, "placeholders", False)),
            bool(getattr(options, "value_pointers", False)), bool(getattr(options, "fix_tables", False)),
            bool(getattr(options, "question_values", False)))


_POINTED_WORD = re.compile(r"(?:^|\s)w(\d+)\s(\S+)")
_ORDER_OPS = frozenset({"<", ">", "<=", ">="})
#: Arithmetic operators: never applied to a quoted string (``'%' % '%'``, a loop of a small model).
_ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})


def _is_number_word(word: str) -> bool:
    return any(ch.isdigit() for ch in word) or word.lower().strip(".,;:!?") in NUMBER_WORDS


_SEGMENT = re.compile(r"(?:^|\s\|\s)(t\d+)\b(.*?)(?=\s\|\st\d+\b|$)")
_SHOWN_COLUMN = re.compile(r"(?:\s:\s|\s,\s)(c\d+)\b")


@functools.lru_cache(maxsize=4096)
def _for_pair(question: str, context: str, source: str, key: tuple[str, bool, bool, bool, bool]) -> RowSchema:
    from t2sql.linking.schema import parse_context

    fmt, placeholders, pointers, tables_fixed, stored_values = key
    if not context and fmt == "plain":
        context = source.split(" schema: ", 1)[1] if " schema: " in source else ""
    schema = parse_context(context) if context else None
    table_names = frozenset(t.name.lower() for t in schema.tables) if schema else frozenset()
    column_names = frozenset(c.name.lower() for t in schema.tables for c in t.columns) if schema else frozenset()
    owners: dict[str, set[str]] = {}
    if schema:
        for t in schema.tables:
            for c in t.columns:
                owners.setdefault(c.name.lower(), set()).add(t.name.lower())
    tables: set[str] = set()
    columns: set[str] = set()
    n_words = 0
    numeric: frozenset[int] = frozenset()
    punctuation: frozenset[int] = frozenset()
    values: frozenset[int] | None = None
    if fmt == "linked" and placeholders:
        cut = re.search(r"\s\|\s(?=t\d+\b)", source)
        question_part, schema_part = (source[:cut.start()], source[cut.start():]) if cut else (source, "")
        for m in _SEGMENT.finditer(schema_part):
            tid = m.group(1)
            tables.add(tid)
            for cm in _SHOWN_COLUMN.finditer(m.group(2)):
                columns.add(cm.group(1))
                owners.setdefault(cm.group(1), set()).add(tid)
        if pointers:
            n_words = len(re.findall(r"(?:^|\s)w\d+\s", question_part + " "))
            pointed = _POINTED_WORD.findall(question_part)
            numeric = frozenset(int(k) for k, word in pointed if _is_number_word(word))
            punctuation = frozenset(int(k) for k, word in pointed if not any(ch.isalnum() for ch in word))
            if stored_values:  # without the stored values a question names, a lower-case value is not told apart
                values = value_words(pointed, schema_part)
        aliases = frozenset(f"T{i}" for i in range(1, 10))
    else:
        aliases = frozenset(x for i in range(1, 10) for x in (f"T{i}", f"t{i}"))
    restrict = bool(tables or table_names)
    return RowSchema(frozenset(tables), frozenset(columns), table_names, column_names,
                     {k: frozenset(v) for k, v in owners.items()}, n_words, aliases, restrict, not tables_fixed,
                     numeric, values, punctuation)


_QUOTE_WORDS = frozenset({'"', "'", "“", "”", "‘", "’", "``", "''"})
_SHOWN_VALUES = re.compile(r"\[V\] \( (.*?) \)")


def value_words(pointed: Sequence[tuple[str, str]], schema_part: str = "") -> frozenset[int]:
    """The question words (numbers ``k`` of ``w<k>``) that can begin or end a value.

    Args:
        pointed: (number, word) of each question word, in order (``w3 heads`` -> ("3", "heads")).
        schema_part: the input's schema, whose ``[V] ( 'Cat' , ... )`` marks show stored values.

    A word can be a value when it is a number (digits or a number word), stands between quotes,
    begins with a capital letter and does not begin a sentence, or is a word of a stored value the
    schema shows (not a function word); punctuation right after such a word can end one
    (``w8 Ph w9 . w10 D w11 .``).
    On the Spider recipe's training questions this keeps 98.6% of the gold pointer values (``LIKE``
    patterns are left free) and about one word per question of 14.
    """
    from t2sql.linking.names import _STOP  # the linker's function words ("in" of "Made in Japan")

    stored = {w.lower() for m in _SHOWN_VALUES.finditer(schema_part)
              for v in re.findall(r"'((?:[^']|'')*)'", m.group(1)) for w in re.findall(r"\w+", v)} - _STOP
    out: set[int] = set()
    quoted = False
    previous = False
    sentence_start = True
    last = ""
    for k, word in pointed:
        if word in _QUOTE_WORDS:
            quoted = not quoted
            previous = False
            continue
        i = int(k)
        ok = (quoted or _is_number_word(word) or (not sentence_start and word[:1].isupper())
              or word.lower() in stored or (previous and not any(ch.isalnum() for ch in word)))
        if ok:
            out.add(i)
        previous = ok
        # "?" and "!" end a sentence, and "." unless it ends an abbreviation (Ph.D., St. Louis)
        sentence_start = not quoted and (word in ("?", "!") or (word == "." and len(last) > 2))
        last = word
    return frozenset(out)


# -- the incremental grammar ---------------------------------------------------------------------

@dataclass
class _Level:
    kind: str  # query (a SELECT), paren (grouping or a subquery not begun yet), func, in
    clause: int = 0
    has_from: bool = False
    items: int = 0  # result columns of the SELECT being written at this level (0: not counted, after a *)
    need: int = 0  # result columns the arm after UNION/INTERSECT/EXCEPT must have (0: any)


@dataclass
class _State:
    levels: list[_Level] = field(default_factory=lambda: [_Level("query")])
    exp: str = "start"
    prev: str = ""  # the previous lexeme, upper-cased
    prev_cats: frozenset[str] = frozenset()
    prev_role: str = ""  # table: the previous word named a table in FROM/JOIN (an alias may follow)
    # Sets are replaced, never changed in place, so copies share them.
    declared: frozenset[str] = frozenset()  # aliases given with AS (or after a table)
    qualifiers: frozenset[str] = frozenset()  # words written before a "."
    read: frozenset[str] = frozenset()  # tables named in FROM/JOIN
    cases: int = 0  # CASE expressions open

    def copy(self) -> "_State":
        """An independent copy (only the innermost level is ever changed in place, so only it is copied)."""
        last = self.levels[-1]
        return _State(self.levels[:-1] + [_Level(last.kind, last.clause, last.has_from, last.items, last.need)],
                      self.exp, self.prev,
                      self.prev_cats, self.prev_role, self.declared, self.qualifiers, self.read, self.cases)


def _closed(literal: str) -> bool:
    """Whether a quoted literal is terminated (a doubled quote inside it is an escaped one)."""
    q = literal[0]
    return len(literal) >= 2 and re.fullmatch(f"{q}(?:[^{q}]|{q}{q})*{q}", literal) is not None


def _lex(text: str) -> list[tuple[str, str]] | None:
    """(kind, text) lexemes of ``text`` (whitespace as ``ws``), or None if a character is not SQL."""
    out, pos = [], 0
    while pos < len(text):
        m = _LEX.match(text, pos)
        if m is None:
            return None
        out.append((m.lastgroup, m.group(0)))
        pos = m.end()
    return out


class PrefixChecker:
    """Whether a text is the beginning (or, at the end, the whole) of a valid query over one row's schema.

    Args:
        row: what the row may name.
    """

    def __init__(self, row: RowSchema):
        self.row = row
        self._prefix_memo: dict[str, bool] = {}
        self._complete_memo: dict[str, bool] = {}
        # text -> (state before its last lexeme, where that lexeme begins, whether a blank precedes it)
        self._anchors: dict[str, tuple[_State, int, bool]] = {}
        self._partial_memo: dict[tuple, bool] = {}
        self._cat_memo: dict[str, frozenset[str]] = {}
        self._values = row.value_words if VALUE_RULE else None
        self._starts = None if self._values is None else self._values - row.punctuation_words

    # -- public ---------------------------------------------------------------------------------
    def valid_prefix(self, text: str, parent: str | None = None) -> bool:
        """True when ``text`` can still be continued into a valid query (its last word may be unfinished).

        Args:
            text: the text so far.
            parent: a beginning of ``text`` checked before (the text one token earlier): the check
                resumes where that one's last lexeme began instead of reading ``text`` from the start.
        """
        got = self._prefix_memo.get(text)
        if got is None and too_many_joins(text):
            got = self._prefix_memo[text] = False  # a chain no query needs, and one the end check cannot parse
        if got is None:
            if len(self._prefix_memo) > 50_000:
                self._prefix_memo.clear()
                self._anchors.clear()
            start = self._anchors.get(parent) if parent is not None and text.startswith(parent) else None
            st, anchor = self._check(text, final=False, start=start)
            got = st is not None
            if got:
                self._anchors[text] = anchor
            self._prefix_memo[text] = got
        return got

    def valid_complete(self, text: str) -> bool:
        """True when ``text`` is a whole valid query: complete, parsed by sqlglot, columns of read tables."""
        got = self._complete_memo.get(text)
        if got is None:
            st, _ = self._check(text, final=True)
            got = st is not None and st.exp in ("after", "end") and len(st.levels) == 1 and not st.cases \
                and st.levels[0].has_from and st.qualifiers <= st.declared | st.read and self._parses(text)
            self._complete_memo[text] = got
        return got

    # -- lexing and stepping --------------------------------------------------------------------
    def _check(self, text: str, final: bool, start: tuple[_State, int, bool] | None = None
               ) -> tuple[_State | None, tuple[_State, int, bool] | None]:
        """(state after ``text``, its anchor), or (None, None) when the grammar refuses ``text``.

        ``start`` resumes from an anchor of a beginning of ``text``: the lexemes before the anchor's
        position are complete whatever follows them, so only the rest is read again.
        """
        st, pos, prev_ws = (_State(), 0, False) if start is None else (start[0].copy(), start[1], start[2])
        lexemes = _lex(text[pos:])
        if lexemes is None:
            return None, None
        last = len(lexemes) - 1
        anchor = (st.copy(), pos, prev_ws) if last < 0 else None
        for i, (kind, value) in enumerate(lexemes):
            if i == last and not final:  # a partial or blank last lexeme leaves the state as it is
                anchor = (st.copy() if kind == "punct" else st, pos, prev_ws)
            pos += len(value)
            if kind == "ws":
                if prev_ws:
                    return None, None  # one space between lexemes: no runs of blanks to loop on
                prev_ws = True
                continue
            prev_ws = False
            if i == last and not final and kind in ("word", "num", "sq", "dq", "bq", "op"):
                return (st, anchor) if self._partial_cached(st, kind, value) else (None, None)
            if not self._complete_lexeme_ok(kind, value) or not self._advance(st, kind, value):
                return None, None
        return st, anchor

    def _partial_cached(self, st: _State, kind: str, value: str) -> bool:
        key = (st.exp, tuple((x.kind, x.clause, x.has_from, x.items, x.need) for x in st.levels), st.prev, st.prev_cats,
               st.prev_role, st.cases, st.declared, kind, value)
        got = self._partial_memo.get(key)
        if got is None:
            if len(self._partial_memo) > 50_000:
                self._partial_memo.clear()
            got = self._partial_memo[key] = self._partial(st, kind, value)
        return got

    def _complete_lexeme_ok(self, kind: str, value: str) -> bool:
        if kind in ("sq", "dq"):
            return _closed(value) and self._literal_ok(value)
        if kind == "bq":
            return len(value) >= 2 and value[-1] in "`]"
        if kind == "op":
            return value not in ("!", "|")
        return True

    def _numeric_pointer(self, word: str) -> bool:
        m = _POINTER.match(word)
        return m is not None and int(m.group(1)) in self.row.numeric_words

    def _value_pointer(self, word: str) -> bool:
        """Whether a bare pointer may be a value (:attr:`RowSchema.value_words`)."""
        if self._values is None:
            return True
        m = _POINTER.match(word)
        return m is not None and int(m.group(1)) in self._starts

    def _pointers_ok(self, value: str, numbers: Sequence[str]) -> bool:
        """The finished pointers of a pointer literal: words that exist and, outside a LIKE pattern, can
        begin or end a value (its first and last)."""
        if not all(1 <= int(n) <= self.row.n_words for n in numbers):
            return False
        if self._values is None or "%" in value or not numbers:
            return True
        return int(numbers[0]) in self._starts and int(numbers[-1]) in self._values

    def _pointer_begun(self, value: str, digits: str) -> bool:
        """Whether ``w<digits>``, a pointer of the literal ``value`` still being written, can be
        finished into one the literal may hold."""
        allowed = range(1, self.row.n_words + 1)
        if self._values is not None and "%" not in value:
            allowed = self._values
        return any(str(k).startswith(digits) for k in allowed)

    def _literal_ok(self, value: str) -> bool:
        """A pointer literal (``' w9 w13 '``) names question words that exist and can be a value; where
        values are pointers, a literal written out holds no schema number or clause keyword. With
        :data:`VALUE_RULE`, a finished literal names something: a pointer, or a letter or digit written
        out (not ``'?'``, ``'%'`` or ``' % '``)."""
        if not self.row.n_words or value[0] != "'":
            return True
        if not _POINTER_LITERAL.match(value):
            return not _SQL_IN_TEXT.search(value) and (self._values is None or any(ch.isalnum() for ch in value))
        numbers = re.findall(r"w(\d+)", value)
        return (self._values is None or bool(numbers)) and self._pointers_ok(value, numbers)

    def _partial(self, st: _State, kind: str, value: str) -> bool:
        """The last lexeme, maybe unfinished: can it be completed into one the grammar takes here?"""
        if kind in ("sq", "dq"):
            if _closed(value):
                return self._literal_ok(value) and self._advance(st.copy(), kind, value)
            if value[0] == "'" and self.row.n_words:
                if not _POINTER_LITERAL.match(value):
                    if _SQL_IN_TEXT.search(value):  # a value written out
                        return False
                else:
                    numbers = re.findall(r"w(\d+)", value)
                    complete, tail = numbers[:-1], numbers[-1:]
                    if value.rstrip() != value:  # the last number is finished
                        complete, tail = numbers, []
                    if not self._pointers_ok(value, complete):
                        return False
                    if tail and not self._pointer_begun(value, tail[0]):
                        return False
            return self._advance(st.copy(), kind, value[0] + value[0])
        if kind == "bq":
            close = "]" if value[0] == "[" else "`"
            if len(value) >= 2 and value.endswith(close):
                return self._advance(st.copy(), kind, value)
            low = value[1:].lower()
            names = sorted(n for n in self.row.table_names | self.row.column_names if n.startswith(low))
            if not self.row.restrict_names:
                names = [low or "x"]
            return any(self._advance(st.copy(), kind, value[0] + n + close) for n in names[:64])
        if kind == "num":
            return self._advance(st.copy(), kind, value.rstrip("."))
        if kind == "op":
            if value in ("!", "|"):
                return self._advance(st.copy(), "op", value + ("=" if value == "!" else "|"))
            return self._advance(st.copy(), kind, value)
        # A word: itself or one of its completions must fit.
        if self._advance(st.copy(), "word", value):
            return True
        low = value.lower()
        if any(d.startswith(low) for d in st.declared):  # an alias given earlier (ORDER BY total)
            if any(self._advance(st.copy(), "word", d) for d in st.declared if d.startswith(low)):
                return True
        tried: set = set()
        for word in self.row.completions(value):
            cats = self._cat_memo.get(word)
            if cats is None:
                cats = self._cat_memo[word] = self.row.categories(word)
            # Items of one kind (c1..c400) fare alike in the grammar: one of each kind is tried.
            key = word.upper() if cats & {"kw", "func", "type"} or not cats else cats
            if "pointer" in cats:  # pointers to numbers, values and other words fare differently
                key = (cats, self._numeric_pointer(word), self._value_pointer(word))
            if word == value or key in tried:
                continue
            tried.add(key)
            if self._advance(st.copy(), "word", word):
                return True
        return False

    def _advance(self, st: _State, kind: str, value: str) -> bool:
        """Take one complete lexeme; False when the grammar refuses it here."""
        ok = self._step(st, kind, value)
        if ok:
            st.prev = value.upper() if kind == "word" else value
        return ok

    def _step(self, st: _State, kind: str, value: str) -> bool:  # noqa: C901 - one grammar, one place
        if kind == "punct" and value == "(" and len(st.levels) > MAX_DEPTH:
            return False
        if kind == "punct" and value == "." and st.exp in ("after", "dot"):
            st.qualifiers = st.qualifiers | {st.prev.lower()}
        lvl = st.levels[-1]
        e = st.exp
        up = value.upper() if kind == "word" else value
        cats = frozenset()
        if kind == "word":
            cats = self._cat_memo.get(value)
            if cats is None:
                cats = self._cat_memo[value] = self.row.categories(value)
        role, st.prev_role = st.prev_role, ""
        prev_cats, st.prev_cats = st.prev_cats, frozenset()
        if e == "end":
            return False
        if e == "start":
            if up == "SELECT":
                lvl.clause, lvl.items, st.exp = 1, 1, "operand"
                return True
            return False
        if e in ("operand", "operand_sel"):
            if kind == "punct" and value == "(":
                st.levels.append(_Level("paren"))
                st.exp = "operand_sel"
                return True
            if kind == "word":
                if up == "SELECT":
                    if e != "operand_sel":
                        return False
                    lvl.kind, lvl.clause, lvl.items, st.exp = "query", 1, 1, "operand"
                    return True
                if up == "DISTINCT":
                    return st.prev in ("SELECT", "(") and (st.prev == "SELECT" or lvl.kind == "func")
                if up in ("NOT", "CASE") or (up == "WHEN" and st.prev == "CASE"):
                    st.cases += up == "CASE"
                    st.exp = "operand"
                    return True
                if up == "EXISTS" and len(st.levels) <= MAX_DEPTH:
                    st.exp = "lparen"
                    return True
                if up in ("NULL", "TRUE", "FALSE"):
                    st.exp = "after"
                    return True
                if "kw" in cats and not cats & {"column", "table", "pointer", "alias"}:
                    return False
                st.prev_cats = cats
                if cats == {"pointer"} and st.prev in _ORDER_OPS and not self._numeric_pointer(value):
                    return False  # an order comparison with a question word that is not a number
                if cats == {"pointer"} and not self._value_pointer(value):
                    return False  # a question word that cannot be a value
                if cats & {"column", "pointer"} or value.lower() in st.declared:
                    st.exp = "after"
                    return True
                if "func" in cats and len(st.levels) <= MAX_DEPTH:
                    st.exp = "lparen_func"
                    return True
                if cats & {"table", "alias"}:
                    st.exp = "dot"
                    return True
                if "type" in cats and lvl.kind == "func":
                    st.exp = "after"
                    return True
                return False
            if kind in ("num", "sq", "dq"):
                if kind != "num" and st.prev in _ARITHMETIC:
                    return False
                st.exp = "after"
                return True
            if kind == "bq" and self._name_ok(value, self.row.column_names):
                st.exp = "after"
                return True
            if kind == "op":
                if value in ("-", "+"):
                    return True
                if value == "*" and ((lvl.kind == "query" and lvl.clause == 1 and st.prev in ("SELECT", ",", "DISTINCT"))
                                     or (lvl.kind == "func" and st.prev in ("(", "DISTINCT"))):
                    if lvl.kind == "query":  # SELECT * : its columns are not counted
                        lvl.items = lvl.need = 0
                    st.exp = "after"
                    return True
            return False
        if e == "after":
            if kind == "op":
                if value in _ARITHMETIC and st.prev[:1] in ("'", '"'):
                    return False
                st.exp = "operand"
                return True
            if kind == "punct":
                if value == ",":
                    if lvl.kind == "query" and lvl.clause == 2:
                        st.exp = "table"
                    elif lvl.kind == "query" and lvl.clause == 1 and lvl.items:
                        if lvl.need and lvl.items >= lvl.need:
                            return False  # more result columns than the other side of the set operation
                        lvl.items += 1
                        st.exp = "operand"
                    elif lvl.kind != "query" or lvl.clause in (1, 4, 6):
                        st.exp = "operand"
                    else:
                        return False
                    return True
                if value == ")":
                    if len(st.levels) == 1 or (lvl.kind == "query" and not lvl.has_from):
                        return False
                    was_query = lvl.kind == "query"
                    st.levels.pop()
                    st.exp = "after"
                    st.prev_role = "table" if was_query and st.levels[-1].clause == 2 else ""
                    return True
                if value == "(":
                    if "func" in prev_cats:
                        st.levels.append(_Level("func"))
                        st.exp = "operand"
                        return True
                    return False
                if value == ".":
                    if prev_cats & {"table", "alias"} or st.prev.lower() in st.declared:
                        st.exp = "column"
                        return True
                    return False
                if value == ";":
                    if len(st.levels) == 1 and lvl.has_from:
                        st.exp = "end"
                        return True
                    return False
                return False
            if kind != "word":
                return False
            query = lvl.kind == "query"
            if up in _CLAUSE and up != "SELECT":
                rank = _CLAUSE[up]
                if not query:
                    return False
                if up == "FROM" and lvl.clause == 1:
                    if lvl.need and lvl.items and lvl.items != lvl.need:
                        return False  # fewer result columns than the other side of the set operation
                    lvl.clause, lvl.has_from, st.exp = 2, True, "table"
                    return True
                if up == "WHERE" and lvl.clause == 2:
                    lvl.clause, st.exp = 3, "operand"
                    return True
                if up == "GROUP" and 2 <= lvl.clause < rank:
                    lvl.clause, st.exp = rank, "by"
                    return True
                if up == "HAVING" and lvl.clause == 4:
                    lvl.clause, st.exp = rank, "operand"
                    return True
                if up == "ORDER" and 2 <= lvl.clause < rank:
                    lvl.clause, st.exp = rank, "by"
                    return True
                if up == "LIMIT" and 2 <= lvl.clause < rank:
                    lvl.clause, st.exp = rank, "number"
                    return True
                return False
            if up == "OFFSET":
                if query and lvl.clause == 7:
                    st.exp = "number"
                    return True
                return False
            if up in ("JOIN", "LEFT", "RIGHT", "FULL", "INNER", "CROSS", "NATURAL", "ON", "USING"):
                if not (query and lvl.clause == 2):
                    return False
                st.exp = {"JOIN": "table", "ON": "operand", "USING": "lparen"}.get(up, "join")
                return True
            if up == "AS":
                st.exp = "alias"
                return True
            if up in ("AND", "OR", "LIKE", "GLOB", "BETWEEN") or (up in ("WHEN", "THEN", "ELSE") and st.cases):
                st.exp = "operand"
                return True
            if up == "NOT":
                st.exp = "not"
                return True
            if up == "IN" and len(st.levels) <= MAX_DEPTH:
                st.exp = "lparen"
                return True
            if up == "IS":
                st.exp = "is"
                return True
            if up == "END" and st.cases:
                st.cases -= 1
                return True
            if up in ("ASC", "DESC"):
                return query and lvl.clause == 6 and st.prev not in ("ASC", "DESC")
            if up == "COLLATE":
                st.exp = "name"
                return True
            if up in ("UNION", "INTERSECT", "EXCEPT"):
                if not (query and lvl.has_from):
                    return False
                lvl.need = lvl.need or lvl.items
                lvl.clause, lvl.has_from, st.exp = 0, False, "setop"
                return True
            if role == "table" and self._alias_ok(value, cats):  # FROM singer s
                st.declared = st.declared | {value.lower()}
                return True
            return False
        if e == "table":
            if kind == "word" and "table" in cats:
                st.exp, st.prev_role, st.prev_cats = "after", "table", cats
                st.read = st.read | {value.lower()}
                return True
            if kind == "punct" and value == "(":
                st.levels.append(_Level("paren"))
                st.exp = "operand_sel"
                return True
            if (kind == "dq" and value[1:-1].lower() in self.row.table_names) or \
                    (kind == "bq" and self._name_ok(value, self.row.table_names)):
                st.exp, st.prev_role = "after", "table"
                st.read = st.read | {value[1:-1].lower()}
                return True
            return False
        if e == "by":
            if up == "BY":
                st.exp = "operand"
                return True
            return False
        if e == "number":
            if kind == "num" or (kind == "word" and "pointer" in cats and self._numeric_pointer(value)):
                st.exp = "after"
                return True
            return False
        if e == "alias":
            if kind == "word" and self._alias_ok(value, cats, explicit=True):
                st.declared = st.declared | {value.lower()}
                st.exp = "after"
                st.prev_cats = cats | {"alias"}
                return True
            if kind in ("dq", "sq", "bq"):
                st.declared = st.declared | {value[1:-1].lower()}
                st.exp = "after"
                return True
            return False
        if e == "dot":
            if kind == "punct" and value == ".":
                st.exp = "column"
                return True
            return False
        if e == "column":
            if (kind == "word" and "column" in cats) or (kind == "op" and value == "*"):
                st.exp = "after"
                st.prev_cats = frozenset()
                return True
            if (kind == "dq" and value[1:-1].lower() in self.row.column_names) or \
                    (kind == "bq" and self._name_ok(value, self.row.column_names)):
                st.exp = "after"
                return True
            return False
        if e in ("lparen", "lparen_func"):
            if kind == "punct" and value == "(":
                if e == "lparen_func":
                    st.levels.append(_Level("func"))
                    st.exp = "operand"
                else:
                    st.levels.append(_Level("in" if st.prev == "IN" else "paren"))
                    st.exp = "operand_sel"
                return True
            return False
        if e in ("setop", "select"):
            if up == "ALL" and e == "setop":
                st.exp = "select"
                return True
            if up == "SELECT":
                lvl.clause, lvl.items, st.exp = 1, 1, "operand"
                return True
            return False
        if e == "is":
            if up == "NOT" and st.prev == "IS":
                return True
            if up == "NULL":
                st.exp = "after"
                return True
            return False
        if e == "not":
            if up == "IN" and len(st.levels) <= MAX_DEPTH:
                st.exp = "lparen"
                return True
            if up in ("LIKE", "GLOB", "BETWEEN"):
                st.exp = "operand"
                return True
            return False
        if e == "join":
            if up == "OUTER":
                return True
            if up == "JOIN":
                st.exp = "table"
                return True
            return False
        if e == "name":
            if kind == "word":
                st.exp = "after"
                return True
            return False
        return False

    def _alias_ok(self, word: str, cats: frozenset[str], explicit: bool = False) -> bool:
        """A new alias: not a keyword (nor, without ``AS``, a function). With numbered items, one of the row's aliases
        (``T1``..), or after ``AS`` any other name (``total``; ``t1`` of a target written with real
        names, a shown table number), never another item number (``c12``, ``w4``, ``t9``)."""
        if "kw" in cats or ("func" in cats and not explicit):  # AS total, AS count: function names may be aliases
            return False
        if self.row.tables:
            if word in self.row.aliases or (explicit and word in self.row.tables):
                return True
            return explicit and not _ITEM_NUMBER.match(word)
        return True

    def _name_ok(self, quoted: str, names: frozenset[str]) -> bool:
        """A quoted identifier (``[first name]``, a backquoted name) that is one of ``names``."""
        return len(quoted) > 2 and (quoted[1:-1].lower() in names or not self.row.restrict_names)

    # -- the whole query ------------------------------------------------------------------------
    def _parses(self, text: str) -> bool:
        import sqlglot
        from sqlglot import exp

        if too_many_joins(text):  # sqlglot's join parsing recurses per JOIN: a degenerate chain never ends
            return False

        try:
            trees = sqlglot.parse(text, read="sqlite")
        except Exception:  # noqa: BLE001 - any parser failure means: not a query
            return False
        trees = [t for t in trees if t is not None]
        if len(trees) != 1 or not isinstance(trees[0], (exp.Select, exp.Union, exp.Intersect, exp.Except)):
            return False
        return self._columns_of_read_tables(trees[0]) if self.row.check_owners else True

    def _columns_of_read_tables(self, tree) -> bool:
        """Each column belongs to a table its SELECT (or an enclosing one) reads, where decidable."""
        from sqlglot import exp

        from t2sql.linking.targets import _enclosing_selects

        row = self.row
        for col in tree.find_all(exp.Column):
            if isinstance(col.this, exp.Star):
                continue
            owners = row.owners.get(col.name) or row.owners.get(col.name.lower())
            if not owners:
                continue  # an output alias or an unrestricted name
            aliases: dict[str, str] = {}  # as written first (T1 is not t1), then lower-cased
            loose: dict[str, str] = {}
            read: set[str] = set()
            decidable = True
            for select in _enclosing_selects(col):
                from_ = select.args.get("from") or select.args.get("from_")
                sources = ([from_.this] if from_ is not None else []) + [j.this for j in select.args.get("joins") or []]
                for s in sources:
                    if not isinstance(s, exp.Table):
                        decidable = False
                        continue
                    name = s.name if s.name in row.tables else s.name.lower()
                    read.add(name)
                    aliases.setdefault(s.alias or s.name, name)
                    aliases.setdefault(s.name, name)
                    loose.setdefault((s.alias or s.name).lower(), name)
                    loose.setdefault(s.name.lower(), name)
            if not decidable:
                continue
            if col.table:
                table = aliases.get(col.table) or loose.get(col.table.lower())
                if table is not None and table not in owners:
                    return False
            elif read and not read & owners:
                return False
        return True


# -- tokens and batches ----------------------------------------------------------------------------

_PIECES: dict[int, tuple[Any, list[str], set[int]]] = {}


def piece_texts(tokenizer) -> tuple[list[str], set[int]]:
    """The text each token id adds when it follows other text (its leading space kept), and the ids
    never allowed (special tokens other than end-of-sequence). Computed once per tokenizer."""
    key = id(tokenizer)
    got = _PIECES.get(key)
    if got is not None and got[0] is tokenizer:
        return got[1], got[2]
    base = tokenizer("a", add_special_tokens=False)["input_ids"]
    head = tokenizer.decode(base, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    size = len(tokenizer)
    texts = tokenizer.batch_decode([base + [i] for i in range(size)], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    pieces = [t[len(head):] if t.startswith(head) else t for t in texts]
    banned = {i for i in tokenizer.all_special_ids if i != tokenizer.eos_token_id}
    _PIECES[key] = (tokenizer, pieces, banned)
    return pieces, banned


class SQLConstraint:
    """The constraint of one batch: the tokenizer's pieces and one :class:`RowSchema` per batch row.

    Args:
        tokenizer: the model's tokenizer.
        rows: one schema per batch row (input order of the batch).
        eos_token_id: end-of-sequence (default: the tokenizer's).
        top_k: candidates checked per row and step (default: :data:`TOP_K`, read when the batch starts).
    """

    def __init__(self, tokenizer, rows: Sequence[RowSchema], eos_token_id: int | None = None,
                 top_k: int | None = None):
        self.pieces, self.banned = piece_texts(tokenizer)
        self.eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
        self.pad = tokenizer.pad_token_id
        self.checkers = [PrefixChecker(r) for r in rows]
        self.top_k = TOP_K if top_k is None else top_k
        #: rows x steps checked, candidates checked, fallbacks, and seconds spent masking
        self.stats: dict[str, float] = {"steps": 0, "checked": 0, "fallbacks": 0, "seconds": 0.0}
        self.last_fallback = False

    def text(self, ids: Sequence[int]) -> str:
        """The text of generated ids (special tokens other than EOS write nothing)."""
        pieces, n = self.pieces, len(self.pieces)
        return "".join(pieces[i] for i in ids if i != self.eos and i != self.pad and i < n)

    def allowed(self, row: int, prefix: Sequence[int], ranked: Sequence[int], needed: int) -> list[int] | None:
        """The first ``needed`` valid ids of ``ranked`` (best first) after ``prefix`` for batch row ``row``.

        Returns:
            The valid ids found (the best unconstrained one alone when none is: see
            :attr:`last_fallback`), or None when the prefix itself is no longer valid (the row then
            decodes unconstrained).
        """
        self.last_fallback = False
        checker = self.checkers[row]
        text = self.text(prefix)
        if not checker.valid_prefix(text):
            return None
        self.stats["steps"] += 1
        found: list[int] = []
        for tok in ranked[:self.top_k]:
            self.stats["checked"] += 1
            if tok in self.banned or tok >= len(self.pieces):  # special, or an id past the tokenizer (t5's padding)
                continue
            if tok == self.eos:
                ok = checker.valid_complete(text)
            else:
                piece = self.pieces[tok]
                ok = bool(piece) and checker.valid_prefix(text + piece, parent=text)
            if ok:
                found.append(tok)
                if len(found) >= needed:
                    break
        if not found:
            self.stats["fallbacks"] += 1
            self.last_fallback = True
            return [ranked[0]]
        return found

    def mask_numpy(self, logits: np.ndarray, prefixes: Sequence[Sequence[int]], rows: Sequence[int],
                   needed: int = 1) -> np.ndarray:
        """``logits`` (sequences x vocab) with every token but the allowed ones at ``-inf``, in place.

        Args:
            logits: one row per sequence still decoded.
            prefixes: the ids each sequence has generated so far (no start token).
            rows: the batch row (index into this constraint's schemas) of each sequence.
            needed: valid tokens wanted per sequence (1 for greedy).
        """
        t0 = time.perf_counter()
        k = min(self.top_k, logits.shape[1])
        top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        for s in range(logits.shape[0]):
            if self.eos in prefixes[s]:
                continue
            cand = top[s][np.argsort(-logits[s, top[s]], kind="stable")]
            cand = [int(t) for t in cand if np.isfinite(logits[s, t])]
            if not cand:
                continue
            keep = self.allowed(int(rows[s]), list(prefixes[s]), cand, needed)
            if keep is None:
                continue
            kept = logits[s, keep].copy() - (FALLBACK_PENALTY if self.last_fallback else 0.0)
            logits[s, :] = -np.inf
            logits[s, keep] = kept
        self.stats["seconds"] += time.perf_counter() - t0
        return logits

    def logits_processor(self, num_beams: int = 1):
        """A Hugging Face ``LogitsProcessor`` applying this constraint (greedy and beam search)."""
        return _Processor(self, num_beams)


def _processor_base():
    from transformers import LogitsProcessor

    return LogitsProcessor


class _Processor(_processor_base()):
    """Sequence ``s`` of a (batch x beams) generate call belongs to batch row ``s // num_beams``; its
    first id is the decoder start token."""

    def __init__(self, constraint: SQLConstraint, num_beams: int):
        self.constraint = constraint
        self.num_beams = num_beams

    def __call__(self, input_ids, scores):
        import torch

        c = self.constraint
        t0 = time.perf_counter()
        k = min(c.top_k, scores.shape[1])
        top = torch.topk(scores, k, dim=1)
        ranked = top.indices.tolist()
        values = top.values.float().tolist()
        ids = input_ids[:, 1:].tolist()
        out = scores
        for s, prefix in enumerate(ids):
            if c.eos in prefix:
                continue
            pairs = [(t, v) for t, v in zip(ranked[s], values[s]) if math.isfinite(v)]
            if not pairs:
                continue
            keep = c.allowed(s // self.num_beams, prefix, [t for t, _ in pairs], self.num_beams)
            if keep is None:
                continue
            if out is scores:
                out = scores.clone()
            idx = torch.tensor(keep, device=scores.device)
            kept = scores[s, idx] - (FALLBACK_PENALTY if c.last_fallback else 0.0)
            out[s, :] = -float("inf")
            out[s, idx] = kept
        c.stats["seconds"] += time.perf_counter() - t0
        return out
