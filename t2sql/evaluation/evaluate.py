"""Score predictions (or a model) on a test set, streaming: memory does not grow with its size.

    from t2sql.evaluation import evaluate_model, evaluate_predictions
    metrics = evaluate_model(translator, "work/data/test.jsonl", cfg.eval, "runs/abc/eval")

Examples are read ``batch_size`` at a time, translated, scored and written as one JSON line each to
``out_dir/predictions.jsonl``. Only running totals stay in memory, plus bounded reservoirs of
examples for the report and one float per example for latency quantiles.

Per example: exact match of normalised SQL, Spider's exact-set match and component scores, Spider's
hardness, whether the prediction parses and runs, execution match (test-suite semantics, on every
SQLite file given for the example; on generated databases for schema-only records), an error
category, business query types, model latency and the execution time of prediction and gold.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sacrebleu.metrics import BLEU

from t2sql.evaluation.categories import ERROR_CATEGORIES
from t2sql.evaluation.judge import ExampleScorer, ScoringOptions
from t2sql.evaluation.scenarios import load_scenarios, wilson_interval
from t2sql.evaluation.structure import COMPONENTS, HARDNESS_LEVELS, QUERY_TYPES
from t2sql.io import atomic_open, atomic_write_json, read_jsonl

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
#: Changes when what an evaluation computes changes, so that evaluations cached by their inputs are
#: redone (2: each question reaches the translator with its database).
EVALUATION_VERSION = 2


class _Reservoir:
    """A uniform sample of at most ``size`` items from a stream (Algorithm R), seeded."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.seen, self.items = size, 0, []
        self._rng = random.Random(seed)

    def add(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.size:
                self.items[j] = item


def _sample(line: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "db_id", "question", "gold", "pred", "error_category", "error", "hardness", "scenario")
    return {k: line.get(k) for k in keys if line.get(k) is not None}


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


class RunningTotals:
    """Everything the metrics need, updated one example at a time, in bounded memory."""

    def __init__(self, samples: int = 8, seed: int = 0):
        self.n = 0
        self.counts: Counter = Counter()
        self.bleu = BLEU()  # the settings of sacrebleu.corpus_bleu's defaults
        self.bleu_stats: list[float] | None = None
        self.latencies = array("d")
        self.exec_ms = {"gold": 0.0, "pred": 0.0}
        self.by_hardness: dict[str, Counter] = {}
        self.by_scenario: dict[str, Counter] = {}
        self.scenario_kind: dict[str, str] = {}
        self.components = {level: {c: Counter() for c in COMPONENTS} for level in HARDNESS_LEVELS + ("all",)}
        self.categories: Counter = Counter()
        self.category_examples: dict[str, _Reservoir] = {}
        self.successes = _Reservoir(samples, seed)
        self.failures = _Reservoir(samples * 2, seed + 1)
        self.fingerprint = hashlib.sha256()
        self._seed = seed

    def add_bleu(self, hypotheses: list[str], references: list[str]) -> None:
        """Add a batch to the corpus BLEU statistics (the same sums sacrebleu.corpus_bleu forms)."""
        stats = self.bleu._extract_corpus_statistics(hypotheses, [references])
        # sacrebleu's tokenizers memoise up to 65,536 sentences each in class-level caches; empty
        # them so memory stays flat over large test sets.
        for tok in (self.bleu.tokenizer, getattr(self.bleu.tokenizer, "_post_tokenizer", None)):
            clear = getattr(type(tok).__call__, "cache_clear", None) if tok is not None else None
            if clear is not None:
                clear()
        batch = [sum(col) for col in zip(*stats)]
        self.bleu_stats = batch if self.bleu_stats is None else [a + b for a, b in zip(self.bleu_stats, batch)]

    def add(self, line: dict[str, Any], extra: dict[str, Any]) -> None:
        c = self.counts
        self.n += 1
        self.fingerprint.update(json.dumps([line.get("id"), line.get("question"), line.get("gold")]).encode())
        c["exact"] += line["exact_match"]
        c["exact_set"] += line["exact_set_match"]
        c["parse_ok"] += line["parse_ok"]
        c["correct"] += line["correct"]
        if line["executed"] is not None:
            c["exec_tried"] += 1
            c["executed"] += bool(line["executed"])
        mode = line["eval_mode"]
        c[f"mode_{mode}"] += 1
        if line["execution_match"] is not None:
            c["exec_den"] += 1
            c["exec_num"] += line["execution_match"]
            c[f"exec_den_{mode}"] += 1
            c[f"exec_num_{mode}"] += line["execution_match"]
            if mode == "fuzz":
                c["fuzz_disagree"] += line["execution_match"] != line["exact_match"]
                c["fuzz_disagree_set"] += line["execution_match"] != line["exact_set_match"]
                c["fuzz_correct_not_exact"] += line["execution_match"] and not line["exact_match"]
                c["fuzz_exact_not_correct"] += line["exact_match"] and not line["execution_match"]
                c["fuzz_dbs"] += line.get("fuzz_databases") or 0
                c["fuzz_dbs_nonempty"] += line.get("fuzz_gold_nonempty") or 0
        if line.get("gold_informative") and line["execution_match"] is not None:
            c["informative_den"] += 1
            c["informative_num"] += line["execution_match"]
        if line.get("gold_error"):
            c["gold_errors"] += 1
        if line["latency_ms"] is not None:
            self.latencies.append(float(line["latency_ms"]))
        if line["slow_query"] is not None:
            c["timed"] += 1
            c["slow"] += line["slow_query"]
            self.exec_ms["gold"] += line["gold_exec_ms"]
            self.exec_ms["pred"] += line["pred_exec_ms"]
        if line.get("expert_category"):
            c["expert_n"] += 1
            c["expert_agree"] += line["expert_category"] == line["error_category"]

        level = line["hardness"]
        h = self.by_hardness.setdefault(level, Counter())
        h["n"] += 1
        h["exact_set"] += line["exact_set_match"]
        h["correct"] += line["correct"]
        if line["execution_match"] is not None:
            h["exec_den"] += 1
            h["exec_num"] += line["execution_match"]
        keys = [(t, "query_type") for t in line["query_types"]]
        if line.get("scenario"):
            name = line["scenario"]
            keys.append((f"scenario:{name}" if name in QUERY_TYPES else name, "scenario"))
        for key, kind in keys:
            s = self.by_scenario.setdefault(key, Counter())
            self.scenario_kind[key] = kind
            s["n"] += 1
            s["correct"] += line["correct"]
            s["exact_set"] += line["exact_set_match"]

        components = extra.get("components")
        if components:
            for lvl in (level, "all"):
                if lvl not in self.components:
                    continue
                for name, score in components.items():
                    acc = self.components[lvl][name]
                    if score["pred_total"] > 0:
                        acc["acc"] += score["acc"]
                        acc["acc_n"] += 1
                    if score["label_total"] > 0:
                        acc["rec"] += score["rec"]
                        acc["rec_n"] += 1

        cat = line["error_category"]
        self.categories[cat] += 1
        if cat not in self.category_examples:
            self.category_examples[cat] = _Reservoir(3, self._seed + len(self.category_examples) + 7)
        self.category_examples[cat].add(_sample(line))
        (self.successes if line["correct"] else self.failures).add(_sample(line))

    def component_table(self, level: str = "all") -> dict[str, dict[str, float | None]]:
        """Spider's partial-matching accuracy, recall and F1 per component.

        Accuracy averages over examples whose prediction has the component, recall over those whose
        gold has it, as in Spider. Unlike Spider (which reports F1 = 1 when both are 0), F1 is 0 then,
        and None when the component never occurs.
        """
        out = {}
        for name, acc in self.components[level].items():
            a = acc["acc"] / acc["acc_n"] if acc["acc_n"] else None
            r = acc["rec"] / acc["rec_n"] if acc["rec_n"] else None
            if a is None and r is None:
                f1 = None
            else:
                a0, r0 = a or 0.0, r or 0.0
                f1 = 2 * a0 * r0 / (a0 + r0) if a0 + r0 > 0 else 0.0
            out[name] = {"acc": a, "rec": r, "f1": f1}
        return out

    def metrics(self) -> dict[str, Any]:
        c, n = self.counts, self.n
        lat = np.frombuffer(self.latencies, dtype=np.float64) if len(self.latencies) else None
        m: dict[str, Any] = {
            "n_examples": n,
            "exact_match": _rate(c["exact"], n),
            "exact_set_match": _rate(c["exact_set"], n),
            "bleu": float(self.bleu._compute_score_from_stats(self.bleu_stats).score) if self.bleu_stats else None,
            "execution_accuracy": _rate(c["exec_num"], c["exec_den"]),
            "execution_accuracy_database": _rate(c["exec_num_database"], c["exec_den_database"]),
            "execution_accuracy_fuzz": _rate(c["exec_num_fuzz"], c["exec_den_fuzz"]),
            "execution_accuracy_informative": _rate(c["informative_num"], c["informative_den"]),
            "n_informative": c["informative_den"],
            "accuracy": _rate(c["correct"], n),
            "parse_rate": _rate(c["parse_ok"], n),
            "execution_success_rate": _rate(c["executed"], c["exec_tried"]),
            "n_with_database": c["mode_database"],
            "n_schema_only": c["mode_fuzz"] + c["mode_none"],
            "n_execution_verdicts": c["exec_den"],
            "n_gold_errors": c["gold_errors"],
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat is not None else None,
            "latency_ms_p95": float(np.percentile(lat, 95)) if lat is not None else None,
            "latency_ms_mean": float(lat.mean()) if lat is not None else None,
            "slow_query_share": _rate(c["slow"], c["timed"]),
            "n_timed_queries": c["timed"],
            "gold_exec_ms_mean": self.exec_ms["gold"] / c["timed"] if c["timed"] else None,
            "pred_exec_ms_mean": self.exec_ms["pred"] / c["timed"] if c["timed"] else None,
            "test_fingerprint": self.fingerprint.hexdigest()[:16],
        }
        if lat is not None:
            counts, edges = np.histogram(lat, bins=min(30, max(5, len(lat) // 5)))
            m["latency_histogram"] = {"edges": [float(e) for e in edges], "counts": [int(x) for x in counts]}
        if c["exec_den_fuzz"]:
            m["fuzz_disagreement"] = c["fuzz_disagree"] / c["exec_den_fuzz"]
            m["fuzz_disagreement_exact_set"] = c["fuzz_disagree_set"] / c["exec_den_fuzz"]
            m["fuzz"] = {"n": c["exec_den_fuzz"], "correct_but_not_exact_match": c["fuzz_correct_not_exact"],
                         "exact_match_but_wrong": c["fuzz_exact_not_correct"],
                         "gold_nonempty_share": _rate(c["fuzz_dbs_nonempty"], c["fuzz_dbs"])}
        levels = [lv for lv in HARDNESS_LEVELS if lv in self.by_hardness] + \
            [lv for lv in self.by_hardness if lv not in HARDNESS_LEVELS]
        m["by_hardness"] = {lv: {"n": self.by_hardness[lv]["n"],
                                 "exact_set_match": _rate(self.by_hardness[lv]["exact_set"], self.by_hardness[lv]["n"]),
                                 "execution_accuracy": _rate(self.by_hardness[lv]["exec_num"],
                                                             self.by_hardness[lv]["exec_den"]),
                                 "accuracy": _rate(self.by_hardness[lv]["correct"], self.by_hardness[lv]["n"])}
                            for lv in levels}
        m["by_scenario"] = {}
        for key, s in self.by_scenario.items():
            low, high = wilson_interval(s["correct"], s["n"])
            m["by_scenario"][key] = {"kind": self.scenario_kind[key], "n": s["n"], "correct": s["correct"],
                                     "accuracy": _rate(s["correct"], s["n"]), "ci_low": low, "ci_high": high,
                                     "exact_set_match": _rate(s["exact_set"], s["n"])}
        m["by_component"] = self.component_table("all")
        m["by_component_hardness"] = {lv: self.component_table(lv) for lv in HARDNESS_LEVELS
                                      if lv in self.by_hardness}
        m["error_categories"] = {
            cat: {"label": ERROR_CATEGORIES.get(cat, cat), "count": self.categories[cat],
                  "share": self.categories[cat] / n, "examples": self.category_examples[cat].items}
            for cat in sorted(self.categories, key=lambda k: (-self.categories[k], k))}
        if c["expert_n"]:
            m["expert_category_agreement"] = c["expert_agree"] / c["expert_n"]
        m["samples"] = {"successes": self.successes.items, "failures": self.failures.items}
        return m


def _as_prediction(item: Any, index: int) -> tuple[str, float | None]:
    if item is None or isinstance(item, str):
        return item or "", None
    if isinstance(item, dict):
        for key in ("sql", "pred", "prediction"):
            if key in item:
                latency = item.get("latency_ms")
                return str(item[key] or ""), float(latency) if latency is not None else None
    raise ValueError(f"prediction {index}: expected SQL text or a dict with 'sql', got {type(item).__name__}")


_Predict = Callable[[list[dict[str, Any]]], list[tuple[str, float | None]]]


def _stream(records: Iterable[dict[str, Any]], predict: _Predict,
            options: ScoringOptions, out_dir: str | os.PathLike[str], batch_size: int, max_examples: int | None,
            scorer: ExampleScorer | None = None, after: Callable[[], None] | None = None) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scorer = scorer or ExampleScorer(options)
    totals = RunningTotals(samples=options.samples, seed=options.fuzz_seed)
    it = iter(records)
    started = time.perf_counter()
    pred_path = out / PREDICTIONS_FILE
    try:
        with atomic_open(pred_path) as fh:
            while max_examples is None or totals.n < max_examples:
                want = batch_size if max_examples is None else min(batch_size, max_examples - totals.n)
                batch = []
                for record in it:
                    if not isinstance(record, dict):
                        raise ValueError(f"record {totals.n + len(batch)}: expected a dict, "
                                         f"got {type(record).__name__}")
                    batch.append(record)
                    if len(batch) >= want:
                        break
                if not batch:
                    break
                preds = predict(batch)
                if len(preds) != len(batch):
                    raise ValueError(f"got {len(preds)} predictions for a batch of {len(batch)} records")
                totals.add_bleu([p for p, _ in preds], [str(r.get("answer") or "") for r in batch])
                for record, (sql, latency) in zip(batch, preds):
                    line, extra = scorer.score(record, sql, latency)
                    totals.add(line, extra)
                    fh.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
                del batch, preds
            if after is not None and (max_examples is None or totals.n < max_examples):
                after()
    finally:
        scorer.close()
    metrics = totals.metrics()
    metrics["eval_seconds"] = time.perf_counter() - started
    metrics["predictions_path"] = str(pred_path)
    metrics["options"] = {"batch_size": batch_size, "max_examples": max_examples, **vars(options)}
    atomic_write_json(out / METRICS_FILE, metrics)
    return metrics


def evaluate_predictions(records_iter: Iterable[dict[str, Any]], predictions_iter: Iterable[Any], eval_cfg: Any,
                         out_dir: str | os.PathLike[str], *, scorer: ExampleScorer | None = None) -> dict[str, Any]:
    """Score given predictions against records, streaming in batches.

    Args:
        records_iter: data records (read lazily, ``eval_cfg.batch_size`` at a time).
        predictions_iter: one per record, in order: SQL text, or a dict with ``sql`` (and optionally
            ``latency_ms``).
        eval_cfg: an ``EvalConfig`` (batch_size, query_timeout_s, row_cap, max_examples; optional
            keep_distinct, fuzz_databases); None for the defaults.
        out_dir: where predictions.jsonl (one line per example) and metrics.json are written.
        scorer: a custom :class:`ExampleScorer` (e.g. with Spider's schemas); default: one from eval_cfg.

    Returns:
        The metrics dict (see :meth:`RunningTotals.metrics`), with ``predictions_path``.

    Raises:
        ValueError: there are fewer or more predictions than records (unless max_examples stops first),
            or an item has the wrong type.
    """
    options = scorer.options if scorer is not None else ScoringOptions.from_config(eval_cfg)
    batch_size = int(getattr(eval_cfg, "batch_size", 32) or 32)
    max_examples = getattr(eval_cfg, "max_examples", None)
    preds = iter(predictions_iter)
    consumed = [0]
    end = object()

    def predict(batch: list[dict[str, Any]]) -> list[tuple[str, float | None]]:
        out = []
        for _ in batch:
            item = next(preds, end)
            if item is end:
                raise ValueError(f"predictions ended after {consumed[0]} items but there are more records")
            out.append(_as_prediction(item, consumed[0]))
            consumed[0] += 1
        return out

    def check_rest() -> None:
        if next(preds, end) is not end:
            raise ValueError(f"more predictions than records ({consumed[0]} records)")

    return _stream(records_iter, predict, options, out_dir, batch_size, max_examples, scorer, check_rest)


def iter_test_records(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> Iterator[dict[str, Any]]:
    """Records from JSONL test files and YAML scenario files, streamed in order.

    Raises:
        FileNotFoundError: a path does not exist.
        t2sql.evaluation.scenarios.ScenarioError: a scenario file is malformed.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"test file not found: {p}")
        if p.suffix.lower() in (".yaml", ".yml"):
            yield from load_scenarios(p)
        else:
            yield from read_jsonl(p)


def evaluate_model(translator: Any, test_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                   eval_cfg: Any, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Translate a test set with a model and score it, streaming in batches.

    Args:
        translator: anything with ``translate([(question, context, db_path), ...]) -> [sql]`` (a
            :class:`t2sql.inference.Translator`; ``db_path`` is None for schema-only records).
        test_path: a test JSONL file, a YAML scenario file, or a list of them.
        eval_cfg: an ``EvalConfig``; see :func:`evaluate_predictions`.
        out_dir: where predictions.jsonl and metrics.json are written.

    Returns:
        The metrics dict. Latency per question is the batch's translation time divided by its size.

    Raises:
        FileNotFoundError: a test file does not exist.
        ValueError: the translator returned a different number of queries than it was given.
    """
    options = ScoringOptions.from_config(eval_cfg)
    batch_size = int(getattr(eval_cfg, "batch_size", 32) or 32)
    max_examples = getattr(eval_cfg, "max_examples", None)

    def predict(batch: list[dict[str, Any]]) -> list[tuple[str, float | None]]:
        t0 = time.perf_counter()
        # Each question's database goes with it: a prompt that reads stored values (the linked
        # format's question_values) writes them as in training, and execution-guided decoding tries
        # candidates there.
        pairs = [(str(r.get("question") or ""), str(r.get("context") or ""), r.get("db_path")) for r in batch]
        sqls = translator.translate(pairs)
        per_question = (time.perf_counter() - t0) * 1000.0 / len(batch)
        if len(sqls) != len(batch):
            raise ValueError(f"translator returned {len(sqls)} queries for {len(batch)} questions")
        return [(s if isinstance(s, str) else (s[0] if s else ""), per_question) for s in sqls]

    metrics = _stream(iter_test_records(test_path), predict, options, out_dir, batch_size, max_examples)
    metrics["latency_basis"] = f"batch time / batch size (batch_size={batch_size})"
    atomic_write_json(Path(out_dir) / METRICS_FILE, metrics)
    return metrics
