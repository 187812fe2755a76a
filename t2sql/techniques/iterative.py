"""Iterative refinement: train in rounds, each round weighting up the examples still answered wrong.

    techniques:
      - name: iterative
        params: {max_rounds: 3, upweight: 2.0, inner: lora, inner_params: {r: 8}}

Round 1 trains as the ``inner`` technique would. After each round the model answers the training
questions, decoded as the served model would, and each answer is judged by the rule that scores the
test set (:class:`t2sql.evaluation.judge.ExampleScorer`: the gold result on the record's database,
else on databases generated from its schema, else Spider's exact-set match). Wrong examples get their loss weight multiplied by ``upweight``
(weights are then rescaled to average 1) and the next round continues from the current weights.
Rounds stop when the validation score (execution accuracy, then validation loss) stops improving or
after ``max_rounds``; the model is left holding the best round's weights.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from t2sql.evaluation.judge import ExampleScorer, ScoringOptions
from t2sql.io import atomic_write_json, read_jsonl
from t2sql.prompt import PromptOptions
from t2sql.summary import ReportSection, ReportTable
from t2sql.validation import translate_records

log = logging.getLogger(__name__)

ROUNDS_FILE = "rounds.json"


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_rounds: int = Field(default=3, ge=1, description="Training rounds at most.")
    upweight: float = Field(default=2.0, gt=1, description="Factor on the loss weight of a wrongly answered example.")
    max_weight: float = Field(default=8.0, gt=1, description="Cap of an example's weight before rescaling.")
    inner: str = Field(default="full", description="Technique trained in every round.")
    inner_params: dict[str, Any] = Field(default_factory=dict, description="Settings of the inner technique.")
    round_epochs: float | None = Field(default=None, gt=0, description="Epochs of rounds after the first (default: train.epochs).")
    score_max_examples: int | None = Field(default=2000, ge=1, description="Training examples answered per round (a fixed random subset).")
    val_max_examples: int | None = Field(default=200, ge=1, description="Validation examples answered per round.")
    batch_size: int = Field(default=32, ge=1, description="Questions per generate call.")
    max_new_tokens: int = Field(default=128, ge=1)
    query_timeout_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _inner_known(self) -> "Config":
        from t2sql.techniques import get_technique

        if self.inner == "iterative":
            raise ValueError("inner: iterative cannot nest itself")
        get_technique(self.inner).Config.model_validate(self.inner_params)
        return self


def _inner(config: Config):
    from t2sql.techniques import get_technique

    module = get_technique(config.inner)
    return module, module.Config.model_validate(config.inner_params)


def prepare(model, config: Config, train=None):
    """Prepare the model as the inner technique does."""
    module, cfg = _inner(config)
    return module.prepare(model, cfg, train)


def export(model, config: Config, out_dir: Path, tokenizer) -> None:
    """Export the model as the inner technique does."""
    module, cfg = _inner(config)
    module.export(model, cfg, out_dir, tokenizer)


def summary(model) -> dict[str, Any]:
    """The rounds run: validation score and how many training answers were wrong in each."""
    return {"rounds": getattr(model, "t2sql_rounds", [])}


def report_sections(facts: dict[str, Any]) -> list[ReportSection]:
    """One row per refinement round, for the run report."""
    rounds = facts.get("rounds") or []
    if not rounds:
        return []
    cols = ["round", "val_execution_accuracy", "val_loss", "steps", "train_scored", "train_wrong", "improved"]
    table = ReportTable(columns=cols, rows=[[r.get(c) for c in cols] for r in rounds],
                        fractions=["val_execution_accuracy"])
    return [ReportSection(title="Iterative refinement rounds", source="technique:iterative", tables=[table])]


# --------------------------------------------------------------------------------------------
# Scoring answers: the served decoder and the test set's judge
# --------------------------------------------------------------------------------------------
def score(model, tokenizer, records: list[dict[str, Any]], config: Config, max_source_length: int = 512,
          scorer: ExampleScorer | None = None, prompt: PromptOptions | None = None) -> dict[str, bool]:
    """Record id -> whether the model answers it correctly, by the judge that scores the test set.

    Answers are decoded greedily in the model's prompt format, as served
    (:func:`t2sql.validation.translate_records`), and judged by
    :class:`t2sql.evaluation.judge.ExampleScorer`: the same result on the record's database, else on
    databases generated from its schema, else Spider's exact-set match.
    """
    preds = translate_records(model, tokenizer, records, prompt, batch_size=config.batch_size,
                              max_new_tokens=config.max_new_tokens, max_source_length=max_source_length)
    own = scorer is None
    scorer = scorer or ExampleScorer(ScoringOptions(timeout_s=config.query_timeout_s))
    try:
        return {str(r["id"]): bool(scorer.score(r, p)[0]["correct"]) for r, p in zip(records, preds)}
    finally:
        if own:
            scorer.close()


def update_weights(weights: dict[str, float], correct: dict[str, bool], upweight: float,
                   max_weight: float) -> dict[str, float]:
    """Multiply the weight of every wrong example by ``upweight`` (capped), then rescale to mean 1.

    Args:
        weights: current weight per record id (every training id).
        correct: record id -> answered correctly, for the ids that were scored.
        upweight: factor for wrong answers.
        max_weight: cap before rescaling.

    Returns:
        New weights for the same ids, averaging 1.
    """
    new = {k: min(w * upweight, max_weight) if correct.get(k) is False else w for k, w in weights.items()}
    mean = sum(new.values()) / max(len(new), 1)
    return {k: w / mean for k, w in new.items()}


def _sample(records: list[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    if limit is None or len(records) <= limit:
        return records
    return random.Random(seed).sample(records, limit)


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _restore(model, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


_HOOKS = ("regularization", "checkpoint_ready", "dump_state", "load_state", "summary")


def _round_technique(inner, first_round: bool, seen: dict[str, int]):
    """The inner technique as the training loop sees it in one round.

    A technique's schedule (BitNet's ramp, AdaLoRA's rank budget) spans the first round; later
    rounds continue past its end, so they see steps after the first round's last one.
    """
    hooks = {h: getattr(inner, h) for h in _HOOKS if hasattr(inner, h)}
    if hasattr(inner, "on_optimizer_step"):
        if first_round:
            def on_step(model, step, total_steps):
                seen["total"] = total_steps
                inner.on_optimizer_step(model, step, total_steps)
        else:
            def on_step(model, step, total_steps):
                inner.on_optimizer_step(model, seen["total"] + step, seen["total"])
        hooks["on_optimizer_step"] = on_step
    return SimpleNamespace(**hooks)


# --------------------------------------------------------------------------------------------
# The procedure
# --------------------------------------------------------------------------------------------
def fit(model, tokenizer, data: dict[str, str | os.PathLike[str]], train_cfg, config: Config,
        out_dir: str | os.PathLike[str], train_fn: Callable[..., Any], *, progress: bool = True,
        records: Iterable[dict[str, Any]] | None = None, prompt: PromptOptions | None = None):
    """Train in rounds, up-weighting wrongly answered training examples, until validation stops improving.

    Args:
        model: the model from :func:`prepare`.
        tokenizer: its tokenizer.
        data: ``{"train": path, "validation": path, ...}`` JSONL record files.
        train_cfg: the ``TrainConfig``.
        config: iterative settings.
        out_dir: one sub-directory per round (``round-1``, ...) plus ``rounds.json``; a finished
            round found there is reused by ``train_fn``.
        train_fn: ``t2sql.training.train_model`` (same signature).
        progress: show progress bars.
        records: the training records, when already in memory (default: read ``data["train"]``).
        prompt: the prompt format the model is trained with; answers are decoded and post-processed
            with it before they are scored.

    Returns:
        The ``TrainResult`` of the best round, with steps, tokens and time summed over all rounds
        and each history row tagged with its round. ``model`` holds the best round's weights and
        ``model.t2sql_rounds`` the per-round record.

    Raises:
        KeyError: ``data`` lacks ``train`` or ``validation``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inner, inner_cfg = _inner(config)
    train_records = list(records) if records is not None else list(read_jsonl(data["train"]))
    val_records = list(read_jsonl(data["validation"]))
    scored_train = _sample(train_records, config.score_max_examples, train_cfg.seed)
    scored_val = _sample(val_records, config.val_max_examples, train_cfg.seed)
    weights = {str(r["id"]): 1.0 for r in train_records}
    scorer = ExampleScorer(ScoringOptions(timeout_s=config.query_timeout_s))
    seen: dict[str, int] = {}
    rounds: list[dict[str, Any]] = []
    results = []
    best: tuple[float, float] | None = None
    best_round = 0
    best_state = None
    for k in range(1, config.max_rounds + 1):
        cfg = train_cfg if k == 1 or config.round_epochs is None else train_cfg.model_copy(
            update={"epochs": config.round_epochs})
        result = train_fn(model, tokenizer, data["train"], data["validation"], cfg, out / f"round-{k}",
                          technique=_round_technique(inner, k == 1, seen), technique_cfg=inner_cfg, example_weights=None if k == 1 else weights,
                          progress=progress)
        results.append(result)
        seen.setdefault("total", result.global_step)
        val_correct = score(model, tokenizer, scored_val, config, train_cfg.max_source_length, scorer, prompt)
        val_acc = sum(val_correct.values()) / max(len(val_correct), 1)
        key = (val_acc, -float(result.best_val_loss))
        improved = best is None or key > best
        row = {"round": k, "val_execution_accuracy": round(val_acc, 4), "val_loss": result.best_val_loss,
               "steps": result.global_step, "improved": improved}
        if improved:
            best, best_round, best_state = key, k, _trainable(model)
        if not improved or k == config.max_rounds:
            rounds.append(row)
            log.info("iterative round %d: val accuracy %.3f, val loss %.4f%s", k, val_acc, result.best_val_loss,
                     "" if improved else " (no improvement, stopping)")
            break
        correct = score(model, tokenizer, scored_train, config, train_cfg.max_source_length, scorer, prompt)
        wrong = sum(not c for c in correct.values())
        row.update(train_scored=len(correct), train_wrong=wrong)
        rounds.append(row)
        log.info("iterative round %d: val accuracy %.3f, val loss %.4f, %d/%d training answers wrong", k, val_acc,
                 result.best_val_loss, wrong, len(correct))
        if wrong == 0:
            break
        weights = update_weights(weights, correct, config.upweight, config.max_weight)
    scorer.close()
    if best_state is not None:
        _restore(model, best_state)
    model.t2sql_rounds = rounds
    atomic_write_json(out / ROUNDS_FILE, {"best_round": best_round, "rounds": rounds})
    best_result = results[best_round - 1]
    wall = sum(r.wall_s for r in results)
    tokens = sum(r.train_tokens for r in results)
    history = [{**row, "round": i + 1} for i, r in enumerate(results) for row in r.history]
    return replace(best_result, global_step=sum(r.global_step for r in results), wall_s=round(wall, 2),
                   train_tokens=tokens, tokens_per_s=round(tokens / max(wall, 1e-6), 1),
                   peak_rss_mb=max(r.peak_rss_mb for r in results), history=history)
