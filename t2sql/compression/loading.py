"""Load any servable model directory, including compressed ones.

``t2sql.modeling.load_model`` reads plain Hugging Face directories and technique exports registered
in ``t2sql.techniques``; :func:`load_servable` adds the formats the compression stage writes
(per-layer pruned feed-forward widths) so that every backend loads models the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from t2sql.modeling import TECHNIQUE_MARKER, load_model

#: marker technique name -> function(path) -> (model, tokenizer)
COMPRESSION_FORMATS = {"pruned_ffn": "t2sql.compression.pruning"}


def marker_technique(path: str | os.PathLike[str]) -> str | None:
    """The technique named by a directory's ``t2sql_technique.json``, or None for a plain model."""
    marker = Path(path) / TECHNIQUE_MARKER
    if not marker.is_file():
        return None
    return json.loads(marker.read_text()).get("technique")


def load_servable(path: str | os.PathLike[str], device: torch.device | str | None = None):
    """Load a model directory for inference.

    Args:
        path: a Hugging Face model directory, a technique export, or a compression output.
        device: where to put the model.

    Returns:
        (model in eval mode, tokenizer).
    """
    import importlib

    name = marker_technique(path)
    if name in COMPRESSION_FORMATS:
        model, tokenizer = importlib.import_module(COMPRESSION_FORMATS[name]).load(Path(path))
        if device is not None:
            model.to(device)
        model.eval()
        return model, tokenizer
    return load_model(path, device)
