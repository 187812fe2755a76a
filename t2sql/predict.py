"""Write one predicted SQL query per line for a Spider split or a file of question/context records.

    t2sql predict --model champion --spider DIR --split dev --out pred.sql
    t2sql predict --model champion --data questions.jsonl --out pred.sql

The Spider form reads ``tables.json`` and the split's questions from a directory in Spider's layout,
writes each database's schema the way the training data does (:mod:`t2sql.data.schema`) and gives
the model its SQLite file, so execution-guided decoding can check candidates there. Lines follow
the order of the questions; ``t2sql score`` reads them back. Questions are read and written
``chunk`` at a time, so memory does not grow with the split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from t2sql.io import atomic_open, read_jsonl

SPIDER_SPLIT_FILES = {"dev": "dev.json", "train": "train_spider.json", "test": "test.json"}


def spider_split_path(spider_dir: str | os.PathLike[str], split: str) -> Path:
    """The question file of ``split`` (``dev``, ``train``, ``test`` or a file name) in a Spider directory.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    root = Path(spider_dir)
    name = SPIDER_SPLIT_FILES.get(split, split)
    path = Path(name) if os.path.isabs(name) else root / name
    if not path.is_file():
        raise FileNotFoundError(f"split {split!r}: {path} not found (use dev, train, test, or a file name in {root})")
    return path


def spider_records(spider_dir: str | os.PathLike[str], split: str = "dev", *, with_types: bool = True,
                   sample_values: int = 0) -> Iterator[dict[str, Any]]:
    """Records (question, context, db_id, db_path, answer when the split has it) of a Spider split.

    Args:
        spider_dir: a directory with ``tables.json``, the split file and ``database/<db_id>/<db_id>.sqlite``.
        split: ``dev``, ``train``, ``test`` or a file name inside the directory.
        with_types, sample_values: how contexts are written (as ``data.with_types`` and
            ``data.sample_values`` of the training config).

    Raises:
        FileNotFoundError: tables.json or the split file is missing.
        ValueError: a question names a db_id that tables.json lacks (the message names the row).
    """
    from t2sql.data.schema import read_sample_values, spider_create_tables

    root = Path(spider_dir)
    tables_path = root / "tables.json"
    if not tables_path.is_file():
        raise FileNotFoundError(f"{tables_path} not found: {root} is not in Spider's layout")
    schemas = {e["db_id"]: e for e in json.loads(tables_path.read_text(encoding="utf-8"))}
    questions = json.loads(spider_split_path(root, split).read_text(encoding="utf-8"))
    contexts: dict[str, tuple[str, str | None]] = {}
    for i, q in enumerate(questions):
        db = q.get("db_id")
        if db not in schemas:
            raise ValueError(f"{split} question {i}: db_id {db!r} is not in {tables_path}")
        if db not in contexts:
            sqlite = root / "database" / db / f"{db}.sqlite"
            db_path = str(sqlite.resolve()) if sqlite.is_file() else None
            samples = None
            if sample_values > 0 and db_path is not None:
                entry = schemas[db]
                tabs = entry.get("table_names_original", [])
                cols = [(tabs[t], c) for t, c in entry.get("column_names_original", []) if 0 <= t < len(tabs)]
                samples = read_sample_values(db_path, cols, sample_values)
            contexts[db] = (spider_create_tables(schemas[db], with_types=with_types, samples=samples), db_path)
        context, db_path = contexts[db]
        yield {"id": str(i), "question": q.get("question", ""), "context": context, "db_id": db, "db_path": db_path,
               "answer": q.get("query", ""), "source": "spider"}


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _one_line(sql: str) -> str:
    return " ".join(str(sql).split())


def predict_to_file(translator, records: Iterable[dict[str, Any]], out_path: str | os.PathLike[str],
                    chunk: int = 256) -> int:
    """Translate records ``chunk`` at a time and write one SQL per line (atomically).

    Returns:
        The number of lines written.
    """
    n = 0
    with atomic_open(out_path) as fh:
        for batch in _chunks(records, chunk):
            pairs = [(r["question"], r["context"], r.get("db_path")) for r in batch]
            sqls = translator.translate(pairs)
            for sql in sqls:
                fh.write(_one_line(sql if isinstance(sql, str) else (sql[0] if sql else "")) + "\n")
            n += len(batch)
    return n


def predict_spider(model_ref: str, spider_dir: str | os.PathLike[str], split: str, out_path: str | os.PathLike[str],
                   registry_root: str | os.PathLike[str] = "runs", *, sample_values: int = 0, with_types: bool = True,
                   chunk: int = 256, **translator_kwargs) -> int:
    """Predict SQL for every question of a Spider split, one line each, in question order.

    Args:
        model_ref: ``champion``, ``run:<id>``, a run id, or a model directory.
        spider_dir: a directory in Spider's layout.
        split: ``dev``, ``train``, ``test`` or a file name inside ``spider_dir``.
        out_path: the predictions file (written atomically).
        registry_root: where run references are looked up.
        sample_values, with_types: context format (as the training config's ``data`` section).
        chunk: questions read, translated and written at a time.
        **translator_kwargs: passed to :class:`t2sql.inference.Translator` (``backend``,
            ``num_beams``, ``batch_size``, ``execution_guided``, ...).

    Returns:
        The number of predictions written.

    Raises:
        FileNotFoundError: the directory lacks tables.json or the split file.
        t2sql.registry.RegistryError: ``model_ref`` matches nothing.
    """
    from t2sql.inference import Translator

    translator = Translator.load(model_ref, registry_root, **translator_kwargs)
    records = spider_records(spider_dir, split, with_types=with_types, sample_values=sample_values)
    return predict_to_file(translator, records, out_path, chunk)


def predict_records(model_ref: str, data_path: str | os.PathLike[str], out_path: str | os.PathLike[str],
                    registry_root: str | os.PathLike[str] = "runs", *, chunk: int = 256, **translator_kwargs) -> int:
    """Predict SQL for every record of a JSON-lines file (``question``, ``context``, optional ``db_path``).

    Args:
        model_ref: ``champion``, ``run:<id>``, a run id, or a model directory.
        data_path: the JSONL file.
        out_path: the predictions file, one SQL per line in record order (written atomically).
        registry_root: where run references are looked up.
        chunk: records read, translated and written at a time.
        **translator_kwargs: passed to :class:`t2sql.inference.Translator`.

    Returns:
        The number of predictions written.

    Raises:
        FileNotFoundError: ``data_path`` does not exist.
        ValueError: a record lacks ``question`` or ``context`` (the message names its line).
    """
    from t2sql.inference import Translator

    path = Path(data_path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")

    def records() -> Iterator[dict[str, Any]]:
        for i, rec in enumerate(read_jsonl(path)):
            for key in ("question", "context"):
                if not isinstance(rec.get(key), str):
                    raise ValueError(f"{path}: record {i + 1} has no {key!r} string")
            yield rec

    first = next(records(), None)  # fail on a malformed first record before loading the model
    if first is None:
        with atomic_open(out_path):
            pass
        return 0
    translator = Translator.load(model_ref, registry_root, **translator_kwargs)
    return predict_to_file(translator, records(), out_path, chunk)
