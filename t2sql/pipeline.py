"""The pipeline's steps as plain functions over paths and small dicts.

Prefect tasks (``tasks/``) wrap these one to one; each step writes under a work directory keyed
by the fingerprint of everything it depends on, and returns at once when that output exists, so
an unchanged rerun is fast even outside Prefect's cache and a crash resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from t2sql.config import PipelineConfig, TechniqueSpec, config_to_dict, expand_path, registry_root
from t2sql.io import atomic_write_json, atomic_write_text, fingerprint

log = logging.getLogger(__name__)


def _source_stamp(cfg: PipelineConfig) -> list[Any]:
    """Cheap stamp of the data sources: sizes and modification times of local files."""
    stamp: list[Any] = []
    for i, src in enumerate(cfg.data.sources):
        path = Path(expand_path(src.path, f"data.sources.{i}.path"))
        if path.is_file():
            st = path.stat()
            stamp.append((str(path), st.st_size, int(st.st_mtime)))
        elif path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                st = f.stat()
                stamp.append((str(f.relative_to(path)), st.st_size, int(st.st_mtime)))
        else:
            stamp.append(src.path)  # a hub id
    return stamp


def work_dir(cfg: PipelineConfig) -> Path:
    """The work directory as an absolute path (scale-out workers may run elsewhere)."""
    return Path(expand_path(cfg.work_dir, "work_dir")).resolve()


def prepare(cfg: PipelineConfig) -> dict[str, Any]:
    """Load, clean and split the configured sources (cached by config and source files).

    Returns:
        The data layer's paths dict (train/validation/test/rejects, stats, fingerprint).
    """
    from t2sql.data import prepare_data

    key = fingerprint(cfg.data.model_dump(mode="json"), cfg.train.seed, _source_stamp(cfg))
    out = work_dir(cfg) / "data" / key
    done = out / "prepared.json"
    if done.is_file():
        return json.loads(done.read_text())
    result = prepare_data(cfg.data, out, cfg.train.seed)
    atomic_write_json(done, result)
    return result


def explore_data(cfg: PipelineConfig, data: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Exploration report of the prepared data, with token lengths from the base tokenizer."""
    from t2sql.data.explore import explore

    out = Path(data["train"]).parent / "exploration"
    done = out / "exploration.json"
    if done.is_file():
        summary = json.loads(done.read_text())
        summary.setdefault("dir", str(out))
        return summary
    tokenizer = None
    if base is not None:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(base["path"])
        except Exception as exc:  # noqa: BLE001 - exploration still works on whitespace tokens
            log.warning("exploration without the model tokenizer: %s", exc)
    summary = explore(data, out, tokenizer=tokenizer, max_source_length=cfg.train.max_source_length,
                      max_target_length=cfg.train.max_target_length)
    summary["dir"] = str(out)
    return summary


def base_model(cfg: PipelineConfig, data: dict[str, Any]) -> dict[str, Any]:
    """The base model every technique starts from (built once when offline)."""
    from t2sql.finetune import prepare_base

    return prepare_base(cfg.model, data["train"], work_dir(cfg), registry_root(cfg), prompt=cfg.prompt)


def effective_train(cfg: PipelineConfig, technique: TechniqueSpec):
    """The training settings of one technique: the shared ones with its own overrides."""
    from t2sql.config import TrainConfig

    return TrainConfig.model_validate({**cfg.train.model_dump(), **technique.train})


def finetune_technique(train_cfg, prompt, work: str | os.PathLike[str], base: dict[str, Any],
                       data: dict[str, Any], technique: TechniqueSpec) -> dict[str, Any]:
    """Fine-tune one technique; its output directory depends only on what affects it.

    Args:
        train_cfg: the technique's effective ``TrainConfig`` (see :func:`effective_train`).
        prompt: the ``PromptOptions``.
        work: the work directory.
    """
    from t2sql.finetune import finetune

    key = fingerprint(base["fingerprint"], data["fingerprint"], technique.model_dump(mode="json"),
                      train_cfg.model_dump(mode="json"), prompt.model_dump(mode="json"))
    out = Path(work) / "finetune" / f"{technique.name}-{key}"
    result = finetune(base, technique, train_cfg, data, out, prompt=prompt)
    result["key"] = out.name
    return result


def evaluate_model_dir(eval_cfg, work: str | os.PathLike[str], model_dir: str, test_path: str, key: str,
                       backend: str | None = None, max_source_length: int = 512) -> dict[str, Any]:
    """Evaluate a model directory on a test file (cached by model key, test data and eval settings)."""
    from t2sql.evaluation.evaluate import EVALUATION_VERSION, evaluate_model
    from t2sql.inference import Translator

    backend = backend or eval_cfg.backend
    eval_key = fingerprint(key, fingerprint(test_path), eval_cfg.model_dump(mode="json"), backend, max_source_length,
                           EVALUATION_VERSION)
    out = Path(work) / "eval" / eval_key
    done = out / "metrics.json"
    if done.is_file():
        metrics = json.loads(done.read_text())
    else:
        translator = Translator(model_dir, backend=backend, num_beams=eval_cfg.num_beams,
                                max_new_tokens=eval_cfg.max_new_tokens, batch_size=eval_cfg.batch_size,
                                max_source_length=max_source_length, execution_guided=eval_cfg.execution_guided,
                                constrained=eval_cfg.constrained)
        metrics = evaluate_model(translator, test_path, eval_cfg, out)
    metrics["predictions_path"] = str(out / "predictions.jsonl")
    return metrics


