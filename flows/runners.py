"""Task runners for the fan-outs: threads by default, a Dask cluster when configured."""

from __future__ import annotations

from typing import Any


def make_task_runner(runner: str = "thread", max_workers: int = 2, dask_address: str | None = None) -> Any:
    """A Prefect task runner.

    Args:
        runner: ``thread`` (Prefect's ThreadPoolTaskRunner) or ``dask`` (prefect-dask's DaskTaskRunner).
        max_workers: concurrent tasks (threads, or local Dask workers when no address is given).
        dask_address: an existing Dask scheduler (``tcp://host:8786``); default: a local cluster.
    """
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": max_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=max_workers)
