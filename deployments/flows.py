"""The flows as the deployments in ``prefect.yaml`` run them.

``t2sql_pipeline`` is the ``t2sql-pipeline`` flow with a failure hook: a failed run leaves a
Markdown artifact naming the failing task and the reason (the nightly flow does the same itself).
"""

from __future__ import annotations

from flows.champion import evaluate_registry_champion
from flows.nightly import publish_failure_summary, t2sql_nightly
from flows.pipeline import t2sql_pipeline as _pipeline

t2sql_pipeline = _pipeline.with_options(on_failure=[publish_failure_summary])

__all__ = ["evaluate_registry_champion", "t2sql_nightly", "t2sql_pipeline"]
