"""Data tasks: download/prepare and explore."""

from __future__ import annotations

from typing import Any

from prefect import task

from t2sql import pipeline
from t2sql.config import load_config
from tasks.common import CACHED, transient


# Not cached by Prefect: its inputs are the config only, so a cache hit would hide new data.
# pipeline.prepare keys its output by the config and the source files' sizes and times instead,
# and returns at once when that output exists.
@task(name="prepare-data", retries=3, retry_delay_seconds=[5, 20, 60], retry_condition_fn=transient)
def prepare_data(config: dict[str, Any]) -> dict[str, Any]:
    """Download (hub sources, retried with backoff), clean and split the data."""
    return pipeline.prepare(load_config(raw=config))


@task(name="explore-data", **CACHED)
def explore_data(config: dict[str, Any], data: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    return pipeline.explore_data(load_config(raw=config), data, base)
