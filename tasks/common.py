"""Shared task settings: cache on inputs and task source, results persisted under the work dir."""

from __future__ import annotations

from datetime import timedelta

from prefect.cache_policies import INPUTS, TASK_SOURCE

CACHE = INPUTS + TASK_SOURCE
CACHED = {"cache_policy": CACHE, "persist_result": True, "cache_expiration": timedelta(days=30)}
