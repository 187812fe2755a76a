"""LoRA: train low-rank adapters ``B @ A`` beside frozen weights, then merge them in for serving.

    techniques:
      - name: lora
        params: {r: 8, alpha: 16, dropout: 0.05, target_modules: [q, v]}

``target_modules`` names T5's Linear layers (``q``, ``k``, ``v``, ``o``, ``wi``, ``wo``) or is
``all-linear`` (every Linear but the output head).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=8, ge=1, description="Rank of the adapters.")
    alpha: float = Field(default=16.0, gt=0, description="Scale: the update is (alpha / r) * B @ A.")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q", "v"], min_length=1,
        description="Names of the Linear layers that get adapters, or 'all-linear'.")


def lora_config(config: Config):
    """The peft ``LoraConfig`` for a seq2seq model from our settings."""
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=config.r, lora_alpha=config.alpha,
                      lora_dropout=config.dropout, target_modules=config.target_modules)


def prepare(model, config: Config, train=None):
    """Freeze the model and wrap the target layers with LoRA adapters (B starts at zero).

    Args:
        model: a Hugging Face seq2seq model.
        config: LoRA settings.
        train: the ``TrainConfig`` (unused).

    Returns:
        The peft model; only adapter weights are trainable.

    Raises:
        ValueError: no layer of the model matches ``target_modules``.
    """
    from peft import get_peft_model

    return get_peft_model(model, lora_config(config))


def merged_copy(model):
    """A plain model with the adapters folded into the weights; ``model`` itself is left as is."""
    return copy.deepcopy(model).merge_and_unload()


def export(model, config: Config, out_dir: Path, tokenizer) -> None:
    """Merge the adapters into the base weights and save a plain Hugging Face model.

    Args:
        model: the trained peft model (not modified).
        config: LoRA settings.
        out_dir: destination directory.
        tokenizer: saved beside the model.
    """
    merged = merged_copy(model)
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
