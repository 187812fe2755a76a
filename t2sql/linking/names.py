"""Names and question words: how a schema name is read (words, stems, abbreviations) and matched."""

from __future__ import annotations

import re



MARK_EXACT, MARK_PARTIAL, MARK_VALUE = "[E]", "[P]", "[V]"
_WORD = re.compile(r"[A-Za-z]+|\d+")
_STOP = {"the", "a", "an", "of", "in", "on", "for", "to", "is", "are", "was", "were", "what", "which", "who",
         "how", "many", "and", "or", "with", "by", "at", "from", "that", "all", "each", "their", "its", "do",
         "does", "did", "be", "as", "show", "list", "give", "find", "me", "return", "there", "have", "has", "id",
         "name", "number", "than", "more", "less", "it", "this", "those", "these", "whose", "where", "when"}


def humanize(name: str) -> str:
    """``singer_ID`` -> ``singer id``; ``SchoolClubTeam`` -> ``school club team``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return " ".join(w.lower() for w in _WORD.findall(spaced))


#: Abbreviations common in schema names, read as the words a question uses (``expand_names``).
_ABBREVIATIONS = {
    "acc": "account", "act": "activity", "addr": "address", "al": "airline", "amen": "amenity", "amt": "amount",
    "ap": "airport", "apt": "apartment", "auth": "author", "avg": "average", "cap": "capacity", "cnt": "count",
    "cred": "credit", "crs": "course", "cust": "customer", "dept": "department", "desc": "description",
    "dob": "date of birth", "dorm": "dormitory", "dst": "destination", "emp": "employee", "fac": "faculty",
    "firstname": "first name", "fname": "first name", "forename": "first name", "govt": "government",
    "info": "information", "inst": "institution", "lang": "language", "lastname": "last name", "lname": "last name",
    "loc": "location", "mgr": "manager", "num": "number", "org": "organization", "pct": "percent",
    "pop": "population", "pos": "position", "prod": "product", "prof": "professor", "qty": "quantity",
    "reg": "registration", "src": "source", "std": "student", "stu": "student", "surname": "last name",
    "tel": "telephone", "tot": "total", "uni": "university", "yr": "year",
}
#: English words that end in ``id`` without being ``<name> id``.
_NOT_ID = {"acid", "afraid", "avid", "candid", "david", "fluid", "humid", "hybrid", "invalid", "liquid", "lucid",
           "madrid", "maid", "morbid", "orchid", "paid", "pyramid", "raid", "rapid", "said", "solid", "splendid",
           "squid", "stupid", "timid", "valid", "vivid", "void"}


def name_words(name: str, expand: bool = False) -> list[str]:
    """The words of a table or column name, as :func:`humanize` splits them.

    With ``expand``, a word glued to ``id`` is split off it (``dormid`` -> ``dorm id``) and common
    abbreviations are written out (``dept`` -> ``department``, ``fname`` -> ``first name``), so the
    name links to the words a question uses.
    """
    words = humanize(name).split()
    if not expand:
        return words
    out: list[str] = []
    for w in words:
        if len(w) > 3 and w.endswith("id") and w not in _NOT_ID:
            out += _ABBREVIATIONS.get(w[:-2], w[:-2]).split() + ["id"]
        else:
            out += _ABBREVIATIONS.get(w, w).split()
    return out


def _stem(word: str) -> str:
    """A light plural stemmer shared by question words and schema names.

    ``names``/``name`` -> ``name``, ``cities``/``city`` -> ``city``, ``movies``/``movie`` -> ``movy``,
    ``addresses``/``address`` -> ``address``, ``boxes`` -> ``box``; ``status``, ``class`` and
    ``analysis`` stay whole. Both sides of a match go through it, so only agreement matters.
    """
    w = word.lower()
    if len(w) <= 3:
        return w
    if w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith("ie"):
        return w[:-2] + "y"
    if w.endswith(("sses", "shes", "ches", "xes", "zes")):
        return w[:-2]
    if w.endswith(("ss", "us", "is")):
        return w
    if w.endswith("s"):
        return w[:-1]
    return w


def question_words(question: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(question)]


def _link_name(name: str, q_words: list[str], q_set: set[str], expand: bool) -> str | None:
    """The link mark of a table or column name: its own words, else (``expand``) its words written out."""
    words = name_words(name)
    mark = _link(words, q_words, q_set)
    if mark is None and expand:
        expanded = name_words(name, expand=True)
        if expanded != words:
            mark = _link(expanded, q_words, q_set)
    return mark


def _link(words: list[str], q_words: list[str], q_set: set[str]) -> str | None:
    stems = [_stem(w) for w in words]
    if not stems:
        return None
    m = len(stems)
    for k in range(len(q_words) - m + 1):
        if q_words[k:k + m] == stems:
            return MARK_EXACT
    if any(s in q_set and s not in _STOP for s in stems):
        return MARK_PARTIAL
    return None


def _literal_text(literal: str) -> str:
    if literal[:1] == "'" and literal[-1:] == "'" and len(literal) >= 2:
        return literal[1:-1].replace("''", "'")
    return literal


def _value_in_question(value: str, question_low: str) -> bool:
    v = value.lower().strip()
    if len(v) < 2 and not v.isdigit():
        return False
    if v.replace(".", "", 1).isdigit():
        return re.search(rf"(?<![\d.]){re.escape(v)}(?![\d])", question_low) is not None
    return re.search(rf"(?<!\w){re.escape(v)}(?!\w)", question_low) is not None
