"""Shared task settings: cache on inputs, task source and library source; results persisted under the work dir."""

from __future__ import annotations

from datetime import timedelta

from prefect.cache_policies import INPUTS, TASK_SOURCE, CacheKeyFnPolicy

from t2sql.io import library_fingerprint


def _library_key(context, parameters) -> str:
    return library_fingerprint()


CACHE = INPUTS + TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=_library_key)
CACHED = {"cache_policy": CACHE, "persist_result": True, "cache_expiration": timedelta(days=30)}


def transient(task, task_run, state) -> bool:
    """Retry only failures that may pass (network, I/O); a bad path or bad data fails at once."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable result: let the retry policy decide
        return True
    from t2sql.config import ConfigError
    from t2sql.data import DataSourceError

    return not isinstance(exc, (DataSourceError, ConfigError, KeyError, TypeError))
