"""The CUDA paths: training with mixed precision, QLoRA's bitsandbytes layers and serving on a GPU.

Marked ``gpu`` (off by default, skipped without a CUDA device): ``pytest -m gpu tests/inference/test_gpu.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_config
from t2sql import pipeline
from t2sql.config import TechniqueSpec, load_config

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu")
    raw = tiny_config(tmp, train={"epochs": 6, "device": "cuda", "precision": "auto", "eval_every_steps": 4,
                                  "early_stopping_patience": 0, "val_execution_examples": 8})
    cfg = load_config(None, raw=raw)
    data = pipeline.prepare(cfg)
    base = pipeline.base_model(cfg, data)
    return cfg, data, base, tmp


def _train(prepared, name: str, params: dict | None = None, **train) -> dict:
    cfg, data, base, tmp = prepared
    spec = TechniqueSpec(name=name, params=params or {}, train=train)
    return pipeline.finetune_technique(pipeline.effective_train(cfg, spec), cfg.prompt, tmp / "work", base, data, spec)


@pytest.mark.parametrize("precision", ["auto", "fp16", "fp32"])
def test_full_finetune_on_gpu_lowers_validation_loss(prepared, precision):
    summary = _train(prepared, "full", precision=precision)
    losses = [h["val_loss"] for h in summary["history"]]
    assert all(math.isfinite(v) for v in losses), losses
    assert min(losses[1:]) < losses[0], losses
    assert "val_execution_accuracy" in summary["history"][-1]


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_qlora_trains_on_gpu_with_bitsandbytes_layers(prepared, quantization):
    pytest.importorskip("bitsandbytes")
    summary = _train(prepared, "qlora", {"r": 4, "alpha": 8, "dropout": 0.0}, quantization=quantization,
                     learning_rate=3e-2)
    losses = [h["val_loss"] for h in summary["history"]]
    assert all(math.isfinite(v) for v in losses), losses
    assert min(losses[1:]) < losses[0], losses
    assert summary["trainable_params"] < summary["total_params"] / 2


@pytest.mark.parametrize("backend", ["torch", "torch-amp"])
def test_translator_serves_on_gpu(prepared, backend):
    from t2sql.inference import Translator

    summary = _train(prepared, "full")
    tr = Translator(summary["model_dir"], backend=backend, device="cuda", max_new_tokens=24)
    assert tr.device.type == "cuda"
    assert next(tr.engine.model.parameters()).device.type == "cuda"
    sql, ms = tr.translate_one("How many clubs are there?", "CREATE TABLE club (Club_ID int, Club_name text)")
    assert isinstance(sql, str) and ms > 0
