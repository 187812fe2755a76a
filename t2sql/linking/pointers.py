"""Question-word pointers: values written as w5 (the fifth question word) and read back."""

from __future__ import annotations

import re



_LITERAL = re.compile(r"'(?:[^']|'')*'")


_QWORD = re.compile(r"\d+(?:[.,:]\d+)*|[^\W\d_]+|\d+|[^\w\s]|_")
MAX_WORDS = 100
_POINTER = re.compile(r"^(%?)\s*w(\d+)(?:\s+w(\d+))?\s*(%?)$")
_CODE_POINTER = re.compile(r"(?<![\w.])w(\d+)\b")
_CODE_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")


def question_word_spans(question: str) -> list[tuple[int, int]]:
    """Character spans of the question's words: numbers (``4.911``, ``1,000``), letter runs and single
    punctuation marks, at most :data:`MAX_WORDS`."""
    return [m.span() for m in _QWORD.finditer(question)][:MAX_WORDS]


def mark_question(question: str, links: dict[int, list[str]] | None = None) -> str:
    """The question with a pointer before every word: ``w1 How w2 many w3 heads ...``.

    ``links`` (word index from 0 -> table/column numbers, see :func:`question_links`) are written
    after their word: ``w3 date c8``.
    """
    spans = question_word_spans(question)
    links = links or {}
    return " ".join(" ".join([f"w{i} {question[a:b]}", *links.get(i - 1, [])])
                    for i, (a, b) in enumerate(spans, start=1))




def _span_of(value: str, question: str, spans: list[tuple[int, int]]) -> tuple[int, int] | None:
    """(first, last) word numbers whose text from the first's start to the last's end is ``value``."""
    if not value:
        return None
    starts = {a: i for i, (a, _) in enumerate(spans, start=1)}
    ends = {b: i for i, (_, b) in enumerate(spans, start=1)}
    pos = question.find(value)
    while pos >= 0:
        end = pos + len(value)
        if pos in starts and end in ends and ends[end] >= starts[pos]:
            return starts[pos], ends[end]
        pos = question.find(value, pos + 1)
    return None


def point_values(sql: str, question: str) -> str:
    """Replace values that are runs of question words by word pointers.

    ``name = 'Butler CC (KS)'`` -> ``name = 'w9 w13'`` (first and last word), ``'%Swift%'`` ->
    ``'% w4 %'``, a number that is a question word ``> 56`` -> ``> w7``. Other values stay as written.
    """
    spans = question_word_spans(question)
    out = []
    for code, literal in _split_literals(sql):

        def number(m: re.Match[str]) -> str:
            got = _span_of(m.group(0), question, spans)
            return f"w{got[0]}" if got and got[0] == got[1] else m.group(0)

        out.append(_CODE_NUMBER.sub(number, code))
        if literal:
            inner = literal[1:-1].replace("''", "'")
            core = inner.strip("%")
            pre, post = inner[: len(inner) - len(inner.lstrip("%"))], inner[len(inner.rstrip("%")):]
            got = _span_of(core, question, spans)
            if got is None or not core:
                out.append(literal)
            else:
                words = f"w{got[0]}" if got[0] == got[1] else f"w{got[0]} w{got[1]}"
                out.append("'" + f"{pre} {words} {post}".strip() + "'")
    return "".join(out)


def resolve_pointers(sql: str, question: str) -> str:
    """Undo :func:`point_values`: word pointers become the question text they span.

    Pointers past the last word are left as written (the query then fails to run).
    """
    spans = question_word_spans(question)

    def text(i: int, j: int | None) -> str | None:
        j = i if j is None else j
        if not (1 <= i <= len(spans) and 1 <= j <= len(spans)) or j < i:
            return None
        return question[spans[i - 1][0]:spans[j - 1][1]]

    out = []
    for code, literal in _split_literals(sql):
        def number(m: re.Match[str]) -> str:
            got = text(int(m.group(1)), None)
            return m.group(0) if got is None else bare_value(got)

        out.append(_CODE_POINTER.sub(number, code))
        if literal:
            m = _POINTER.match(literal[1:-1])
            got = text(int(m.group(2)), int(m.group(3)) if m.group(3) else None) if m else None
            out.append(literal if got is None else "'" + m.group(1) + got.replace("'", "''") + m.group(4) + "'")
    return "".join(out)


_GROUPED_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
#: Number words and their values (constrained decoding reads the words as numbers too).
NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
    "thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000}


def bare_value(word: str) -> str:
    """SQL for the question word a bare pointer (``> w7``) names: a number as it is, ``1,000`` as
    ``1000``, a number word (``four``) as its digits, any other word as a quoted string (``= w5`` over
    ``R`` -> ``= 'R'``), never an identifier."""
    if _CODE_NUMBER.fullmatch(word):
        return word
    if _GROUPED_NUMBER.fullmatch(word):
        return word.replace(",", "")
    if word.lower() in NUMBER_WORDS:
        return str(NUMBER_WORDS[word.lower()])
    return "'" + word.replace("'", "''") + "'"


_OPENERS = re.compile(r"([\"'(\[“‘])(?=\w)")


def space_openers(text: str) -> str:
    """A space after opening quotes and brackets glued to a word: ``"Replaced by`` -> ``" Replaced by``.

    Applied to the question and to the values of the target alike, so a value's first word is the
    same token in both (byte-level tokenizers treat ``Replaced`` after a quote and `` Replaced``
    after a space as different tokens); :func:`snap_value` undoes it.
    """
    return _OPENERS.sub(r"\1 ", text)


def space_sql(text: str) -> str:
    """Spaces before every placeholder and inside string quotes, so tokens match the question's.

    ``COUNT(c3)`` -> ``COUNT( c3)``, ``T1.c3`` -> ``T1. c3``, ``'France'`` -> ``' France '``.
    """
    out = []
    for code, literal in _split_literals(text):
        code = re.sub(r"(?<=[^\s])(?=\b[tc]\d+\b)", " ", code)
        out.append(code)
        if literal:
            inner = space_openers(literal[1:-1].replace("''", "'")).replace("'", "''")
            out.append(f"' {inner} '" if inner else "''")
    return "".join(out)


def _split_literals(text: str) -> list[tuple[str, str]]:
    """``[(code, following literal or "")]`` covering ``text``."""
    parts, pos = [], 0
    for m in _LITERAL.finditer(text):
        parts.append((text[pos:m.start()], m.group(0)))
        pos = m.end()
    parts.append((text[pos:], ""))
    return parts




def _code_only(text: str) -> str:
    return "".join(code for code, _ in _split_literals(text))
