"""The ``t2sql-pipeline`` flow: data -> base model -> one fine-tune per technique -> evaluate ->
compress -> report -> register.

    t2sql run --config configs/quickstart.yaml            # from the command line
    python -m flows.pipeline configs/quickstart.yaml      # the same, directly

Every task passes paths and small dicts, is cached on its inputs and source, and its t2sql
function also skips work whose output already exists, so an unchanged rerun is quick and a
crashed run resumes.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger

from flows.runners import make_task_runner
from t2sql import pipeline as steps
from t2sql.config import load_config
from tasks.data import explore_data, prepare_data
from tasks.evaluate import evaluate, evaluate_champion
from tasks.register import publish_artifacts, register
from tasks.train import base_model, finetune

FLOW_NAME = "t2sql-pipeline"


@flow(name="t2sql-finetune-techniques", log_prints=True)
def finetune_techniques(config: dict[str, Any], base: dict[str, Any], data: dict[str, Any]) -> list[dict[str, Any]]:
    """Fan out one fine-tune and one evaluation per technique (and grid point), then gather."""
    cfg = load_config(raw=config)
    work = str(steps.work_dir(cfg))
    futures = []
    for spec in cfg.expanded_techniques():
        train_cfg = steps.effective_train(cfg, spec)
        ft = finetune.submit(train_cfg.model_dump(mode="json"), cfg.prompt.model_dump(mode="json"), work, base, data,
                             spec.model_dump(mode="json"))
        futures.append((spec, train_cfg, ft))
    evals = [(spec, ft, evaluate.submit(cfg.eval.model_dump(mode="json"), work, ft, data["test"], None,
                                        train_cfg.max_source_length))
             for spec, train_cfg, ft in futures]
    return [{**ft.result(), "technique": spec.label or spec.name, "metrics": ev.result()} for spec, ft, ev in evals]


@flow(name="t2sql-estimate-rank", log_prints=True)
def estimate_rank(config: dict[str, Any], base: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Short LoRA runs at every configured rank in parallel; the smallest rank within tolerance wins."""
    cfg = load_config(raw=config)
    work = str(steps.work_dir(cfg))
    val_eval = cfg.eval.model_copy(update={"max_examples": cfg.rank_sweep.val_examples}).model_dump(mode="json")
    futures = []
    for spec, train_cfg in steps.rank_sweep_runs(cfg):
        ft = finetune.submit(train_cfg.model_dump(mode="json"), cfg.prompt.model_dump(mode="json"), work, base, data,
                             spec.model_dump(mode="json"))
        futures.append((ft, evaluate.submit(val_eval, work, ft, data["validation"], None,
                                            train_cfg.max_source_length)))
    runs = [{**ft.result(), "metrics": ev.result()} for ft, ev in futures]
    return steps.choose_rank(cfg, runs, steps.work_dir(cfg) / "rank_sweep" / base["fingerprint"])


@flow(name=FLOW_NAME, log_prints=True)
def t2sql_pipeline(config_path: str | None = None, overrides: list[str] | None = None,
                   config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, compare, evaluate and register a text-to-SQL model.

    Args:
        config_path: a YAML pipeline configuration (e.g. configs/quickstart.yaml).
        overrides: ``dotted.key=value`` settings applied on top (e.g. ``train.epochs=2``).
        config: the configuration as a mapping, instead of a file.

    Returns:
        {"run_id", "run_dir", "promoted", "reason", "metrics", "techniques"}.
    """
    logger = get_run_logger()
    cfg = load_config(config_path, overrides, raw=config) if config is not None else load_config(config_path, overrides)
    raw = cfg.model_dump(mode="json")

    data = prepare_data(raw)
    logger.info("data: %s", {k: v for k, v in data["stats"].items() if k in ("splits", "rejects_total", "total")})
    base = base_model(raw, data)
    logger.info("base model: %s (%s)", base["path"], base["origin"])
    exploration = explore_data(raw, data, base)

    runner = make_task_runner(cfg.runner, cfg.max_workers, cfg.dask_address)
    rank_sweep = None
    if cfg.rank_sweep.enabled:
        rank_sweep = estimate_rank.with_options(task_runner=make_task_runner(cfg.runner, cfg.max_workers,
                                                                             cfg.dask_address))(raw, base, data)
        logger.info("rank sweep chose r=%s (best r=%s)", rank_sweep["chosen_rank"], rank_sweep["best_rank"])
        cfg = steps.apply_rank(cfg, rank_sweep["chosen_rank"])
        raw = cfg.model_dump(mode="json")
    rows = finetune_techniques.with_options(task_runner=runner)(raw, base, data)
    winner = steps.pick_winner(rows)
    table = steps.technique_table(rows)
    logger.info("winner: %s (execution accuracy %s)", winner["technique"], winner["metrics"].get("execution_accuracy"))

    variants: list[dict[str, Any]] = []
    if cfg.compression.enabled:
        from flows.compress import compress_model

        variants = compress_model(winner["model_dir"], raw, data["test"],
                                  str(steps.work_dir(cfg) / "compress" / winner["key"]),
                                  train_path=data["train"], val_path=data["validation"])

    champion = evaluate_champion(raw, data)
    summary = steps.run_summary(winner, rows, exploration, variants, rank_sweep)
    run_id = steps.run_id_for(cfg, winner)
    registration = register(raw, winner, summary, run_id, champion, data.get("fingerprint"))
    publish_artifacts(registration, table)
    logger.info("run %s registered at %s (promoted: %s, %s)", registration["run_id"], registration["run_dir"],
                registration["promoted"], registration["reason"])
    return {**registration, "metrics": {k: v for k, v in winner["metrics"].items() if not isinstance(v, (dict, list))},
            "techniques": table}


if __name__ == "__main__":
    print(t2sql_pipeline(sys.argv[1], sys.argv[2:])["run_dir"])
