"""Execution accuracy on a fixed validation sample while a model trains.

    from t2sql.validation import validation_metrics_fn
    fn = validation_metrics_fn(data["validation"], tokenizer, prompt=cfg.prompt, n=48)
    finetune(base, technique, train_cfg, data, out_dir, prompt=cfg.prompt, val_metrics_fn=fn)

The sample is decoded by the one decoder (:meth:`t2sql.inference.Translator.from_model`: the same
inputs, generation and post-processing as a served model) and scored by the one judge
(:class:`t2sql.evaluation.judge.ExampleScorer`: on the record's SQLite file when it has one, else
on databases generated from its schema).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from t2sql.evaluation.judge import ExampleScorer, ScoringOptions, score_predictions
from t2sql.inference.translator import Translator
from t2sql.io import read_jsonl
from t2sql.prompt import PromptOptions

#: How validation answers are judged: short limits, three generated databases for schema-only records.
VALIDATION_SCORING = ScoringOptions(timeout_s=2.0, row_cap=2000, fuzz_databases=3)


def evenly_spaced(path: str | os.PathLike[str], n: int) -> list[dict[str, Any]]:
    """``n`` records of a JSONL file at evenly spaced positions (all of them when it has fewer)."""
    total = sum(1 for _ in read_jsonl(path))
    if total <= n:
        return list(read_jsonl(path))
    wanted = {int(i * total / n) for i in range(n)}
    return [rec for i, rec in enumerate(read_jsonl(path)) if i in wanted]


def translate_records(model, tokenizer, records: list[dict[str, Any]], prompt: PromptOptions | None = None, *,
                      batch_size: int = 32, max_new_tokens: int = 128, max_source_length: int = 512) -> list[str]:
    """Greedy SQL for each record of a model in memory, in input order, as the served model would write it.

    The model is put in eval mode for decoding and given back in the mode it was in.
    """
    was_training = model.training
    model.eval()
    try:
        translator = Translator.from_model(model, tokenizer, prompt, batch_size=batch_size,
                                           max_new_tokens=max_new_tokens, max_source_length=max_source_length)
        pairs = [(r["question"], r["context"], r.get("db_path")) for r in records]
        return translator.translate(pairs)
    finally:
        if was_training:
            model.train()


def validation_metrics_fn(val_path: str | os.PathLike[str], tokenizer, prompt: PromptOptions | None = None, *,
                          n: int = 48, max_new_tokens: int = 128, max_source_length: int = 512,
                          batch_size: int = 48) -> Callable[[Any], dict[str, float]]:
    """A ``val_metrics_fn`` for :func:`t2sql.training.train_model`: execution accuracy on a fixed sample.

    Args:
        val_path: the validation JSONL.
        tokenizer: the model's tokenizer, or the directory to load it from (the base model's).
        prompt: the prompt options the model is trained with.
        n: validation records decoded at each evaluation, spread evenly over the file (files are
            ordered by database, so the first ``n`` would cover only a few).
        max_new_tokens, max_source_length, batch_size: decoding settings.

    Returns:
        ``fn(model) -> {"val_execution_accuracy", "val_execution_success", "val_decode_s"}``.
    """
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    records = evenly_spaced(val_path, n)
    scorer = ExampleScorer(VALIDATION_SCORING)

    def fn(model) -> dict[str, float]:
        if not records:
            return {}
        t0 = time.perf_counter()
        preds = translate_records(model, tokenizer, records, prompt, batch_size=batch_size,
                                  max_new_tokens=max_new_tokens, max_source_length=max_source_length)
        scores = score_predictions(records, preds, scorer)
        return {"val_execution_accuracy": round(scores["execution_accuracy"], 4),
                "val_execution_success": round(scores["execution_success_rate"], 4),
                "val_decode_s": round(time.perf_counter() - t0, 2)}

    return fn