def pick_winner(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The technique with the best execution accuracy (then exact match, then validation loss)."""
    def score(r: dict[str, Any]):
        m = r["metrics"]
        return (m.get("execution_accuracy") or 0.0, m.get("exact_match") or 0.0, -(r.get("best_val_loss") or 1e9))

    return max(rows, key=score)


def technique_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One comparison row per technique for the report."""
    out = []
    for r in rows:
        m = r["metrics"]
        out.append({
            "technique": r["technique"], "trainable_params": r.get("trainable_params"),
            "peak_rss_mb": r.get("peak_rss_mb"), "wall_s": r.get("train_wall_s") or r.get("wall_s"),
            "tokens_per_s": r.get("tokens_per_s"), "best_val_loss": r.get("best_val_loss"),
            "exact_match": m.get("exact_match"), "execution_accuracy": m.get("execution_accuracy"),
            "latency_ms_p50": m.get("latency_ms_p50"), "size_mb": r.get("size_mb"),
        })
    return out


def run_summary(winner: dict[str, Any], rows: list[dict[str, Any]], exploration: dict[str, Any] | None = None,
                variants: list[dict[str, Any]] | None = None, rank_sweep: dict[str, Any] | None = None) -> dict[str, Any]:
    """The typed summary of a run (:class:`t2sql.summary.RunSummary`), as the JSON dict tasks pass on.

    Techniques and compression add their own report sections (``report_sections`` hooks).

    Args:
        winner: the winning fine-tune with its test ``metrics``.
        rows: every technique's fine-tune summary with its test ``metrics``.
        exploration: the exploration step's result.
        variants: the compressed variants' rows.
        rank_sweep: what :func:`choose_rank` returned.
    """
    from t2sql.compression.variants import report_sections as compression_sections
    from t2sql.summary import RunSummary
    from t2sql.techniques import report_sections

    summary = RunSummary(
        metrics=winner["metrics"], exploration=exploration or {}, history=winner.get("history", []),
        winner=winner["technique"], techniques=technique_table(rows),
        technique_summaries={r["technique"]: r.get("technique_summary", {}) for r in rows},
        rank_sweep=rank_sweep["results"] if rank_sweep else None,
        chosen_rank=rank_sweep["chosen_rank"] if rank_sweep else None, variants=variants,
        sections=report_sections(rows) + compression_sections(variants or []))
    return summary.model_dump(mode="json")


def run_id_for(cfg: PipelineConfig, winner: dict[str, Any]) -> str:
    return f"{cfg.name}-{fingerprint(winner['key'], config_to_dict(cfg))[:10]}"


def registry_for(cfg: PipelineConfig):
    """The config's registry (:class:`t2sql.registry.Registry`): its root, and its MLflow tracking URI."""
    from t2sql.registry import Registry

    return Registry(registry_root(cfg), tracking_uri=cfg.registry.tracking_uri, model_name=cfg.registry.model_name)


def champion_on_test(cfg: PipelineConfig, data: dict[str, Any]) -> dict[str, Any] | None:
    """The current champion evaluated on this run's test set, so the gate compares like with like."""
    from t2sql.registry import RegistryError

    reg = registry_for(cfg)
    champ_id = reg.champion()
    if champ_id is None:
        return None
    try:
        model_dir = reg.resolve(champ_id)
    except RegistryError as exc:
        log.warning("champion %s cannot be evaluated: %s", champ_id, exc)
        return None
    metrics = evaluate_model_dir(cfg.eval, work_dir(cfg), str(model_dir), data["test"], key=f"champion-{champ_id}",
                                 max_source_length=cfg.train.max_source_length)
    return {"run_id": champ_id, "metrics": metrics}


def register_run(cfg: PipelineConfig, winner: dict[str, Any], summary: dict[str, Any], run_id: str,
                 champion: dict[str, Any] | None = None, data_fingerprint: str | None = None) -> dict[str, Any]:
    """Write the run directory, register it (an MLflow run and model version), and apply the champion gate.

    Args:
        champion: the champion's metrics on the same test set (from :func:`champion_on_test`);
            without it the champion's registered metrics are used.
        data_fingerprint: the prepared data's fingerprint, recorded with the run.

    Returns:
        {"run_id", "run_dir", "promoted", "reason", "version"}.
    """
    from t2sql.io import library_fingerprint
    from t2sql.registry import gate
    from t2sql.report import write_report

    reg = registry_for(cfg)
    run_dir = reg.new_run_dir(run_id)
    result_file = run_dir / "registration.json"
    if result_file.is_file() and reg.is_registered(run_id):
        return json.loads(result_file.read_text())
    model_dst = run_dir / "model"
    if not model_dst.is_dir():
        tmp = run_dir / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(winner["model_dir"], tmp)
        os.replace(tmp, model_dst)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    metrics = dict(winner["metrics"])
    metrics.pop("predictions_path", None)
    atomic_write_json(run_dir / "metrics.json", metrics)
    exploration = summary.get("exploration") or {}
    if exploration.get("dir") and Path(exploration["dir"]).is_dir():
        shutil.copytree(exploration["dir"], run_dir / "exploration", dirs_exist_ok=True)
    if winner["metrics"].get("predictions_path") and Path(winner["metrics"]["predictions_path"]).is_file():
        shutil.copy(winner["metrics"]["predictions_path"], run_dir / "predictions.jsonl")

    champ_id = reg.champion()
    if champion is not None and champion.get("run_id") == champ_id and champ_id != run_id:
        champ_metrics = champion["metrics"]
    else:
        champ_metrics = reg.get(champ_id)["metrics"] if champ_id and champ_id != run_id else None
    promote, reason = gate(metrics, champ_metrics, min_accuracy_gain=cfg.gate.min_accuracy_gain,
                           max_latency_ratio=cfg.gate.max_latency_ratio)
    summary = dict(summary)
    summary["champion"] = {"champion_run": champ_id, "champion_metrics": champ_metrics, "promoted": promote,
                           "reason": reason}
    summary["predictions_path"] = str(run_dir / "predictions.jsonl")
    write_report(run_dir, summary)
    entry = reg.register(run_id, metrics=metrics, config=config_to_dict(cfg), summary=summary,
                         info={"technique": winner["technique"], "config_name": cfg.name,
                               "base_model": cfg.model.base_model},
                         tags={"data_fingerprint": data_fingerprint or "", "library_digest": library_fingerprint()})
    if champ_id == run_id:
        promote, reason = True, "already the champion"
    elif promote:
        reg.promote(run_id, reason=reason)
    else:
        reg.record_decision(run_id, promoted=False, reason=reason)
    out = {"run_id": run_id, "run_dir": str(run_dir.resolve()), "promoted": promote, "reason": reason,
           "version": entry["version"]}
    atomic_write_json(result_file, out)
    return out


def rank_sweep_runs(cfg: PipelineConfig) -> list[tuple[TechniqueSpec, Any]]:
    """(technique spec, train settings) of every run of the rank sweep, on its short fixed budget."""
    from t2sql.techniques.rank_sweep import sweep_ranks

    sweep = cfg.rank_sweep
    lora = next((t for t in cfg.techniques if t.name == sweep.technique), None)
    params = dict(lora.params) if lora is not None else {}
    train = cfg.train.model_copy(update={"max_minutes": sweep.max_minutes, "epochs": max(cfg.train.epochs, 100.0),
                                         "early_stopping_patience": 0})
    runs = []
    for spec in sweep_ranks(sweep.ranks, params, technique=sweep.technique):
        label = f"{sweep.technique}[r={spec['params']['r']}]"
        runs.append((TechniqueSpec(name=spec["name"], label=label, params=spec["params"]), train))
    return runs


def choose_rank(cfg: PipelineConfig, runs: list[dict[str, Any]], out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Pick the smallest rank within tolerance of the best and plot the sweep.

    Args:
        runs: finetune results of the sweep with their validation ``metrics``.

    Returns:
        {"results": [{rank, trainable_params, val_loss, execution_accuracy}], "chosen_rank", "best_rank", "plot"}.
    """
    from t2sql.techniques.rank_sweep import choose_rank as choose, rank_sweep_plot

    rows = [{"rank": int(r["params"]["r"]), "trainable_params": r.get("trainable_params"),
             "val_loss": r.get("best_val_loss"), "execution_accuracy": r["metrics"].get("execution_accuracy"),
             "wall_s": r.get("train_wall_s")} for r in runs]
    chosen = choose(rows, cfg.rank_sweep.tolerance)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot = out / "rank_sweep.png"
    rank_sweep_plot(rows, plot, chosen=chosen["rank"])
    return {"results": sorted(rows, key=lambda r: r["rank"]), "chosen_rank": int(chosen["rank"]),
            "best_rank": chosen.get("best_rank"), "tolerance": cfg.rank_sweep.tolerance, "plot": str(plot)}


def apply_rank(cfg: PipelineConfig, rank: int) -> PipelineConfig:
    """The config with the chosen rank set on the techniques the sweep applies to (alpha/r kept)."""
    specs = []
    for t in cfg.techniques:
        if t.name in cfg.rank_sweep.apply_to:
            params = dict(t.params)
            old_r = params.get("r", 8)
            alpha = params.get("alpha", 16.0)
            params.update({"r": rank, "alpha": alpha * rank / old_r})
            t = t.model_copy(update={"params": params})
        specs.append(t)
    return cfg.model_copy(update={"techniques": specs})
