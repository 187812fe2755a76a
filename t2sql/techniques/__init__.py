"""Fine-tuning techniques, found by name.

Each technique is one module with the same shape:

- ``Config``: a pydantic model of its settings (the ``params`` of a ``techniques:`` entry);
- ``prepare(model, config, train) -> model``: make a freshly loaded model ready for training
  (wrap adapters, quantize, swap layers);
- ``export(model, config, out_dir, tokenizer) -> None``: write the servable model to ``out_dir``
  (adapters merged, weights packed) so that ``t2sql.modeling.load_model(out_dir)`` serves it;
- optionally ``on_optimizer_step(model, step, total_steps)``: called after every optimizer step;
- optionally ``summary(model) -> dict``: technique-specific facts recorded with the run.

Adding a technique is adding a module and a line in ``TECHNIQUES``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TECHNIQUES: dict[str, str] = {
    "full": "t2sql.techniques.full",
}


def available() -> list[str]:
    return sorted(TECHNIQUES)


def get_technique(name: str) -> ModuleType:
    """Return the module implementing technique ``name``.

    Raises:
        KeyError: the name is unknown; the message lists the valid names.
    """
    if name not in TECHNIQUES:
        raise KeyError(f"unknown technique {name!r}; valid: {', '.join(available())}")
    return importlib.import_module(TECHNIQUES[name])
