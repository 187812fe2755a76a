"""``python -m deployments.up`` end to end: a real Prefect server, the deployments of prefect.yaml with
their cron schedules, a process worker, runs started through the API, artifacts, and Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import SAMPLE, TINY_MODEL

ROOT = Path(__file__).resolve().parents[2]
NIGHTLY_CRON = "15 3 * * *"
DATABASES = ["club_1", "gymnast", "musical", "wrestler", "climbing", "entrepreneur", "body_builder",
             "candidate_poll", "race_track"]

pytestmark = pytest.mark.deployments


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_overrides(tmp: Path) -> list[str]:
    """configs/quickstart.yaml shrunk to seconds, as one would type them in the UI."""
    model = [f"model.{k}={v}" for k, v in TINY_MODEL.items() if k != "base_model"]
    return [f"work_dir={tmp / 'work'}", f"registry.root={tmp / 'runs'}",
            f"data.sources.0.path={SAMPLE}", f"data.sources.0.databases=[{', '.join(DATABASES)}]",
            "data.val_fraction=0.2", "data.test_fraction=0.2", *model,
            "train.epochs=1", "train.max_minutes=0.2", "train.max_source_length=128", "train.max_target_length=64",
            "train.num_threads=1", "train.val_max_examples=16", "eval.max_examples=10", "eval.max_new_tokens=24"]


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    """``python -m deployments.up`` on a free port with a private PREFECT_HOME; stopped with Ctrl-C."""
    tmp = tmp_path_factory.mktemp("deployments")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(tmp / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOCAL_STORAGE_PATH": str(tmp / "work" / "prefect-results"),
                "PREFECT_WORKER_QUERY_SECONDS": "1", "T2SQL_NIGHTLY_CRON": NIGHTLY_CRON,
                "PREFECT_LOGGING_LEVEL": "INFO"})
    log = tmp / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deployments.up", "--port", str(port), "--log-dir",
                                 str(tmp / "logs")], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while "Prefect UI:" not in log.read_text():
        assert proc.poll() is None, log.read_text()[-4000:]
        assert time.monotonic() < deadline, log.read_text()[-4000:]
        time.sleep(0.5)
    api = f"http://127.0.0.1:{port}/api"
    yield {"proc": proc, "api": api, "tmp": tmp, "log": log, "port": port}
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=90)


def api_settings(api: str):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: api})


def run(api: str, deployment: str, overrides: list[str]):
    from prefect.deployments import run_deployment

    with api_settings(api):
        return run_deployment(deployment, parameters={"config_path": "configs/quickstart.yaml",
                                                      "overrides": overrides}, timeout=300)


def task_states(api: str, flow_run_id) -> dict[str, str]:
    from flows.nightly import task_runs

    with api_settings(api):
        return {r["task"]: r["state"] for r in task_runs(flow_run_id)}


def durations(api: str, flow_run_id) -> str:
    """Run time of a flow run and its subflows as the server recorded them."""
    from flows.nightly import run_tree

    with api_settings(api):
        return ", ".join(f"{r.name} {r.total_run_time.total_seconds():.1f} s"
                         for r in run_tree(flow_run_id))


def artifact(api: str, key: str, flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with api_settings(api), get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert len(found) == 1, f"no artifact {key} on flow run {flow_run_id}"
    return found[0].data


def test_up_prints_the_ui_and_creates_the_deployments_with_schedules(up):
    from prefect.client.orchestration import get_client

    text = up["log"].read_text()
    assert f"Prefect UI: http://127.0.0.1:{up['port']}" in text
    with api_settings(up["api"]), get_client(sync_client=True) as client:
        schedules = {}
        for name in ("t2sql-pipeline/on-demand", "t2sql-nightly/nightly", "t2sql-evaluate-champion/weekly"):
            dep = client.read_deployment_by_name(name)
            assert dep.work_pool_name == "t2sql-local"
            assert dep.parameters == {"config_path": "configs/quickstart.yaml", "overrides": []}
            # typed parameters, editable in the UI's run form
            assert {"config_path", "overrides"} <= set(dep.parameter_openapi_schema["properties"])
            schedules[name] = [(s.schedule.cron, s.schedule.timezone, s.active)
                               for s in client.read_deployment_schedules(dep.id)]
    assert schedules["t2sql-pipeline/on-demand"] == []
    assert schedules["t2sql-nightly/nightly"] == [(NIGHTLY_CRON, "UTC", True)]  # from T2SQL_NIGHTLY_CRON
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    weekly = spec["definitions"]["schedules"]["weekly"]
    assert schedules["t2sql-evaluate-champion/weekly"] == [(weekly["cron"], weekly["timezone"], True)]


def test_on_demand_run_then_unchanged_nightly_reuses_the_cache(up):
    from t2sql.registry import Registry

    overrides = tiny_overrides(up["tmp"])
    t0 = time.monotonic()
    first = run(up["api"], "t2sql-pipeline/on-demand", overrides)
    first_s = time.monotonic() - t0
    assert first.state.is_completed(), first.state.message
    registry = Registry(up["tmp"] / "runs")
    champion = registry.champion()
    assert champion is not None
    assert (up["tmp"] / "runs" / champion / "metrics.json").is_file()

    t0 = time.monotonic()
    nightly = run(up["api"], "t2sql-nightly/nightly", overrides)
    nightly_s = time.monotonic() - t0
    assert nightly.state.is_completed(), nightly.state.message
    states = task_states(up["api"], nightly.id)
    # prepare-data always runs (it stamps the data files, so new data is seen) and finds its output
    for task in ("base-model", "explore-data", "finetune-full", "evaluate-full"):
        assert [s for t, s in states.items() if t.startswith(task)] == ["Cached"], (task, states)
    assert registry.champion() == champion  # the same model: no new run, no promotion change
    summary = artifact(up["api"], "t2sql-nightly-summary", nightly.id)
    assert f"Champion unchanged: {champion}" in summary and "Cached" in summary
    print(f"\non-demand run {first_s:.1f} s (flow {durations(up['api'], first.id)}); unchanged nightly run "
          f"{nightly_s:.1f} s (flow {durations(up['api'], nightly.id)}); nightly task states {states}")

    champ = run(up["api"], "t2sql-evaluate-champion/weekly", overrides)
    assert champ.state.is_completed(), champ.state.message
    assert champ.state.result()["run_id"] == champion
    assert champion in str(artifact(up["api"], "t2sql-champion-evaluation", champ.id))


def test_a_failure_names_the_failing_task_and_the_reason(up):
    missing = up["tmp"] / "no-such-spider"
    failed = run(up["api"], "t2sql-pipeline/on-demand", tiny_overrides(up["tmp"]) + [f"data.sources.0.path={missing}"])
    assert failed.state.is_failed()
    assert f"{missing}: Spider directory not found" in failed.state.message
    states = task_states(up["api"], failed.id)
    assert [t for t, s in states.items() if s == "Failed"] == [next(t for t in states if t.startswith("prepare-data"))]
    summary = artifact(up["api"], "t2sql-failure", failed.id)
    assert "Failing task: **prepare-data" in summary
    assert "Spider directory not found" in summary


def test_ctrl_c_stops_the_worker_and_the_server(up):
    from deployments.up import api_healthy

    up["proc"].send_signal(signal.SIGINT)
    assert up["proc"].wait(timeout=90) == 0
    assert not api_healthy(up["api"], timeout=2)
    assert "stopping" in up["log"].read_text()
