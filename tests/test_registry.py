import json
import multiprocessing as mp
import os
import signal

import pytest

from t2sql.io import atomic_write_json
from t2sql.registry import Registry, RegistryError, gate


def make_run(reg: Registry, run_id: str, acc: float, p50: float = 100.0):
    d = reg.new_run_dir(run_id)
    (d / "model").mkdir(exist_ok=True)
    reg.register(run_id, metrics={"execution_accuracy": acc, "latency_ms_p50": p50})


def test_register_promote_resolve(tmp_path):
    reg = Registry(tmp_path)
    make_run(reg, "a", 0.3)
    make_run(reg, "b", 0.5)
    assert reg.champion() is None
    with pytest.raises(RegistryError, match="no champion"):
        reg.resolve("champion")
    reg.promote("b", reason="best")
    assert reg.champion() == "b"
    assert reg.resolve("champion") == tmp_path / "b" / "model"
    assert reg.resolve("run:a") == tmp_path / "a" / "model"
    assert [r["run_id"] for r in reg.runs()] == ["b", "a"]
    assert reg.read_index()["decisions"][-1]["reason"] == "best"
    with pytest.raises(RegistryError, match="unknown run 'zzz'"):
        reg.get("zzz")


def _write_forever(path):
    big = {"runs": {str(i): {"x": "y" * 1000} for i in range(2000)}, "champion": None, "decisions": []}
    while True:
        atomic_write_json(path, big)


def test_index_survives_interrupted_write(tmp_path):
    reg = Registry(tmp_path)
    make_run(reg, "a", 0.3)
    before = reg.read_index()
    # A writer killed at a random point never leaves a half-written index.
    for _ in range(5):
        p = mp.get_context("fork").Process(target=_write_forever, args=(reg.index_path,))
        p.start()
        p.join(0.3)
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        data = json.loads(reg.index_path.read_text())  # always parses
        assert data["runs"] == before["runs"] or len(data["runs"]) == 2000
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp") and not f.startswith(".")]


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
