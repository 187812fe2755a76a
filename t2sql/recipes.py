"""Validation execution accuracy during training, and one recipe run end to end without Prefect.

    from t2sql.recipes import validation_metrics_fn
    fn = validation_metrics_fn(data["validation"], base["path"], prompt=cfg.prompt, n=48)
    finetune(base, technique, train_cfg, data, out_dir, prompt=cfg.prompt, val_metrics_fn=fn)

The function decodes a small fixed sample of validation records greedily, post-processes the
output exactly as serving does, and runs it: on the record's SQLite file when it has one (result
compared with the gold query's), else on databases generated from the schema
(:func:`t2sql.evaluation.fuzz.fuzz_verdict`). Gold results are computed once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from t2sql.io import read_jsonl
from t2sql.prompt import PromptOptions, build_sources, postprocess, question_context
from t2sql.retrieval import SkeletonIndex

log = logging.getLogger(__name__)


@torch.no_grad()  # not inference_mode: training goes on with the same modules
def greedy_translate(model, tokenizer, records: Sequence[dict[str, Any]], prompt: PromptOptions | None = None,
                     *, batch_size: int = 32, max_new_tokens: int = 128, max_source_length: int = 512,
                     num_beams: int = 1, skeletons=None) -> list[str]:
    """SQL for each record (``question``, ``context``) with ``model.generate``, in input order.

    Inputs are sorted by length and padded per batch; outputs go through :func:`postprocess`
    with ``prompt``, as a served model's do. ``skeletons`` is the sketch index a model trained
    with ``prompt.skeleton_hints`` needs (:mod:`t2sql.retrieval`).
    """
    contexts = [question_context(r["question"], r["context"], r.get("db_path"), prompt) for r in records]
    sources = build_sources([(r["question"], c) for r, c in zip(records, contexts)], prompt, skeletons)
    enc = tokenizer(sources, truncation=True, max_length=max_source_length)["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    device = next(model.parameters()).device
    out: list[str] = [""] * len(records)
    pad = tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, :len(enc[i])] = torch.tensor(enc[i])
            mask[r, :len(enc[i])] = 1
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             num_beams=num_beams, do_sample=False)
        texts = tokenizer.batch_decode(gen, skip_special_tokens=True)
        for r, i in enumerate(idx):
            rec = records[i]
            out[i] = postprocess(texts[r], rec["question"], contexts[i], prompt)
    return out


class ExecutionJudge:
    """Whether a predicted query runs and gives the gold result, for one record at a time.

    Records with an existing ``db_path`` are run there (gold results cached per record id);
    others on ``fuzz_k`` databases generated from their context.
    """

    def __init__(self, timeout_s: float = 2.0, row_cap: int = 2000, fuzz_k: int = 3):
        self.timeout_s = timeout_s
        self.row_cap = row_cap
        self.fuzz_k = fuzz_k
        self._gold: dict[str, Any] = {}

    def judge(self, record: dict[str, Any], pred: str) -> tuple[bool, bool | None]:
        """(ran, correct); correct is None when the gold query itself cannot be checked."""
        from t2sql.evaluation.execution import connect_schema, execute
        from t2sql.evaluation.fuzz import fuzz_verdict
        from t2sql.evaluation.results import order_matters, results_match

        db = record.get("db_path")
        if db and os.path.isfile(db):
            key = f"{record.get('id')}\0{record['answer']}"
            if key not in self._gold:
                self._gold[key] = execute(db, record["answer"], timeout_s=self.timeout_s * 5, row_cap=self.row_cap)
            gold = self._gold[key]
            res = execute(db, pred, timeout_s=self.timeout_s, row_cap=self.row_cap)
            if not gold.ok:
                return res.ok, None
            if not res.ok:
                return False, False
            return True, results_match(gold.rows, res.rows, order_matters=order_matters(record["answer"]))
        verdict = fuzz_verdict(record["context"], record["answer"], pred, k=self.fuzz_k, timeout_s=self.timeout_s,
                               row_cap=self.row_cap)
        if verdict.match is None:
            try:
                conn = connect_schema(record["context"])
            except Exception:  # noqa: BLE001 - an unusable schema: nothing can run
                return False, None
            try:
                return execute(conn, pred, timeout_s=self.timeout_s, row_cap=1).ok, None
            finally:
                conn.close()
        return verdict.pred_error is None, verdict.match


def score_predictions(records: Sequence[dict[str, Any]], preds: Sequence[str],
                      judge: ExecutionJudge | None = None) -> dict[str, float]:
    """Execution accuracy and the share of predictions that run.

    Returns:
        ``{"execution_accuracy", "execution_success_rate", "n"}``; accuracy counts only records
        whose gold query could be checked.
    """
    judge = judge or ExecutionJudge()
    ran = correct = checked = 0
    for rec, pred in zip(records, preds):
        r, c = judge.judge(rec, pred)
        ran += r
        if c is not None:
            checked += 1
            correct += c
    return {"execution_accuracy": correct / checked if checked else 0.0,
            "execution_success_rate": ran / len(records) if records else 0.0, "n": len(records)}


def evenly_spaced(path: str | os.PathLike[str], n: int) -> list[dict[str, Any]]:
    """``n`` records of a JSONL file at evenly spaced positions (all of them when it has fewer)."""
    total = sum(1 for _ in read_jsonl(path))
    if total <= n:
        return list(read_jsonl(path))
    wanted = {int(i * total / n) for i in range(n)}
    return [rec for i, rec in enumerate(read_jsonl(path)) if i in wanted]


def validation_metrics_fn(val_path: str | os.PathLike[str], tokenizer, prompt: PromptOptions | None = None, *,
                          n: int = 48, max_new_tokens: int = 128, max_source_length: int = 512,
                          batch_size: int = 48, skeletons=None) -> Callable[[Any], dict[str, float]]:
    """A ``val_metrics_fn`` for :func:`t2sql.training.train_model`: execution accuracy on a fixed sample.

    Args:
        val_path: the validation JSONL.
        tokenizer: the model's tokenizer, or the directory to load it from (the base model's).
        prompt: the prompt options the model is trained with.
        n: validation records decoded at each evaluation, spread evenly over the file (files are
            ordered by database, so the first ``n`` would cover only a few).
        max_new_tokens, max_source_length, batch_size: decoding settings.
        skeletons: the sketch index, for a prompt with ``skeleton_hints``.

    Returns:
        ``fn(model) -> {"val_execution_accuracy", "val_execution_success", "val_decode_s"}``.
    """
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    records = evenly_spaced(val_path, n)
    judge = ExecutionJudge()

    def fn(model) -> dict[str, float]:
        if not records:
            return {}
        t0 = time.perf_counter()
        preds = greedy_translate(model, tokenizer, records, prompt, batch_size=batch_size,
                                 max_new_tokens=max_new_tokens, max_source_length=max_source_length,
                                 skeletons=skeletons)
        scores = score_predictions(records, preds, judge)
        return {"val_execution_accuracy": round(scores["execution_accuracy"], 4),
                "val_execution_success": round(scores["execution_success_rate"], 4),
                "val_decode_s": round(time.perf_counter() - t0, 2)}

    return fn


def run_recipe(config_path: str | os.PathLike[str], overrides: Sequence[str] = (), *, out_dir: str | os.PathLike[str],
               eval_examples: int | None = None, val_examples: int = 48, progress: bool = False) -> dict[str, Any]:
    """Run a recipe config end to end without Prefect: data, base model, fine-tune, evaluation.

    Uses the same functions the pipeline calls (:func:`t2sql.pipeline.prepare`,
    :func:`t2sql.finetune.prepare_base`, :func:`t2sql.finetune.finetune`), adds the validation
    execution accuracy to the learning curve, and evaluates the trained model on the test split
    with the greedy decoder above (``eval_examples`` records; all when None).

    Returns:
        ``{"config", "data": split sizes, "train": the finetune summary (tokens/s, history, ...),
        "test": {"execution_accuracy", "execution_success_rate", "n"}, "model_dir"}``.
    """
    from t2sql import pipeline
    from t2sql.config import TechniqueSpec, load_config
    from t2sql.finetune import finetune, prepare_base
    from t2sql.modeling import load_model, set_threads

    cfg = load_config(config_path, list(overrides))
    data = pipeline.prepare(cfg)
    base = prepare_base(cfg.model, data["train"], pipeline.work_dir(cfg), pipeline.registry_root(cfg),
                        prompt=cfg.prompt)
    skeletons = SkeletonIndex.build(read_jsonl(data["train"]), cfg.prompt) if cfg.prompt.skeleton_hints else None
    fn = validation_metrics_fn(data["validation"], base["path"] if base["origin"] != "hub" else cfg.model.base_model,
                               cfg.prompt, n=val_examples, max_new_tokens=cfg.eval.max_new_tokens,
                               max_source_length=cfg.train.max_source_length, skeletons=skeletons)
    spec = cfg.techniques[0] if cfg.techniques else TechniqueSpec(name="full")
    train_cfg = pipeline.effective_train(cfg, spec)
    summary = finetune(base, spec, train_cfg, data, Path(out_dir), prompt=cfg.prompt, progress=progress,
                       val_metrics_fn=fn, skeletons=skeletons)
    set_threads(train_cfg.num_threads)
    model, tok = load_model(summary["model_dir"])
    records = []
    for rec in read_jsonl(data["test"]):
        if eval_examples is not None and len(records) >= eval_examples:
            break
        records.append(rec)
    t0 = time.perf_counter()
    preds = greedy_translate(model, tok, records, cfg.prompt, batch_size=cfg.eval.batch_size,
                             max_new_tokens=cfg.eval.max_new_tokens, max_source_length=cfg.train.max_source_length,
                             skeletons=skeletons)
    decode_s = time.perf_counter() - t0
    test = score_predictions(records, preds)
    test["decode_s"] = round(decode_s, 1)
    return {"config": str(config_path), "overrides": list(overrides),
            "data": {s: data["stats"]["splits"][s]["records"] for s in ("train", "validation", "test")},
            "train": summary, "test": test, "model_dir": summary["model_dir"],
            "examples": [{"question": r["question"], "gold": r["answer"], "pred": p} for r, p in
                         list(zip(records, preds))[:10]]}
