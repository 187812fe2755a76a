"""The compression stage as steps: prune -> export -> quantize -> evaluate, each returning a small dict.

The Prefect flow (``flows/compress.py``) calls these one per task; they take and return paths and
JSON-able dicts only. Each step is idempotent: a pruned model already written with the same settings
is reused, and ONNX artefacts are cached next to their model (:func:`ensure_onnx`).

A *variant* is a model directory served by one backend. Its report row::

    {"variant": "magnitude-0.50/onnx-int8", "backend": "onnx-int8", "model_dir": ..., "size_mb": 31.2,
     "latency_ms_p50": 80.1, "latency_ms_p95": 140.3, "exact_match": 0.41, "execution_accuracy": 0.52,
     "sparsity": 0.5, "params": ..., "n_examples": 120, ...}

``sparsity`` is the share of the source model's encoder/decoder Linear weights that are zero or gone.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from t2sql.compression.config import CompressionConfig
from t2sql.summary import ReportSection, ReportTable

log = logging.getLogger(__name__)

PRUNING_INFO = "pruning.json"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
def split_config(config_dict: dict[str, Any]) -> tuple[CompressionConfig, Any, Any]:
    """(compression, eval, train) settings from a pipeline config dict or a bare ``compression`` section.

    Raises:
        t2sql.config.ConfigError: a pipeline config that does not validate.
        pydantic.ValidationError: a bare compression section that does not validate.
    """
    from t2sql.config import EvalConfig, TrainConfig, load_config

    if "data" in config_dict:
        cfg = load_config(raw=config_dict)
        return cfg.compression, cfg.eval, cfg.train
    section = config_dict.get("compression", config_dict)
    return CompressionConfig.model_validate(section), EvalConfig(), TrainConfig()


# --------------------------------------------------------------------------------------------
# Recovery fine-tune
# --------------------------------------------------------------------------------------------
def recover(model, tokenizer, train_path: str | os.PathLike[str], val_path: str | os.PathLike[str],
            train_cfg: dict[str, Any], epochs: float, max_minutes: float | None, work_dir: str | os.PathLike[str]
            ) -> dict[str, Any] | None:
    """Fine-tune a pruned model briefly with the project's training loop (``t2sql.training.train_model``).

    Pruned weights stay at zero when the model still carries its pruning masks (see
    :func:`t2sql.compression.pruning.global_magnitude_prune` with ``keep_masks=True``).

    Args:
        model: the pruned model, trained in place.
        tokenizer: its tokenizer.
        train_path, val_path: JSONL record files.
        train_cfg: the pipeline's ``train`` section as a dict; ``epochs`` and ``max_minutes`` replace its own.
        epochs: recovery length.
        max_minutes: wall-clock cap.
        work_dir: checkpoints of the recovery run.

    Returns:
        A summary of the run (best validation loss, steps, seconds), or None when the training loop is
        not available.
    """
    try:
        from t2sql.training import train_model
    except ImportError:
        log.warning("t2sql.training.train_model is not available: pruned models are not fine-tuned")
        return None
    from t2sql.config import TrainConfig

    cfg = TrainConfig.model_validate({**train_cfg, "epochs": epochs, "max_minutes": max_minutes})
    result = train_model(model, tokenizer, train_path, val_path, cfg, work_dir, progress=False)
    model.eval()
    facts = result.to_dict() if hasattr(result, "to_dict") else dict(result or {})
    return {k: facts.get(k) for k in ("best_val_loss", "best_step", "global_step", "wall_s", "stopped")}


# --------------------------------------------------------------------------------------------
# Pruning steps
# --------------------------------------------------------------------------------------------
def _reuse(out_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    info_path = out_dir / PRUNING_INFO
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text())
    return info if info.get("settings") == settings else None


def prune_model(model_dir: str | os.PathLike[str], method: str, amount: float, out_dir: str | os.PathLike[str], *,
                mode: str = "uniform", train_path: str | None = None, val_path: str | None = None,
                train_cfg: dict[str, Any] | None = None, recovery_epochs: float = 0.0,
                recovery_max_minutes: float | None = None) -> dict[str, Any]:
    """Prune a model directory and save the result (with an optional recovery fine-tune).

    Args:
        model_dir: the source model.
        method: ``magnitude`` (global unstructured; ``amount`` = target sparsity) or ``ffn``
            (structured feed-forward neurons; ``amount`` = share kept).
        amount: see ``method``.
        out_dir: where the pruned model goes.
        mode: structured mode, ``uniform`` or ``per_layer``.
        train_path, val_path, train_cfg: data and settings of the recovery fine-tune.
        recovery_epochs: 0 for no fine-tune.
        recovery_max_minutes: its wall-clock cap.

    Returns:
        ``{"model_dir", "method", "amount", "sparsity", "params", "source_params", "ffn_widths", "recovery"}``.

    Raises:
        ValueError: unknown method or an amount out of range.
    """
    from t2sql import model_dir as saved
    from t2sql.compression.pruning import METHODS, ffn_widths, linear_sparsity, remove_masks, save_pruned
    from t2sql.modeling import count_parameters

    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; valid: {', '.join(sorted(METHODS))}")
    out = Path(out_dir)
    recovering = recovery_epochs > 0 and train_path is not None and val_path is not None
    settings = {"source": str(Path(model_dir).resolve()), "method": method, "amount": amount, "mode": mode,
                "recovery_epochs": recovery_epochs if recovering else 0.0}
    previous = _reuse(out, settings)
    if previous is not None:
        return previous
    if recovery_epochs > 0 and not recovering:
        log.warning("pruning %s: recovery fine-tune skipped (no train/validation files given)", model_dir)

    model, tokenizer = saved.load(model_dir, "cpu")
    _, source_linear = linear_sparsity(model)
    _, source_params = count_parameters(model)
    METHODS[method](model, amount, mode=mode, keep_masks=recovering)
    recovery = None
    if recovering:
        recovery = recover(model, tokenizer, train_path, val_path, train_cfg or {}, recovery_epochs,
                           recovery_max_minutes, out.parent / f".{out.name}-recovery")
    remove_masks(model)
    zeros, linear = linear_sparsity(model)
    _, params = count_parameters(model)
    info = {
        "model_dir": str(out), "method": method, "amount": amount, "mode": mode if method == "ffn" else None,
        "sparsity": round(1.0 - (linear - zeros) / source_linear, 6), "params": params,
        "source_params": source_params, "ffn_widths": sorted(set(ffn_widths(model).values())),
        "recovery": recovery, "settings": settings,
    }
    save_pruned(model, tokenizer, out, info)
    saved.copy_sidecars(model_dir, out)  # the input/output format the model was trained with
    return info


# --------------------------------------------------------------------------------------------
# Export / quantize steps
# --------------------------------------------------------------------------------------------
def export_model(model_dir: str | os.PathLike[str]) -> str:
    """Export a model to fp32 ONNX in its cache (no-op when up to date). Returns the ONNX directory."""
    from t2sql.compression.onnx_export import ensure_onnx

    return str(ensure_onnx(model_dir, "fp32"))


def quantize_model(model_dir: str | os.PathLike[str], isa: str = "auto", per_channel: bool = True) -> str:
    """Quantize a model's ONNX export to INT8 in its cache (exporting first if needed). Returns the INT8 directory."""
    from t2sql.compression.onnx_export import ensure_onnx

    return str(ensure_onnx(model_dir, "int8", isa=isa, per_channel=per_channel))


