"""One fine-tuning run: base model -> technique -> train -> servable export.

The pipeline calls :func:`prepare_base` once, then :func:`finetune` once per technique, so every
technique starts from the same weights and tokenizer and sees the same data.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from t2sql.config import ModelConfig, TechniqueSpec, TrainConfig
from t2sql.io import atomic_write_json, fingerprint, read_jsonl
from t2sql import model_dir as saved
from t2sql.hardware import flush_denormals
from t2sql.model_dir import MODEL_LOCK
from t2sql.modeling import load_base
from t2sql.prompt import PromptOptions, build_source, build_target, save_prompt_options
from t2sql.techniques import get_technique

log = logging.getLogger(__name__)

DONE = "finetune.json"


def _dir_size_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 2)


def prepare_base(model_cfg: ModelConfig, train_path: str | os.PathLike[str], work_dir: str | os.PathLike[str],
                 registry_root: str | os.PathLike[str] = "runs", prompt: PromptOptions | None = None) -> dict[str, Any]:
    """Resolve the base model to a directory every technique loads from.

    A hub model, a local directory or a registered run is used where it is; when a model must be
    built (offline), it is built once with a tokenizer trained on the training data and saved
    under ``work_dir/base/<fingerprint>``. The tokenizer learns from the model inputs and targets
    as ``prompt`` writes them, and keeps the prompt's placeholders whole.

    Returns:
        {"path": model directory, "origin": "local" | "registry" | "hub" | "built", "fingerprint": str}
    """
    ref = model_cfg.base_model
    from t2sql.registry import Registry

    if ref.startswith("run:") or ref == "champion":
        path = Registry(registry_root).resolve(ref)
        return {"path": str(path), "origin": "registry", "fingerprint": fingerprint(str(path.resolve()))}
    if Path(ref).expanduser().is_dir():
        path = Path(ref).expanduser().resolve()
        return {"path": str(path), "origin": "local", "fingerprint": fingerprint(str(path))}
    key = fingerprint(model_cfg.model_dump(mode="json"), str(train_path),
                      *([prompt.model_dump(mode="json")] if prompt is not None else []))
    out = Path(work_dir) / "base" / key
    if (out / "base.json").is_file():
        return json.loads((out / "base.json").read_text())

    def texts():
        for rec in read_jsonl(train_path):
            yield build_source(rec["question"], rec["context"], prompt)
            yield build_target(rec["answer"], rec["question"], rec["context"], prompt)

    model, tok, origin = load_base(model_cfg, texts(), registry_root=registry_root,
                                   extra_tokens=prompt.extra_tokens() if prompt is not None else ())
    if origin == "hub":
        info = {"path": ref, "origin": "hub", "fingerprint": fingerprint(ref)}
    else:
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
        info = {"path": str(out.resolve()), "origin": origin, "fingerprint": key}
    atomic_write_json(out / "base.json", info)
    return info


def finetune(base: dict[str, Any], technique: TechniqueSpec, train_cfg: TrainConfig, data: dict[str, Any],
             out_dir: str | os.PathLike[str], *, prompt: PromptOptions | None = None, progress: bool = True,
             val_metrics_fn=None) -> dict[str, Any]:
    """Fine-tune the base model with one technique and export the servable model.

    Args:
        base: what :func:`prepare_base` returned.
        technique: the technique name and its settings.
        train_cfg: training hyper-parameters.
        data: paths of the prepared ``train``/``validation``/``test`` JSONL files.
        prompt: input/target format, saved with the model.
        out_dir: run directory; ``out_dir/model`` receives the servable model. A finished run is
            returned from ``finetune.json``; an interrupted one resumes from its checkpoint.

    Returns:
        A summary: technique, model_dir, trainable/total parameters, peak RSS, wall time, tokens/s,
        best validation loss, size on disk, history and technique facts.
    """
    import torch

    from t2sql.training import train_model

    out = Path(out_dir)
    if (out / DONE).is_file() and (out / "model").is_dir():
        return json.loads((out / DONE).read_text())
    out.mkdir(parents=True, exist_ok=True)
    module = get_technique(technique.name)
    tcfg = module.Config.model_validate(technique.params)
    t0 = time.perf_counter()
    flush_denormals()  # before this thread's first parallel work starts its worker threads
    with MODEL_LOCK:  # techniques create weights (adapters, quantized layers): not while another thread loads
        torch.manual_seed(train_cfg.seed)  # adapter initialisation is reproducible in any process
        model, tokenizer = saved.load(base["path"])
        model.train()
        model = module.prepare(model, tcfg, train_cfg)
    if val_metrics_fn is None and train_cfg.val_execution_examples > 0 and data.get("validation") \
            and Path(data["validation"]).is_file():
        from t2sql.validation import validation_metrics_fn as make_val_metrics

        val_metrics_fn = make_val_metrics(data["validation"], tokenizer, prompt, n=train_cfg.val_execution_examples,
                                          max_new_tokens=train_cfg.val_max_new_tokens,
                                          max_source_length=train_cfg.max_source_length)
    if hasattr(module, "fit"):
        result = module.fit(model, tokenizer, data, train_cfg, tcfg, out / "train",
                            functools.partial(train_model, prompt=prompt, progress=progress,
                                              val_metrics_fn=val_metrics_fn), prompt=prompt)
    else:
        result = train_model(model, tokenizer, data["train"], data["validation"], train_cfg, out / "train",
                             technique=module, technique_cfg=tcfg, progress=progress, val_metrics_fn=val_metrics_fn,
                             prompt=prompt)
    model_dir = out / "model"
    tmp = out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    module.export(model, tcfg, tmp, tokenizer)
    save_prompt_options(prompt, tmp)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(tmp, model_dir)
    r = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    summary = {
        "technique": technique.name,
        "params": technique.params,
        "model_dir": str(model_dir.resolve()),
        "trainable_params": r.get("trainable_params"),
        "total_params": r.get("total_params"),
        "peak_rss_mb": r.get("peak_rss_mb"),
        "wall_s": round(time.perf_counter() - t0, 2),
        "train_wall_s": r.get("wall_s"),
        "tokens_per_s": r.get("tokens_per_s"),
        "best_val_loss": r.get("best_val_loss"),
        "global_step": r.get("global_step"),
        "epochs_done": r.get("epochs_done"),
        "stopped": r.get("stopped"),
        "resumed_from_step": r.get("resumed_from_step", 0),
        "size_mb": _dir_size_mb(model_dir),
        "history": r.get("history", []),
        "technique_summary": module.summary(model) if hasattr(module, "summary") else {},
    }
    atomic_write_json(out / DONE, summary)
    return summary
