"""Prefect tasks of the compression stage: prune -> export -> quantize -> evaluate.

Each task calls one function of :mod:`t2sql.compression.variants` and passes paths and small dicts.
The functions are idempotent (a pruned model with the same settings and up-to-date ONNX artefacts are
reused), so a retried or re-run flow does not redo finished work.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from t2sql.compression import variants


@task(name="prune-model", retries=1, retry_delay_seconds=5, task_run_name="prune-{method}-{amount}")
def prune_model_task(model_dir: str, method: str, amount: float, out_dir: str, mode: str = "uniform",
                     train_path: str | None = None, val_path: str | None = None,
                     train_cfg: dict[str, Any] | None = None, recovery_epochs: float = 0.0,
                     recovery_max_minutes: float | None = None) -> dict[str, Any]:
    """Prune a model directory (optionally fine-tuning it after); returns the pruning facts."""
    return variants.prune_model(model_dir, method, amount, out_dir, mode=mode, train_path=train_path,
                                val_path=val_path, train_cfg=train_cfg, recovery_epochs=recovery_epochs,
                                recovery_max_minutes=recovery_max_minutes)


@task(name="export-onnx", retries=1, retry_delay_seconds=5)
def export_onnx_task(model_dir: str) -> str:
    """Export a model to fp32 ONNX; returns the ONNX directory."""
    return variants.export_model(model_dir)


@task(name="quantize-onnx", retries=1, retry_delay_seconds=5)
def quantize_onnx_task(model_dir: str, isa: str = "auto", per_channel: bool = True) -> str:
    """Quantize a model's ONNX export to dynamic INT8; returns the INT8 directory."""
    return variants.quantize_model(model_dir, isa, per_channel)


@task(name="evaluate-variant", retries=1, retry_delay_seconds=5, task_run_name="evaluate-{variant}")
def evaluate_variant_task(model_dir: str, backend: str, test_path: str, eval_cfg: dict[str, Any], out_dir: str,
                          variant: str, sparsity: float = 0.0, guided_beams: int = 0, num_threads: int | None = None,
                          int8_isa: str = "auto", per_channel: bool = True, max_examples: int | None = None,
                          max_source_length: int = 512, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Serve a model with one backend and evaluate it; returns the variant's report row."""
    return variants.evaluate_variant(model_dir, backend, test_path, eval_cfg, out_dir, variant=variant,
                                     sparsity=sparsity, guided_beams=guided_beams, num_threads=num_threads,
                                     int8_isa=int8_isa, per_channel=per_channel, max_examples=max_examples,
                                     max_source_length=max_source_length, extra=extra)
