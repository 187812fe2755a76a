"""Task runners for the fan-outs: threads by default, a Dask cluster when configured.

    runner: dask                    # in a pipeline YAML: a local cluster of max_workers processes
    dask_address: tcp://host:8786   # or an existing cluster started with `dask scheduler` / `dask worker`

Tasks pass file paths and small dicts, and cached tasks persist their results under
``PREFECT_LOCAL_STORAGE_PATH`` (the work dir when started by ``t2sql run`` or ``python -m deployments.up``),
so a Dask worker hands back a few hundred bytes, never a model, and a rerun finds the results on disk.
"""

from __future__ import annotations

import os
from typing import Any

# Besides the Prefect settings in effect, what a Dask worker process must see like the flow does.
FORWARDED_ENV = ("T2SQL_HOME", "T2SQL_DATA_DIR", "HF_HUB_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM")


def current_api_url() -> str | None:
    """The Prefect API this process talks to: ``PREFECT_API_URL``, else the temporary server of the running flow.

    Without it, every Dask worker process would start a temporary Prefect server of its own.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return PREFECT_API_URL.value()
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is not None and ctx.client is not None:
        return str(ctx.client.api_url).rstrip("/")
    return None


def dask_worker_env(threads_per_worker: int = 1) -> dict[str, str]:
    """Environment of local Dask worker processes.

    The Prefect settings in effect here (API, result storage, persistence: from the environment,
    a profile or ``temporary_settings``) so workers report to the same server and store results
    where the flow looks for them; the project's own variables; and one OpenMP/MKL thread pool
    per worker sized so that the workers do not oversubscribe the cores.
    """
    from prefect.settings import get_current_settings

    env = get_current_settings().to_environment_variables(exclude_unset=True)
    env.update({k: os.environ[k] for k in FORWARDED_ENV if k in os.environ})
    api = current_api_url()
    if api:
        env["PREFECT_API_URL"] = api
    env.setdefault("OMP_NUM_THREADS", str(threads_per_worker))
    env.setdefault("MKL_NUM_THREADS", str(threads_per_worker))
    return env


def make_task_runner(runner: str = "thread", max_workers: int = 2, dask_address: str | None = None) -> Any:
    """A Prefect task runner.

    Args:
        runner: ``thread`` (Prefect's ThreadPoolTaskRunner) or ``dask`` (prefect-dask's DaskTaskRunner).
        max_workers: concurrent tasks (threads, or local Dask worker processes when no address is given).
        dask_address: an existing Dask scheduler (``tcp://host:8786``); default: a local cluster of
            ``max_workers`` processes with one thread each. Workers of an existing cluster must see
            the same files (work dir, registry) and have ``PREFECT_API_URL`` set.

    Returns:
        A task runner to pass to ``flow.with_options(task_runner=...)``.

    Raises:
        ValueError: an unknown runner name.
    """
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        cores = os.cpu_count() or 1
        threads = max(1, cores // max_workers)
        return DaskTaskRunner(cluster_kwargs={
            "n_workers": max_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None,
            "env": dask_worker_env(threads),
        })
    if runner != "thread":
        raise ValueError(f"runner: unknown task runner {runner!r}; expected 'thread' or 'dask'")
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=max_workers)
