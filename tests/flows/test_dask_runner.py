"""The per-technique fan-out on a local Dask cluster (2 worker processes) gives what it gives on threads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tiny_config


def test_make_task_runner_choices():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.runners import make_task_runner

    threads = make_task_runner("thread", 3)
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    local = make_task_runner("dask", 2)
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs["n_workers"] == 2 and local.cluster_kwargs["processes"] is True
    assert local.cluster_kwargs["threads_per_worker"] == 1
    remote = make_task_runner("dask", 2, "tcp://10.0.0.5:8786")
    assert remote.address == "tcp://10.0.0.5:8786" and not remote.cluster_kwargs
    with pytest.raises(ValueError, match="runner"):
        make_task_runner("ray")


def _predictions(metrics: dict) -> list[str]:
    return [json.loads(line)["pred"] for line in Path(metrics["predictions_path"]).read_text().splitlines()]


def test_dask_fan_out_matches_threads(tmp_path):
    from prefect import flow
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, PREFECT_RESULTS_PERSIST_BY_DEFAULT, temporary_settings

    from flows.pipeline import finetune_techniques
    from flows.runners import make_task_runner
    from t2sql import pipeline as steps
    from t2sql.config import load_config

    raw = tiny_config(tmp_path, techniques=[{"name": "full"}, {"name": "lora", "params": {"dropout": 0.0}}])
    raw["train"]["epochs"] = 1
    raw["eval"]["max_examples"] = 8
    cfg = load_config(raw=raw)
    data = steps.prepare(cfg)
    base = steps.base_model(cfg, data)
    storage = tmp_path / "prefect-results"

    @flow(name="t2sql-test-fan-out")
    def fan_out_twice() -> dict[str, list[dict]]:
        out = {}
        for runner in ("thread", "dask"):
            # separate work dirs: nothing is reused between the two fan-outs
            config = {**raw, "work_dir": str(tmp_path / runner)}
            out[runner] = finetune_techniques.with_options(task_runner=make_task_runner(runner, 2))(config, base, data)
        return out

    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: storage, PREFECT_RESULTS_PERSIST_BY_DEFAULT: True}):
        rows = fan_out_twice()

    threads = {r["technique"]: r for r in rows["thread"]}
    dask = {r["technique"]: r for r in rows["dask"]}
    assert sorted(threads) == sorted(dask) == ["full", "lora"]
    for name in threads:
        t, d = threads[name], dask[name]
        assert str(tmp_path / "thread") in t["model_dir"] and str(tmp_path / "dask") in d["model_dir"]
        assert d["global_step"] == t["global_step"] > 0
        assert d["best_val_loss"] == pytest.approx(t["best_val_loss"], rel=1e-6, abs=1e-9)
        assert [h["val_loss"] for h in d["history"]] == pytest.approx([h["val_loss"] for h in t["history"]],
                                                                       rel=1e-6, abs=1e-9)
        for key in ("exact_match", "execution_accuracy", "bleu", "n_examples"):
            assert d["metrics"][key] == pytest.approx(t["metrics"][key]), key
        assert _predictions(d["metrics"]) == _predictions(t["metrics"])
    # the two techniques really differ, so equal rows are not a coincidence of the comparison
    assert threads["full"]["best_val_loss"] != threads["lora"]["best_val_loss"]
    # the Dask workers persisted their task results where the flow keeps them
    assert len([p for p in storage.rglob("*") if p.is_file()]) >= 4
