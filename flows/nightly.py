"""The ``t2sql-nightly`` flow: retrain on current data, promote only through the champion gate,
and leave a summary artifact, or one naming the failing task and the reason.

    python -m flows.nightly configs/quickstart.yaml [dotted.key=value ...]
    prefect deployment run t2sql-nightly/nightly          # through a server (see prefect.yaml)

It runs the ``t2sql-pipeline`` flow unchanged: every step is cached on its inputs and code and
keyed by the fingerprint of the data files, so a night with the same data, config and code finds
each result on disk and ends in seconds, and new data retrains. The pipeline's register step
applies the champion gate; this flow only reports what happened.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger

from flows.pipeline import t2sql_pipeline

FLOW_NAME = "t2sql-nightly"
SUMMARY_KEY = "t2sql-nightly-summary"
FAILURE_KEY = "t2sql-failure"
REPORTED_METRICS = ("execution_accuracy", "exact_match", "bleu", "parse_rate", "execution_success_rate",
                    "latency_ms_p50", "latency_ms_p95", "n_examples")


def run_tree(flow_run_id: UUID | str) -> list[Any]:
    """A flow run and all its subflow runs (Prefect ``FlowRun`` objects), parents first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(flow_run_id))])))
        frontier = [r.id for r in runs]
        while frontier:
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))
            runs.extend(children)
            frontier = [c.id for c in children]
    return runs


