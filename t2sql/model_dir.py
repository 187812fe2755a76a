"""A servable model directory: what it holds, and the one way it is read.

    from t2sql import model_dir
    model, tokenizer = model_dir.load("runs/quickstart-1a2b/model")

A model directory holds a Hugging Face model and tokenizer (``save_pretrained``) and sidecar files:

- :data:`FORMAT_FILE` (``t2sql_technique.json``) names the format when the weights are not a plain
  Hugging Face model; the module registered for that name in :data:`FORMATS` reads them back
  (``load(path) -> (model, tokenizer)``);
- :data:`PROMPT_FILE` (``t2sql_prompt.json``) holds the prompt format the model was trained with
  (:mod:`t2sql.prompt`), so whoever serves it writes its inputs and reads its outputs the same way.

Adding a saved format is writing a module with ``load(path)`` and adding a line to :data:`FORMATS`.
This module sits at the bottom of the library: it imports no other ``t2sql`` module at load time.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

#: Names the saved format of weights that are not a plain Hugging Face model.
FORMAT_FILE = "t2sql_technique.json"
#: The prompt format the model was trained with.
PROMPT_FILE = "t2sql_prompt.json"
#: Sidecars copied along whenever a model directory is rewritten (pruned, exported, registered).
SIDECARS = (PROMPT_FILE,)

#: format name -> module whose ``load(path)`` rebuilds the model
FORMATS: dict[str, str] = {
    "bitnet": "t2sql.techniques.bitnet",
    "pruned_ffn": "t2sql.compression.pruning",
}

# transformers builds models inside context managers that patch torch.nn.init and
# nn.Module.register_parameter for the whole process; two threads loading or building models at
# once (the thread task runner's fan-out) corrupt each other's weights. Every model load or
# construction in this package holds this lock.
MODEL_LOCK = threading.RLock()


def read_format(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The format sidecar of a model directory, or None for a plain Hugging Face model."""
    marker = Path(path) / FORMAT_FILE
    if not marker.is_file():
        return None
    return json.loads(marker.read_text())


def format_name(path: str | os.PathLike[str]) -> str | None:
    """The saved format of a model directory (``bitnet``, ``pruned_ffn``), or None for a plain model."""
    info = read_format(path)
    return None if info is None else info.get("technique")


def write_format(out_dir: str | os.PathLike[str], name: str, **info: Any) -> None:
    """Name a directory's saved format (``name`` must be registered in :data:`FORMATS`).

    Raises:
        KeyError: the format is not registered.
    """
    if name not in FORMATS:
        raise KeyError(f"unknown model format {name!r}; registered: {', '.join(sorted(FORMATS))}")
    (Path(out_dir) / FORMAT_FILE).write_text(json.dumps({"technique": name, **info}, indent=2))


def clear_format(out_dir: str | os.PathLike[str]) -> None:
    """Mark a directory as a plain Hugging Face model again."""
    (Path(out_dir) / FORMAT_FILE).unlink(missing_ok=True)


def load(path: str | os.PathLike[str], device: Any = None):
    """Load any servable model directory (plain, BitNet, pruned) or hub id.

    Args:
        path: the directory (or a hub id, read by Hugging Face's Auto classes).
        device: where to put the model (default: where it loads).

    Returns:
        (model in eval mode, tokenizer).

    Raises:
        ValueError: the directory names a format no module is registered for.
    """
    from t2sql.hardware import flush_denormals

    flush_denormals()
    with MODEL_LOCK:
        name = format_name(path) if Path(path).is_dir() else None
        if name is not None:
            if name not in FORMATS:
                raise ValueError(f"{Path(path) / FORMAT_FILE}: unknown model format {name!r}; "
                                 f"registered: {', '.join(sorted(FORMATS))}")
            model, tokenizer = importlib.import_module(FORMATS[name]).load(Path(path))
        else:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            model = AutoModelForSeq2SeqLM.from_pretrained(str(path))
            tokenizer = AutoTokenizer.from_pretrained(str(path))
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer


def save(model, tokenizer, out_dir: str | os.PathLike[str]) -> Path:
    """Save a plain Hugging Face model and its tokenizer (safetensors). Returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def copy_sidecars(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy the :data:`SIDECARS` of one model directory to another (those it has)."""
    for name in SIDECARS:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)


def size_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of every file under a model directory."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
