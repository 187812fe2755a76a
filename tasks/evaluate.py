"""Evaluation tasks."""

from __future__ import annotations

from typing import Any

from prefect import task

from t2sql import pipeline
from t2sql.config import EvalConfig, load_config
from tasks.common import CACHED


@task(name="evaluate", task_run_name="evaluate-{model[key]}", **CACHED)
def evaluate(eval_cfg: dict[str, Any], work_dir: str, model: dict[str, Any], test_path: str,
             backend: str | None = None, max_source_length: int = 512) -> dict[str, Any]:
    """Evaluate a fine-tuned model ({"model_dir", "key"}) on the test set."""
    return pipeline.evaluate_model_dir(EvalConfig.model_validate(eval_cfg), work_dir, model["model_dir"], test_path,
                                       model["key"], backend, max_source_length)


@task(name="evaluate-champion")
def evaluate_champion(config: dict[str, Any], data: dict[str, Any]) -> dict[str, Any] | None:
    """The current champion on this run's test set (not cached: the champion changes)."""
    return pipeline.champion_on_test(load_config(raw=config), data)