def task_runs(flow_run_id: UUID | str) -> list[dict[str, Any]]:
    """Every task run of a flow run and its subflows, oldest first, without the task runs that
    only stand for a subflow call.

    Returns:
        ``{"flow_run", "flow_run_id", "task", "state", "state_type", "message", "end_time"}`` per task run.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = run_tree(flow_run_id)
    names = {r.id: r.name for r in runs}
    subflow_calls = {r.parent_task_run_id for r in runs if r.parent_task_run_id}
    with get_client(sync_client=True) as client:
        found = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(names))), limit=200)
    rows = []
    for t in found:
        if t.id in subflow_calls:
            continue
        rows.append({"flow_run": names.get(t.flow_run_id, ""), "flow_run_id": str(t.flow_run_id), "task": t.name,
                     "state": t.state.name if t.state else "", "state_type": t.state.type.value if t.state else "",
                     "message": (t.state.message or "") if t.state else "", "end_time": t.end_time})
    rows.sort(key=lambda r: (r["end_time"] is None, r["end_time"] or 0))
    return rows


def failure_summary(flow_run_id: UUID | str, flow_name: str, reason: str | None) -> tuple[str, dict[str, Any] | None]:
    """Markdown naming the task that failed first in a flow run (subflows included) and why.

    Args:
        flow_run_id: the failed flow run.
        flow_name: its flow, for the title.
        reason: the flow run's state message (used when no task failed, e.g. a bad config).

    Returns:
        (markdown, the failing task's row from :func:`task_runs` or None).
    """
    rows = task_runs(flow_run_id)
    failed = [r for r in rows if r["state_type"] in ("FAILED", "CRASHED")]
    first = failed[0] if failed else None
    lines = [f"# {flow_name} failed", "", f"Flow run: `{flow_run_id}`", ""]
    if first is not None:
        lines += [f"Failing task: **{first['task']}** (in flow run `{first['flow_run']}`)", "",
                  f"Reason: {first['message']}", ""]
    else:
        lines += ["Failing task: none (the flow failed outside any task)", ""]
    if reason:
        lines += [f"Flow run state: {reason}", ""]
    lines += ["| flow run | task | state | message |", "| --- | --- | --- | --- |"]
    for r in rows:
        if r["state_type"] != "COMPLETED":
            msg = r["message"].replace("|", "\\|").replace("\n", " ")[:300]
            lines.append(f"| {r['flow_run']} | {r['task']} | {r['state']} | {msg} |")
    counts = Counter(r["state"] for r in rows)
    lines += ["", "Task states: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))]
    return "\n".join(lines) + "\n", first


def publish_markdown(key: str, markdown: str, description: str, flow_run_id: UUID | str | None) -> None:
    """Attach a Markdown artifact to a flow run (works inside state hooks, where no run context is set)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    with get_client(sync_client=True) as client:
        client.create_artifact(ArtifactCreate(key=key, type="markdown", description=description, data=markdown,
                                              flow_run_id=UUID(str(flow_run_id)) if flow_run_id else None))


def publish_failure_summary(flow, flow_run, state) -> None:
    """Flow ``on_failure`` hook: publish the failure summary artifact of ``flow_run``."""
    markdown, first = failure_summary(flow_run.id, flow.name, state.message)
    where = f"task {first['task']}" if first else "outside any task"
    publish_markdown(FAILURE_KEY, markdown, f"{flow.name} run {flow_run.name} failed in {where}", flow_run.id)


@flow(name=FLOW_NAME, log_prints=True)
def t2sql_nightly(config_path: str = "configs/quickstart.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Retrain on the current data and report whether the champion changed.

    Args:
        config_path: a YAML pipeline configuration.
        overrides: ``dotted.key=value`` settings applied on top.

    Returns:
        The pipeline's result with ``champion_before``, ``champion_after``, ``wall_s`` and
        ``task_states`` (task runs per state, mostly ``Cached`` on an unchanged night).

    Raises:
        Exception: whatever made the pipeline fail, after the failure artifact is published.
    """
    logger = get_run_logger()
    t0 = time.perf_counter()
    before = current_champion(config_path, overrides)
    state = t2sql_pipeline(config_path=config_path, overrides=list(overrides or []), return_state=True)
    child = state.state_details.flow_run_id
    wall = round(time.perf_counter() - t0, 2)
    if not state.is_completed():
        markdown, first = failure_summary(child, "t2sql-pipeline", state.message)
        where = f"task {first['task']}" if first else "outside any task"
        publish_markdown(FAILURE_KEY, markdown, f"nightly retraining failed in {where}", _this_run_id())
        logger.error("nightly retraining failed in %s: %s", where, first["message"] if first else state.message)
        state.result()  # raises the pipeline's exception, so this run fails with the same reason
        raise RuntimeError(f"t2sql-pipeline ended in state {state.name}: {state.message}")
    result = state.result()
    after = current_champion(config_path, overrides)
    counts = dict(Counter(r["state"] for r in task_runs(child)))
    metrics = result.get("metrics", {})
    if after != before:
        change = f"Champion: **{before or 'none'} -> {after}**"
    else:
        change = f"Champion unchanged: {after or 'none'}"
    lines = [f"# Nightly retraining: run {result['run_id']}", "", change, "",
             f"Gate decision for {result['run_id']}: promoted **{result['promoted']}** ({result['reason']})", "",
             f"Config: `{config_path}`" + (f" with `{' '.join(overrides)}`" if overrides else ""), "",
             f"Wall time: {wall} s; task runs: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())), "",
             "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {metrics[k]} |" for k in REPORTED_METRICS if k in metrics]
    publish_markdown(SUMMARY_KEY, "\n".join(lines) + "\n", f"nightly run {result['run_id']}", _this_run_id())
    logger.info("nightly: run %s, champion %s -> %s, gate: %s (%s), %s s, task states %s", result["run_id"], before,
                after, result["promoted"], result["reason"], wall, counts)
    return {**result, "champion_before": before, "champion_after": after, "wall_s": wall, "task_states": counts}


def current_champion(config_path: str, overrides: list[str] | None) -> str | None:
    """The champion of the config's registry, or None (no champion yet, or a config that does not load:
    the pipeline then fails with the reason)."""
    from t2sql.config import ConfigError, load_config
    from t2sql.pipeline import registry_for

    try:
        return registry_for(load_config(config_path, overrides)).champion()
    except ConfigError:
        return None


def _this_run_id() -> UUID | None:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx.flow_run.id if ctx and ctx.flow_run else None


if __name__ == "__main__":
    print(t2sql_nightly(sys.argv[1], sys.argv[2:]))
