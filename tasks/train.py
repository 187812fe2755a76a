"""Model tasks: the shared base model and one fine-tune per technique."""

from __future__ import annotations

from typing import Any

from prefect import task

from t2sql import pipeline
from t2sql.config import TechniqueSpec, TrainConfig, load_config
from t2sql.prompt import PromptOptions
from tasks.common import CACHED


@task(name="base-model", retries=2, retry_delay_seconds=[10, 60], **CACHED)
def base_model(config: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Load the base model from the hub / a path / the registry, or build one offline."""
    return pipeline.base_model(load_config(raw=config), data)


@task(name="finetune", task_run_name="finetune-{technique[name]}", retries=1, retry_delay_seconds=10, **CACHED)
def finetune(train: dict[str, Any], prompt: dict[str, Any], work_dir: str, base: dict[str, Any],
             data: dict[str, Any], technique: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune one technique (resumes from its last checkpoint when retried).

    Only this technique's own settings are inputs, so changing another technique's settings
    leaves this task's cache valid.
    """
    return pipeline.finetune_technique(TrainConfig.model_validate(train), PromptOptions.model_validate(prompt),
                                       work_dir, base, data, TechniqueSpec(**technique))
