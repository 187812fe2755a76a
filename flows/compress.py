"""Compress a trained model into variants and evaluate each like its source.

    python -m flows.compress runs/<run_id>/model configs/quickstart.yaml data/test.jsonl out/compress

For every backend in ``compression.backends`` the source model is served and evaluated; then each
pruned model (``sparsities``: global magnitude, ``structured_keep``: feed-forward neurons) is made,
optionally fine-tuned, exported and quantized as its backends need, and evaluated the same way.
The rows (accuracy, latency, size and sparsity side by side) go to ``<out_dir>/variants.json`` and
are returned for the report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow

from t2sql.compression.variants import split_config, variant_name
from tasks.compress import evaluate_variant_task, export_onnx_task, prune_model_task, quantize_onnx_task


def _prepare_backend(model_dir: str, backend: str, cfg) -> None:
    if backend.startswith("onnx-"):
        export_onnx_task(model_dir)
    if backend == "onnx-int8":
        quantize_onnx_task(model_dir, cfg.int8_isa, cfg.per_channel)


@flow(name="compress-model")
def compress_model(model_dir: str, config_dict: dict[str, Any], test_path: str, out_dir: str,
                   train_path: str | None = None, val_path: str | None = None) -> list[dict[str, Any]]:
    """Produce and evaluate the compressed variants of a model.

    Args:
        model_dir: the trained model directory.
        config_dict: the pipeline configuration as a dict (or just its ``compression`` section).
        test_path: the test file the source model was evaluated on.
        out_dir: where pruned models, per-variant predictions and ``variants.json`` go.
        train_path, val_path: data for the recovery fine-tune of pruned models (skipped without them).

    Returns:
        One row per variant: ``variant, backend, size_mb, latency_ms_p50, latency_ms_p95, exact_match,
        execution_accuracy, sparsity, ...``.
    """
    cfg, eval_cfg, train_cfg = split_config(config_dict)
    eval_dict, train_dict = eval_cfg.model_dump(mode="json"), train_cfg.model_dump(mode="json")
    out = Path(out_dir)
    common = {"num_threads": cfg.num_threads, "int8_isa": cfg.int8_isa, "per_channel": cfg.per_channel,
              "max_examples": cfg.max_examples, "max_source_length": train_cfg.max_source_length}
    rows: list[dict[str, Any]] = []

    for backend in cfg.backends:
        _prepare_backend(model_dir, backend, cfg)
        name = variant_name("source", backend)
        rows.append(evaluate_variant_task(model_dir, backend, test_path, eval_dict, str(out / "eval" / name.replace("/", "_")),
                                          name, **common))
    if cfg.execution_guided_beams > 1 and cfg.backends:
        backend = cfg.backends[0]
        name = variant_name("source", backend, cfg.execution_guided_beams)
        rows.append(evaluate_variant_task(model_dir, backend, test_path, eval_dict,
                                          str(out / "eval" / name.replace("/", "_").replace("+", "_")), name,
                                          guided_beams=cfg.execution_guided_beams, **common))

    pruning = [("magnitude", s, f"magnitude-{s:.2f}") for s in cfg.sparsities]
    pruning += [("ffn", k, f"ffn-keep-{k:.2f}") for k in cfg.structured_keep]
    for method, amount, label in pruning:
        facts = prune_model_task(model_dir, method, amount, str(out / "pruned" / label), mode=cfg.structured_mode,
                                 train_path=train_path, val_path=val_path, train_cfg=train_dict,
                                 recovery_epochs=cfg.recovery_epochs, recovery_max_minutes=cfg.recovery_max_minutes)
        for backend in cfg.pruned_backends:
            _prepare_backend(facts["model_dir"], backend, cfg)
            name = variant_name(label, backend)
            rows.append(evaluate_variant_task(
                facts["model_dir"], backend, test_path, eval_dict, str(out / "eval" / name.replace("/", "_")), name,
                sparsity=facts["sparsity"],
                extra={"params": facts["params"], "pruning": method, "recovered": facts["recovery"] is not None},
                **common))

    out.mkdir(parents=True, exist_ok=True)
    (out / "variants.json").write_text(json.dumps(rows, indent=2, sort_keys=True, default=str))
    return rows


if __name__ == "__main__":
    import yaml

    if len(sys.argv) != 5:
        sys.exit("usage: python -m flows.compress MODEL_DIR CONFIG_YAML TEST_JSONL OUT_DIR")
    model, config_path, test, out_dir = sys.argv[1:]
    result = compress_model(model, yaml.safe_load(Path(config_path).read_text()), test, out_dir)
    for row in result:
        print(json.dumps({k: row[k] for k in ("variant", "size_mb", "latency_ms_p50", "exact_match",
                                              "execution_accuracy", "sparsity")}))