# --------------------------------------------------------------------------------------------
# Evaluation step
# --------------------------------------------------------------------------------------------
def _db_resolver(test_path: str | os.PathLike[str]):
    from t2sql.evaluation.evaluate import iter_test_records

    lookup = {}
    for r in iter_test_records(test_path):
        if r.get("db_path"):
            lookup[(str(r.get("question") or ""), str(r.get("context") or ""))] = r["db_path"]
    return lambda question, context: lookup.get((question, context))


def evaluate_variant(model_dir: str | os.PathLike[str], backend: str, test_path: str | os.PathLike[str],
                     eval_cfg: dict[str, Any], out_dir: str | os.PathLike[str], *, variant: str,
                     sparsity: float = 0.0, guided_beams: int = 0, num_threads: int | None = None,
                     int8_isa: str = "auto", per_channel: bool = True, max_examples: int | None = None,
                     max_source_length: int = 512, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Serve a model with one backend and evaluate it exactly like its source model.

    Args:
        model_dir: the model directory.
        backend: a backend name.
        test_path: the test file(s) the source model was evaluated on.
        eval_cfg: the pipeline's ``eval`` section as a dict.
        out_dir: predictions and metrics of this variant.
        variant: the row's name.
        sparsity: share of the source's Linear weights zero or removed.
        guided_beams: more than 1 turns on execution-guided decoding over that many beams.
        num_threads: inference threads.
        int8_isa, per_channel: ONNX INT8 settings.
        max_examples: cap on test examples (overrides the eval section's).
        max_source_length: input truncation, as when the source model was evaluated (``train.max_source_length``).
        extra: more facts for the row.

    Returns:
        The variant's row (see the module docstring), with every metric of the evaluation under ``metrics``.
    """
    from t2sql.config import EvalConfig
    from t2sql.evaluation.evaluate import evaluate_model
    from t2sql.inference.translator import Translator

    cfg = EvalConfig.model_validate({**eval_cfg, **({"max_examples": max_examples} if max_examples else {})})
    guided = guided_beams > 1
    translator = Translator(model_dir, backend, num_threads=num_threads,
                            num_beams=guided_beams if guided else cfg.num_beams,
                            max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, execution_guided=guided,
                            guided_timeout_s=cfg.query_timeout_s, db_resolver=_db_resolver(test_path) if guided else None,
                            int8_isa=int8_isa, per_channel=per_channel, max_source_length=max_source_length)
    metrics = evaluate_model(translator, test_path, cfg, out_dir)
    row = {
        "variant": variant, "backend": translator.backend, "model_dir": str(model_dir),
        "size_mb": round(translator.size_bytes() / 1e6, 2),
        "latency_ms_p50": metrics.get("latency_ms_p50"), "latency_ms_p95": metrics.get("latency_ms_p95"),
        "exact_match": metrics.get("exact_match"), "execution_accuracy": metrics.get("execution_accuracy"),
        "sparsity": sparsity, "n_examples": metrics.get("n_examples"), "execution_guided": guided,
        "num_beams": translator.num_beams if not guided else guided_beams, "precision": translator.info.get("precision"),
        "threads": translator.threads, **(extra or {}), "metrics": metrics,
    }
    if guided:
        row["guided"] = translator.guided_totals  # how often a later beam replaced the best one
    (Path(out_dir) / "variant.json").write_text(json.dumps(row, indent=2, sort_keys=True, default=str))
    return row


def report_sections(variants: list[dict[str, Any]]) -> list[ReportSection]:
    """What the compression stage adds to the run report beside the variants' accuracy and latency.

    Returns:
        A "Compression" section: per variant its backend, precision, sparsity, size and accuracy per
        megabyte; empty when no variant was made.
    """
    if not variants:
        return []
    rows = []
    for v in variants:
        size, acc = v.get("size_mb"), v.get("execution_accuracy")
        rows.append([v.get("variant"), v.get("backend"), v.get("precision"), v.get("sparsity"), size,
                     round(acc / size, 5) if acc is not None and size else None])
    text = ["Sizes are of the weights as each backend serves them; sparsity is the share of the source model's "
            "encoder/decoder Linear weights that are zero or gone."]
    table = ReportTable(columns=["variant", "backend", "precision", "sparsity", "size_mb", "accuracy per MB"],
                        rows=rows, fractions=["sparsity"])
    return [ReportSection(title="Compression", source="compression", text=text, tables=[table])]


def variant_name(model_label: str, backend: str, guided_beams: int = 0) -> str:
    return f"{model_label}/{backend}" + (f"+guided{guided_beams}" if guided_beams > 1 else "")
