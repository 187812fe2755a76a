"""Query sketches retrieved from training questions like the one asked (``prompt.skeleton_hints``).

A model trained for minutes learns slowly which *shape* of query a question asks for: on Spider's
unseen databases a 25-minute model wrote the right shape (``SELECT c FROM t ORDER BY c DESC LIMIT
v``, with every table, column and value blanked) for 9% of questions. The words that decide the
shape, "how many", "for each", "the most", "in descending order", are the same on every database,
so they can be looked up instead: each question is compared with the training questions, its own
schema words, numbers and names blanked (``how many SCH are there ?``), by TF-IDF over word
n-grams, and the sketches of the nearest ones are shown in the input
(``question: ... | sketch: SELECT COUNT(*) FROM t WHERE c = v ; ... | t1 ...``), for the model
to copy a shape and fill in numbers. (On Spider the nearest sketch had the right shape for 28% of
the test questions; a 25-minute model shown two wrote the right shape for 12%, against 9% without,
but no more right answers: docs/recipes.md.)

During training, a question never sees sketches from its own database (``db_id``, or its context
when there is none), so the hints are as good as they will be on a database the model has never
seen. The index is saved beside the model (``t2sql_skeletons.json``) and read by the translator.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SKELETON_FILE = "t2sql_skeletons.json"
_WORD = re.compile(r"\w+|[^\w\s]")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NAME_WORD = re.compile(r"[A-Za-z]+")
_SQL_WORDS = {"create", "table", "number", "text", "primary", "key", "foreign", "references", "int", "integer",
              "real", "varchar", "null", "not", "default"}


def skeleton(target: str) -> str:
    """The shape of a placeholder target: tables ``t``, columns ``c``, values ``v``.

    ``SELECT COUNT(*) FROM t3 WHERE c13 > w10`` -> ``SELECT COUNT(*) FROM t WHERE c > v``.
    """
    s = _QUOTED.sub("v", target)
    s = re.sub(r"\bt\d+\b", "t", s)
    s = re.sub(r"\bc\d+\b", "c", s)
    s = re.sub(r"\bw\d+\b", "v", s)
    s = re.sub(r"(?<![\w.])-?\d+(?:\.\d+)?\b", "v", s)
    s = re.sub(r"\bv(?:\s+v)+\b", "v", s)  # a value written as several word pointers
    return re.sub(r"\s+", " ", s).strip()


def _schema_words(context: str) -> set[str]:
    words = set()
    for name in _NAME_WORD.findall(re.sub(r"([a-z])([A-Z])", r"\1 \2", context.replace("_", " "))):
        w = name.lower()
        if len(w) > 2 and w not in _SQL_WORDS:
            words.add(w)
    return words


def mask_question(question: str, context: str) -> str:
    """The question with the words that depend on the database blanked.

    Words naming a table or column of ``context`` (or their plural) become ``SCH``, numbers
    ``NUM``, quoted strings and capitalised words after the first ``CAP``; the rest is lower-cased.
    """
    schema = _schema_words(context)
    out: list[str] = []
    for w in _WORD.findall(_QUOTED.sub(" CAPQ ", question)):
        lw = w.lower()
        if w == "CAPQ":
            out.append("CAP")
        elif _NUMBER.fullmatch(w):
            out.append("NUM")
        elif lw in schema or lw.rstrip("s") in schema or (lw.endswith("es") and lw[:-2] in schema):
            out.append("SCH")
        elif w[0].isupper() and out:
            out.append("CAP")
        else:
            out.append(lw)
    return " ".join(out)


class SkeletonIndex:
    """Training questions (blanked) and the sketches of their queries, searchable by TF-IDF."""

    def __init__(self, questions: Sequence[str], skeletons: Sequence[str], groups: Sequence[str]):
        if not (len(questions) == len(skeletons) == len(groups)):
            raise ValueError("questions, skeletons and groups must have the same length")
        if not questions:
            raise ValueError("a skeleton index needs at least one training question")
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.questions = list(questions)
        self.skeletons = list(skeletons)
        self.groups = list(groups)
        self._vec = TfidfVectorizer(ngram_range=(1, 3), sublinear_tf=True, token_pattern=r"\S+", lowercase=False)
        self._matrix = self._vec.fit_transform(self.questions)
        self._groups = np.asarray(self.groups, dtype=object)

    def __len__(self) -> int:
        return len(self.questions)

    @classmethod
    def build(cls, records: Iterable[dict[str, Any]], prompt) -> "SkeletonIndex":
        """Index training records whose gold query has a placeholder target under ``prompt``."""
        from t2sql.prompt import placeholder_target

        qs, sk, gr = [], [], []
        for rec in records:
            target = placeholder_target(rec["answer"], rec["question"], rec["context"], prompt)
            if target is None:
                continue
            qs.append(mask_question(rec["question"], rec["context"]))
            sk.append(skeleton(target))
            gr.append(record_group(rec))
        return cls(qs, sk, gr)

    def hints(self, question: str, context: str, k: int, exclude_group: str | None = None) -> list[str]:
        """Up to ``k`` distinct sketches of the nearest training questions, nearest first."""
        return self.hints_many([(question, context)], k, [exclude_group])[0]

    def hints_many(self, pairs: Sequence[tuple[str, str]], k: int,
                   exclude_groups: Sequence[str | None] | None = None, chunk: int = 512) -> list[list[str]]:
        """:meth:`hints` for many (question, context) pairs at once."""
        out: list[list[str]] = []
        for start in range(0, len(pairs), chunk):
            part = pairs[start:start + chunk]
            q = self._vec.transform([mask_question(a, b) for a, b in part])
            sims = (q @ self._matrix.T).toarray()
            for r in range(len(part)):
                ex = exclude_groups[start + r] if exclude_groups is not None else None
                row = sims[r]
                if ex is not None:
                    row = np.where(self._groups == ex, -1.0, row)
                found: list[str] = []
                for j in np.argsort(-row, kind="stable"):
                    if row[j] < 0:
                        break
                    s = self.skeletons[j]
                    if s not in found:
                        found.append(s)
                        if len(found) >= k:
                            break
                out.append(found)
        return out

    def save(self, model_dir: str | os.PathLike[str]) -> Path:
        path = Path(model_dir) / SKELETON_FILE
        path.write_text(json.dumps({"questions": self.questions, "skeletons": self.skeletons, "groups": self.groups}))
        return path

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str]) -> "SkeletonIndex":
        path = Path(model_dir) / SKELETON_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: this model was trained with prompt.skeleton_hints and needs its sketch index beside it")
        try:
            d = json.loads(path.read_text())
            return cls(d["questions"], d["skeletons"], d["groups"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a sketch index ({exc})") from exc


def record_group(rec: dict[str, Any]) -> str:
    """What a training question must not borrow sketches from: its database, else its schema."""
    return str(rec.get("db_id") or rec.get("context", ""))
