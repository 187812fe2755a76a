"""Fine-tuning techniques, found by name.

Each technique is one module with the same shape:

- ``Config``: a pydantic model of its settings (the ``params`` of a ``techniques:`` entry);
- ``prepare(model, config, train) -> model``: make a freshly loaded model ready for training
  (wrap adapters, quantize, swap layers); ``train`` is the ``TrainConfig``;
- ``export(model, config, out_dir, tokenizer) -> None``: write the servable model to ``out_dir``
  (adapters merged, weights packed) so that ``t2sql.model_dir.load(out_dir)`` serves it;
- optionally ``on_optimizer_step(model, step, total_steps)``: called after every optimizer step,
  before the gradients are cleared;
- optionally ``regularization(model) -> Tensor | None``: a term the training loop adds to the loss;
- optionally ``checkpoint_ready(model) -> bool``: False while the model is not yet in the form it
  will be exported in (BitNet while quantization ramps in); such steps are not picked as best;
- optionally ``dump_state(model)`` / ``load_state(model, state)``: technique state kept in checkpoints;
- optionally ``summary(model) -> dict``: technique-specific facts recorded with the run;
- optionally ``report_sections(facts) -> list[t2sql.summary.ReportSection]``: what the run report
  shows of those facts (see :func:`report_sections`);
- optionally ``load(path) -> (model, tokenizer)``: read an export that is not a plain Hugging Face
  model (the directory then names it in ``t2sql.model_dir.FORMAT_FILE``, and ``t2sql.model_dir.FORMATS``
  lists the module);
- optionally ``fit(model, tokenizer, data, train_cfg, config, out_dir, train_fn, *, progress, prompt)``: a technique that replaces the training procedure itself (iterative refinement).

Adding a technique is adding a module and a line in ``TECHNIQUES``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from t2sql import model_dir
from t2sql.modeling import count_parameters
from t2sql.summary import ReportSection

TECHNIQUES: dict[str, str] = {
    "full": "t2sql.techniques.full",
    "lora": "t2sql.techniques.lora",
    "qlora": "t2sql.techniques.qlora",
    "adalora": "t2sql.techniques.adalora",
    "bitnet": "t2sql.techniques.bitnet",
    "iterative": "t2sql.techniques.iterative",
}


def available() -> list[str]:
    """The registered technique names, sorted."""
    return sorted(TECHNIQUES)


def get_technique(name: str) -> ModuleType:
    """Return the module implementing technique ``name``.

    Args:
        name: a registry name, e.g. ``lora``.

    Returns:
        The technique module.

    Raises:
        KeyError: the name is unknown; the message lists the valid names.
    """
    if name not in TECHNIQUES:
        raise KeyError(f"unknown technique {name!r}; valid: {', '.join(available())}")
    return importlib.import_module(TECHNIQUES[name])


def report_sections(finetunes: list[dict[str, Any]]) -> list[ReportSection]:
    """The report sections the techniques of a run add, from their recorded facts.

    Args:
        finetunes: fine-tune summaries (``technique`` and ``technique_summary`` keys).
    """
    sections: list[ReportSection] = []
    for row in finetunes:
        technique = get_technique(row["technique"])
        if hasattr(technique, "report_sections") and row.get("technique_summary"):
            sections += technique.report_sections(row["technique_summary"])
    return sections


def comparison_facts(name: str, model, out_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The facts every technique records for comparison.

    Args:
        name: the technique's registry name.
        model: the prepared (trained) model, before or after export.
        out_dir: the export directory, when it has been written.

    Returns:
        ``{"technique", "trainable_params", "total_params", "export_bytes", **summary(model)}``.
    """
    technique = get_technique(name)
    trainable, total = count_parameters(model)
    facts: dict[str, Any] = {"technique": name, "trainable_params": trainable, "total_params": total}
    if out_dir is not None and Path(out_dir).is_dir():
        facts["export_bytes"] = model_dir.size_bytes(out_dir)
    if hasattr(technique, "summary"):
        facts.update(technique.summary(model))
    return facts
