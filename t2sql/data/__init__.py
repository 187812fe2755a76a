"""Data layer: load sources into (question, context, answer) records, prepare splits, explore them.

    from t2sql.data import load_source, prepare_data
    from t2sql.data.explore import explore

Names are imported on first use, so importing one data module (``t2sql.data.values`` for the
prompt) does not load the others.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"prepare_data": "preprocess", "DataSourceError": "sources", "load_source": "sources"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 't2sql.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"t2sql.data.{module}"), name)
    globals()[name] = value
    return value
