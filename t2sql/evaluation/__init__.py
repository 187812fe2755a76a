"""Evaluation: safe SQL execution, Spider-style matching, execution accuracy, error analysis.

    from t2sql.evaluation import evaluate_model, evaluate_predictions, score_spider

Names are imported on first use, so ``import t2sql.evaluation.execution`` (the web GUI's path to
running SQL) stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ERROR_CATEGORIES": "categories", "categorize": "categories",
    "ExampleScorer": "judge", "ScoringOptions": "judge", "score_predictions": "judge", "RunningTotals": "evaluate",
    "evaluate_model": "evaluate", "evaluate_predictions": "evaluate", "iter_test_records": "evaluate",
    "ExecResult": "execution", "connect_readonly": "execution", "connect_schema": "execution", "execute": "execution",
    "fuzz_databases": "fuzz", "fuzz_verdict": "fuzz",
    "results_match": "results",
    "ScenarioError": "scenarios", "append_scenario_example": "scenarios", "load_scenarios": "scenarios",
    "wilson_interval": "scenarios",
    "format_score_table": "spider", "score_spider": "spider",
    "QUERY_TYPES": "structure", "QUERY_TYPE_LABELS": "structure", "SqlStructureError": "structure",
    "build_structure": "structure", "exact_set_match": "structure", "hardness": "structure",
    "normalize_sql": "structure", "query_types": "structure",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 't2sql.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"t2sql.evaluation.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
