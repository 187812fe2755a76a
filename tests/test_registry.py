"""The registry on MLflow: versions, the champion alias, decisions, a real server, and a killed registration."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from t2sql.registry import ALIAS, MODEL_NAME, RUN_TAG, Registry, RegistryError, gate, import_file_registry

ROOT = Path(__file__).resolve().parents[1]


def make_run(reg: Registry, run_id: str, acc: float, p50: float = 100.0, weights: int = 1000):
    d = reg.new_run_dir(run_id)
    (d / "model").mkdir(exist_ok=True)
    (d / "model" / "weights.bin").write_bytes(os.urandom(weights))
    (d / "report.html").write_text(f"<h1>{run_id}</h1>")
    summary = {"history": [{"step": s, "val_loss": 3.0 - s / 10, "val_execution_accuracy": s / 100} for s in (5, 10)],
               "techniques": [{"technique": "full", "execution_accuracy": acc, "tokens_per_s": 900.0}],
               "variants": [{"variant": "onnx-int8", "execution_accuracy": acc - 0.01, "size_mb": 8.0}]}
    return reg.register(run_id, metrics={"execution_accuracy": acc, "latency_ms_p50": p50, "test_fingerprint": "f1"},
                        info={"technique": "full"}, config={"train": {"learning_rate": 0.001, "epochs": 3}},
                        summary=summary, tags={"data_fingerprint": "abc"})


def client_of(reg: Registry) -> MlflowClient:
    return MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.tracking_uri)


def test_register_promote_resolve_through_mlflow(tmp_path):
    reg = Registry(tmp_path)
    a = make_run(reg, "a", 0.3)
    make_run(reg, "b", 0.5)
    assert reg.champion() is None
    with pytest.raises(RegistryError, match="no champion"):
        reg.resolve("champion")
    reg.promote("b", reason="best so far")

    client = client_of(reg)
    versions = {mv.tags[RUN_TAG]: mv for mv in client.search_model_versions(f"name='{MODEL_NAME}'")}
    assert set(versions) == {"a", "b"} and str(versions["a"].version) == "1" and str(versions["b"].version) == "2"
    champion = client.get_model_version_by_alias(MODEL_NAME, ALIAS)
    assert str(champion.version) == "2" and champion.tags["gate_reason"] == "best so far"
    run = client.get_run(champion.run_id)
    assert run.data.metrics["execution_accuracy"] == 0.5 and run.data.tags["t2sql.metric.test_fingerprint"] == "f1"
    assert run.data.params["train.learning_rate"] == "0.001" and run.data.tags["data_fingerprint"] == "abc"
    assert [(m.step, m.value) for m in client.get_metric_history(champion.run_id, "curve.val_loss")] == \
        [(5, 2.5), (10, 2.0)]
    assert {f.path for f in client.list_artifacts(champion.run_id)} >= {"model", "report.html"}
    children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{champion.run_id}'")
    assert sorted(c.data.tags["t2sql.kind"] for c in children) == ["technique", "variant"]

    model = reg.resolve("champion")
    assert (model / "weights.bin").read_bytes() == (tmp_path / "b" / "model" / "weights.bin").read_bytes()
    assert reg.resolve("models:/t2sql@champion") == model == reg.resolve("run:b") == reg.resolve("b")
    assert reg.resolve(str(tmp_path / "a")) == tmp_path / "a" / "model"
    assert [r["run_id"] for r in reg.runs()] == ["b", "a"]
    assert reg.get("a")["metrics"]["execution_accuracy"] == 0.3 and reg.get("a")["technique"] == "full"
    assert reg.decisions()[-1]["reason"] == "best so far" and reg.decisions()[-1]["previous"] is None
    assert make_run(reg, "a", 0.9) == a  # registering again returns the version it has
    with pytest.raises(RegistryError, match="unknown run 'zzz'"):
        reg.get("zzz")

    reg.record_decision("a", promoted=False, reason="not better")
    assert reg.champion() == "b" and [d["promoted"] for d in reg.decisions()] == [True, False]
    reg.delete("b")
    assert reg.champion() is None and [r["run_id"] for r in reg.runs()] == ["a"]


def test_alias_survives_a_registration_killed_midway(tmp_path):
    reg = Registry(tmp_path)
    make_run(reg, "old", 0.4)
    reg.promote("old", reason="first")
    code = (f"import os, sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from t2sql.registry import Registry\n"
            f"reg = Registry({str(tmp_path)!r})\n"
            "d = reg.new_run_dir('new'); (d / 'model').mkdir(exist_ok=True)\n"
            "for i in range(400):\n"
            "    (d / 'model' / f'shard-{i:03d}.bin').write_bytes(os.urandom(400_000))\n"
            "print('written', flush=True)\n"
            "reg.register('new', metrics={'execution_accuracy': 0.9})\n"
            "reg.promote('new', reason='never reached')\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    artifacts = tmp_path / "mlartifacts"
    deadline = time.monotonic() + 60
    while not any(p.name.startswith("shard-") for p in artifacts.rglob("shard-*")):  # mid-copy of the artifacts
        assert proc.poll() is None and time.monotonic() < deadline, "registration finished before it was killed"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    assert reg.champion() == "old" and not reg.is_registered("new")
    assert [r["run_id"] for r in reg.runs()] == ["old"]
    assert (reg.resolve("champion") / "weights.bin").is_file()
    entry = reg.register("new", metrics={"execution_accuracy": 0.9})  # run again: the unfinished run is replaced
    assert entry["version"] == "2" and len(list((reg.resolve("new")).glob("shard-*.bin"))) == 400
    client = client_of(reg)
    exp = client.get_experiment_by_name("t2sql").experiment_id
    assert len(client.search_runs([exp], f"tags.`{RUN_TAG}` = 'new'")) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_mlflow_server(tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--serve-artifacts",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=open(tmp_path / "server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        uri = f"http://127.0.0.1:{port}"
        reg = Registry(tmp_path / "local", tracking_uri=uri)
        make_run(reg, "remote-a", 0.6, weights=50_000)
        reg.promote("remote-a", reason="served from the team's server")
        assert not (tmp_path / "local" / "mlflow.db").exists()  # nothing embedded
        # Another machine: no local run directory, the model comes from the server.
        other = Registry(tmp_path / "elsewhere", tracking_uri=uri)
        assert other.champion() == "remote-a"
        model = other.resolve("champion")
        assert model.is_relative_to(tmp_path / "elsewhere")
        assert (model / "weights.bin").read_bytes() == (tmp_path / "local" / "remote-a" / "model" / "weights.bin").read_bytes()
        assert other.resolve("champion") == model  # downloaded once
        assert (other.run_dir("remote-a") / "report.html").is_file()
        assert MlflowClient(uri, uri).get_model_version_by_alias(MODEL_NAME, ALIAS).tags[RUN_TAG] == "remote-a"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_import_of_a_file_registry(tmp_path):
    import json

    old = tmp_path / "old"
    for run_id, acc in (("r1", 0.2), ("r2", 0.4)):
        (old / run_id / "model").mkdir(parents=True)
        (old / run_id / "model" / "config.json").write_text("{}")
    index = {"runs": {"r1": {"run_id": "r1", "path": str(old / "r1"), "registered_at": "2026-01-01T00:00:00",
                             "metrics": {"execution_accuracy": 0.2}, "technique": "lora"},
                      "r2": {"run_id": "r2", "path": str(old / "r2"), "registered_at": "2026-01-02T00:00:00",
                             "metrics": {"execution_accuracy": 0.4}, "technique": "full"}},
             "champion": "r1", "decisions": []}
    (old / "index.json").write_text(json.dumps(index))
    reg = Registry(tmp_path / "new")
    assert import_file_registry(old, reg) == ["r1", "r2"]
    assert reg.champion() == "r1" and [r["run_id"] for r in reg.runs()] == ["r2", "r1"]
    assert reg.get("r1")["technique"] == "lora" and reg.get("r2")["metrics"]["execution_accuracy"] == 0.4
    assert import_file_registry(old, reg) == []  # again: nothing new
    with pytest.raises(RegistryError, match="index.json"):
        import_file_registry(tmp_path / "nothing", reg)


def test_gate():
    ok, why = gate({"execution_accuracy": 0.5, "latency_ms_p50": 100}, None, min_accuracy_gain=0.0,
                   max_latency_ratio=1.5)
    assert ok and "no champion" in why
    ok, why = gate({"execution_accuracy": 0.5, "latency_ms_p50": 100}, {"execution_accuracy": 0.5,
                   "latency_ms_p50": 100}, min_accuracy_gain=0.0, max_latency_ratio=1.5)
    assert not ok
    ok, why = gate({"execution_accuracy": 0.6, "latency_ms_p50": 100}, {"execution_accuracy": 0.5,
                   "latency_ms_p50": 100}, min_accuracy_gain=0.05, max_latency_ratio=1.5)
    assert ok
    ok, why = gate({"execution_accuracy": 0.6, "latency_ms_p50": 300}, {"execution_accuracy": 0.5,
                   "latency_ms_p50": 100}, min_accuracy_gain=0.05, max_latency_ratio=1.5)
    assert not ok and "latency" in why
