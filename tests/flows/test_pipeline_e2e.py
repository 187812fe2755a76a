"""The real pipeline, end to end on tiny data: Prefect flow, registry, report, CLI."""

import json
from pathlib import Path

import pytest
import yaml

from conftest import SAMPLE, tiny_config

REQUIRED = ["exact_match", "bleu", "execution_accuracy", "parse_rate", "execution_success_rate", "latency_ms_p50"]


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    from flows.pipeline import t2sql_pipeline

    tmp = tmp_path_factory.mktemp("e2e")
    cfg = tiny_config(tmp, techniques=[{"name": "full"}])
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = t2sql_pipeline(config_path=str(path))
    return tmp, path, first


def test_run_directory_is_complete(flow_run):
    tmp, _, result = flow_run
    run_dir = Path(result["run_dir"])
    for name in ("model/config.json", "metrics.json", "report.html", "report.md", "config.yaml",
                 "exploration/exploration.html"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in REQUIRED:
        assert isinstance(metrics[key], (int, float)), key
        if key != "bleu" and key != "latency_ms_p50":
            assert 0.0 <= metrics[key] <= 1.0
    assert metrics["latency_ms_p50"] > 0
    assert metrics["n_examples"] == 16
    # The learning curve has validation loss and execution accuracy at every evaluation.
    history = json.loads((run_dir / "report.json").read_text())["history"]
    assert len(history) >= 2
    for row in history:
        assert row["val_loss"] > 0
        assert 0.0 <= row["val_execution_accuracy"] <= 1.0
        assert 0.0 <= row["val_execution_success"] <= 1.0
    assert "val execution accuracy" in (run_dir / "report.md").read_text()


def test_registry_has_champion(flow_run):
    from t2sql.registry import Registry

    tmp, _, result = flow_run
    reg = Registry(tmp / "runs")
    assert reg.champion() == result["run_id"]
    assert reg.get(result["run_id"])["technique"] == "full"


def test_mlflow_holds_the_run_its_metrics_artifacts_version_and_alias(flow_run):
    from mlflow import MlflowClient

    tmp, _, result = flow_run
    uri = f"sqlite:///{(tmp / 'runs' / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias("t2sql", "champion")
    assert version.tags["t2sql.run_id"] == result["run_id"] and str(version.version) == result["version"]
    assert "no champion yet" in version.tags["gate_reason"]
    run = client.get_run(version.run_id)
    assert run.data.metrics["execution_accuracy"] == pytest.approx(result["metrics"]["execution_accuracy"])
    assert run.data.metrics["latency_ms_p50"] > 0
    assert run.data.params["train.learning_rate"] == "0.003" and run.data.params["name"] == "tiny"
    assert len(run.data.tags["data_fingerprint"]) == 16 and len(run.data.tags["library_digest"]) == 16
    curve = client.get_metric_history(version.run_id, "curve.val_loss")
    assert len(curve) >= 2 and [m.step for m in curve] == sorted(m.step for m in curve)
    files = {f.path for f in client.list_artifacts(version.run_id)}
    assert {"model", "report.html", "report.md", "metrics.json", "config.yaml", "plots"} <= files
    assert "model/config.json" in {f.path for f in client.list_artifacts(version.run_id, "model")}
    children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{version.run_id}'")
    assert [c.data.tags["t2sql.kind"] for c in children] == ["technique"]
    assert children[0].data.metrics["execution_accuracy"] == pytest.approx(result["metrics"]["execution_accuracy"])


def test_a_gate_refusal_leaves_the_alias_where_it_was(flow_run):
    from mlflow import MlflowClient

    from flows.pipeline import t2sql_pipeline

    tmp, path, first = flow_run
    uri = f"sqlite:///{(tmp / 'runs' / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    before = client.get_model_version_by_alias("t2sql", "champion")
    refused = t2sql_pipeline(config_path=str(path), overrides=["train.learning_rate=0.004",
                                                               "gate.min_accuracy_gain=1.0"])
    assert not refused["promoted"] and "does not exceed the required 1.000" in refused["reason"]
    after = client.get_model_version_by_alias("t2sql", "champion")
    assert after.version == before.version
    new = next(mv for mv in client.search_model_versions("name='t2sql'") if mv.tags["t2sql.run_id"] == refused["run_id"])
    assert new.tags["gate_reason"] == refused["reason"]


def test_unchanged_rerun_reuses_finished_work(flow_run):
    from flows.pipeline import t2sql_pipeline

    tmp, path, first = flow_run
    trained = next((tmp / "work" / "finetune").glob("full-*/train/train_result.json"))
    stamp = trained.stat().st_mtime_ns
    second = t2sql_pipeline(config_path=str(path))
    assert second["run_id"] == first["run_id"]
    assert trained.stat().st_mtime_ns == stamp
    assert second["metrics"]["execution_accuracy"] == first["metrics"]["execution_accuracy"]


def test_changed_learning_rate_retrains(flow_run):
    from flows.pipeline import t2sql_pipeline

    tmp, path, first = flow_run
    before = set((tmp / "work" / "finetune").glob("full-*"))
    second = t2sql_pipeline(config_path=str(path), overrides=["train.learning_rate=0.002"])
    assert second["run_id"] != first["run_id"]
    assert len(set((tmp / "work" / "finetune").glob("full-*")) - before) == 1  # one new fine-tune


def test_cli_ask_answers_from_registered_model(flow_run, capsys):
    from cli import main

    tmp, _, _ = flow_run
    db = SAMPLE / "database" / "club_1" / "club_1.sqlite"
    before = db.read_bytes()
    code = main(["ask", "How many clubs are there?", "--db", str(db), "--registry", str(tmp / "runs")])
    out = capsys.readouterr().out
    assert out.startswith("SQL (")
    assert code in (0, 1)  # a tiny model's SQL may fail; the failure is reported, not raised
    assert ("row" in out) if code == 0 else ("the query failed" in out)
    assert db.read_bytes() == before


def test_cli_refuses_bad_config(tmp_path, capsys):
    from cli import main

    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"data": {"sources": [{"kind": "spider", "path": "x"}]}, "train": {"epochs": -1}}))
    assert main(["run", "--config", str(p)]) == 2
    assert "train.epochs" in capsys.readouterr().err
