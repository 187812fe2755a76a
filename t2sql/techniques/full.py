"""Full fine-tuning: every weight trains. The baseline the other techniques are compared with."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


def prepare(model, config: Config, train=None):
    """Return the model unchanged, all parameters trainable."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def export(model, config: Config, out_dir: Path, tokenizer) -> None:
    """Save the model and tokenizer in Hugging Face format."""
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
