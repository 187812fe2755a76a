"""Score a predictions file on a Spider split, like Spider's official evaluator (and its test suite).

    t2sql score --predictions pred.sql --spider data/spider_sample --split train --out results.json

``pred.sql`` holds one predicted query per line, in the order of the split's questions (a trailing
``<TAB>db_id`` is ignored). The directory has Spider's layout: ``tables.json``, the split file and
``database/<db_id>/<db_id>.sqlite``. Execution accuracy follows the test-suite evaluation: a
prediction must give the gold result on every ``.sqlite`` file in ``database/<db_id>/`` (one file in
plain Spider, many with the test-suite databases).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from t2sql.evaluation.evaluate import PREDICTIONS_FILE, evaluate_predictions
from t2sql.evaluation.judge import ExampleScorer, ScoringOptions
from t2sql.evaluation.schema import DbSchema, schema_from_sqlite, schema_from_tables_json
from t2sql.evaluation.structure import COMPONENTS, HARDNESS_LEVELS
from t2sql.io import atomic_open

SPLIT_FILES = {"dev": "dev.json", "train": "train_spider.json", "test": "test.json"}


class _Cfg:
    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.max_examples = None


def _split_path(spider_dir: Path, split: str) -> Path:
    name = SPLIT_FILES.get(split, split)
    path = Path(name) if os.path.isabs(name) else spider_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"split {split!r}: {path} not found (use dev, train, or a file name in {spider_dir})")
    return path


def _read_predictions(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.split("\t")[0].strip() for line in lines]


def score_spider(predictions_path: str | os.PathLike[str], spider_dir: str | os.PathLike[str], split: str = "dev",
                 out_path: str | os.PathLike[str] | None = None, timeout_s: float = 30.0, row_cap: int = 100000,
                 keep_distinct: bool = False, batch_size: int = 64, database_url: str | None = None,
                 password: str | None = None) -> dict[str, Any]:
    """Exact-set match and execution accuracy of a predictions file on a Spider split.

    Args:
        predictions_path: one predicted SQL per line, in the order of the split's questions.
        spider_dir: a directory in Spider's layout.
        split: ``dev`` (dev.json), ``train`` (train_spider.json), or a file name in ``spider_dir``.
        out_path: when given, a JSON list with one entry per question is written there: ``index``,
            ``db_id``, ``question``, ``gold``, ``pred``, ``hardness``, ``exact_match`` (Spider's
            exact-set match, as its evaluator reports it), ``normalized_match`` (identical SQL after
            normalisation), ``execution_match`` (None when the gold query failed), ``error_category``
            and ``error``.
        timeout_s, row_cap: limits per query.
        keep_distinct: compare results with DISTINCT kept (the test-suite removes it by default).
        batch_size: questions scored per batch.
        database_url: run the SQL on this server instead of the SQLite files (``{db_id}`` filled per
            question; see :class:`t2sql.evaluation.judge.ScoringOptions`).
        password: the server account's password.

    Returns:
        ``{"split", "n", "exact_match", "execution_accuracy", "by_hardness": {level: {"count",
        "exact_match", "execution_accuracy"}}, "partial": {level: {component: {"acc", "rec", "f1"}}},
        "error_categories", "metrics" (everything evaluate_predictions computes), "out_path"}``.

    Raises:
        FileNotFoundError: the split, tables.json or the predictions file is missing.
        ValueError: the number of predictions differs from the number of questions.
    """
    spider = Path(spider_dir)
    questions = json.loads(_split_path(spider, split).read_text(encoding="utf-8"))
    predictions = _read_predictions(Path(predictions_path))
    if len(predictions) != len(questions):
        raise ValueError(f"{predictions_path}: {len(predictions)} predictions for {len(questions)} questions in "
                         f"split {split!r}: one query per line, in the split's order")
    tables_path = spider / "tables.json"
    if not tables_path.is_file():
        raise FileNotFoundError(f"{tables_path} not found: {spider} is not in Spider's layout")
    schemas: dict[str, DbSchema] = {e["db_id"]: schema_from_tables_json(e)
                                    for e in json.loads(tables_path.read_text(encoding="utf-8"))}

    def db_dir(db_id: str) -> Path:
        return spider / "database" / db_id

    def records() -> Iterator[dict[str, Any]]:
        for i, q in enumerate(questions):
            db_id = q["db_id"]
            yield {"id": str(i), "question": q.get("question", ""), "answer": q["query"], "db_id": db_id,
                   "db_path": str(db_dir(db_id) / f"{db_id}.sqlite"), "source": "spider", "context": ""}

    def schema_for(record: dict[str, Any]) -> DbSchema | None:
        if record["db_id"] in schemas:
            return schemas[record["db_id"]]
        return schema_from_sqlite(record["db_path"]) if os.path.isfile(record["db_path"]) else None

    def db_paths_for(record: dict[str, Any]) -> list[str]:
        d = db_dir(record["db_id"])
        main = d / f"{record['db_id']}.sqlite"
        others = sorted(str(p) for p in d.glob("*.sqlite") if p != main) if d.is_dir() else []
        return ([str(main)] if main.is_file() else []) + others

    options = ScoringOptions(timeout_s=timeout_s, row_cap=row_cap, keep_distinct=keep_distinct, fuzz_databases=0,
                             database_url=database_url, database_password=password)
    scorer = ExampleScorer(options, schema_for=schema_for, db_paths_for=db_paths_for)
    with tempfile.TemporaryDirectory(prefix="t2sql-score-") as tmp:
        metrics = evaluate_predictions(records(), iter(predictions), _Cfg(batch_size), tmp, scorer=scorer)
        if out_path is not None:
            _write_results(Path(tmp) / PREDICTIONS_FILE, Path(out_path))
    metrics.pop("predictions_path", None)
    by_hardness = {}
    for level in HARDNESS_LEVELS:
        h = metrics["by_hardness"].get(level, {"n": 0, "exact_set_match": None, "execution_accuracy": None})
        by_hardness[level] = {"count": h["n"], "exact_match": h["exact_set_match"],
                              "execution_accuracy": h["execution_accuracy"]}
    partial = {level: metrics["by_component_hardness"].get(level, {}) for level in HARDNESS_LEVELS}
    partial["all"] = metrics["by_component"]
    return {
        "split": split,
        "n": metrics["n_examples"],
        "exact_match": metrics["exact_set_match"],
        "execution_accuracy": metrics["execution_accuracy"],
        "by_hardness": by_hardness,
        "partial": partial,
        "error_categories": {k: v["count"] for k, v in metrics["error_categories"].items()},
        "metrics": metrics,
        "out_path": str(out_path) if out_path is not None else None,
    }


def _write_results(lines_path: Path, out_path: Path) -> None:
    keys = ("db_id", "question", "gold", "pred", "hardness")
    with open(lines_path, encoding="utf-8") as src, atomic_open(out_path) as dst:
        dst.write("[\n")
        for i, raw in enumerate(src):
            line = json.loads(raw)
            entry = {"index": i, **{k: line.get(k) for k in keys}, "exact_match": line["exact_set_match"],
                     "normalized_match": line["exact_match"], "execution_match": line["execution_match"],
                     "error_category": line["error_category"], "error": line.get("error")}
            dst.write((",\n" if i else "") + json.dumps(entry, ensure_ascii=False))
        dst.write("\n]\n")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_score_table(result: dict[str, Any]) -> str:
    """The scores of :func:`score_spider` as a text table in the layout of Spider's evaluator."""
    levels = list(HARDNESS_LEVELS) + ["all"]
    by = dict(result["by_hardness"])
    by["all"] = {"count": result["n"], "exact_match": result["exact_match"],
                 "execution_accuracy": result["execution_accuracy"]}

    def row(name: str, values: list[str]) -> str:
        return f"{name:<20} " + " ".join(f"{v:<20}" for v in values)

    lines = [row("", levels), row("count", [str(by[lv]["count"]) for lv in levels])]
    lines.append("=====================   EXECUTION ACCURACY     =====================")
    lines.append(row("execution", [_fmt(by[lv]["execution_accuracy"]) for lv in levels]))
    lines.append("")
    lines.append("====================== EXACT MATCHING ACCURACY =====================")
    lines.append(row("exact match", [_fmt(by[lv]["exact_match"]) for lv in levels]))
    partial = result.get("partial") or {}
    if partial:
        for title, key in (("PARTIAL MATCHING ACCURACY", "acc"), ("PARTIAL MATCHING RECALL", "rec"),
                           ("PARTIAL MATCHING F1", "f1")):
            lines.append("")
            lines.append(f"---------------------- {title} ----------------------")
            for comp in COMPONENTS:
                lines.append(row(comp, [_fmt((partial.get(lv) or {}).get(comp, {}).get(key)) for lv in levels]))
    cats = result.get("error_categories") or {}
    if cats:
        lines.append("")
        lines.append("---------------------- ERROR CATEGORIES ----------------------")
        for cat, count in cats.items():
            lines.append(f"{cat:<20} {count}")
    return "\n".join(lines)
