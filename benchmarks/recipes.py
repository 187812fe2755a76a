"""The CPU recipes beside the plain script, same data, model shape and wall-clock budget.

    T2SQL_DATA_DIR=../shared/data python benchmarks/recipes.py --recipe create_context
    T2SQL_DATA_DIR=../shared/data python benchmarks/recipes.py --recipe spider --minutes 25
    python benchmarks/recipes.py --recipe spider --minutes 2 --set data.sources.0.path=data/spider_sample

Runs, each from a freshly built model of the recipe's shape:
- ``plain``: the plain script of ``benchmarks/training.py`` (``Seq2SeqTrainer``, batches padded to the
  maximum lengths, constant learning rate, batch 8) on the plain prompt (CREATE TABLE text, real SQL);
- ``loop``: the pipeline's training loop on the plain prompt (optional, ``--runs plain,loop,recipe``);
- ``recipe``: the recipe config as shipped (placeholder prompt, its schedule and batch sizes).

Printed side by side: non-padding target tokens per second, execution accuracy and the share of
predictions that run, on the validation and the test split (databases never seen in training),
measured with the evaluation module (:func:`t2sql.evaluation.evaluate_model`); then the recipe's
learning curve (validation loss and execution accuracy against time). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Idle OpenMP threads sleep instead of spinning: on a CPU shared with other work, spinning threads
# made a 2-thread training step 3-10x slower than a 1-thread one (docs/recipes.md). Read by the
# OpenMP runtime when torch loads, so it is set before any import of torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

RECIPES = {"create_context": ROOT / "configs" / "create_context_cpu.yaml", "spider": ROOT / "configs" / "spider_cpu.yaml"}


def _load_plain_script():
    spec = importlib.util.spec_from_file_location("bench_training", ROOT / "benchmarks" / "training.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluate_split(model_dir: str, path: str, n: int | None, out_dir: Path, max_src: int, eval_cfg) -> dict:
    """Execution accuracy of a model directory on the first ``n`` records of a split.

    Decoded as the pipeline's evaluation does with ``eval_cfg`` (beams, execution-guided decoding).
    """
    from t2sql import pipeline

    cfg = eval_cfg.model_copy(update={"max_examples": n})
    m = pipeline.evaluate_model_dir(cfg, out_dir, model_dir, path, key=Path(model_dir).parent.name,
                                    max_source_length=max_src)
    return {"execution_accuracy": m["execution_accuracy"], "execution_success_rate": m["execution_success_rate"],
            "exact_match": m["exact_match"], "n": m["n_examples"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", choices=sorted(RECIPES), required=True)
    ap.add_argument("--minutes", type=float, default=25.0, help="training budget of each run")
    ap.add_argument("--runs", default="plain,recipe", help="comma-separated: plain, loop, recipe")
    ap.add_argument("--val-examples", type=int, default=None, help="validation records evaluated per run (default all)")
    ap.add_argument("--test-examples", type=int, default=None, help="test records evaluated per run (default all)")
    ap.add_argument("--set", action="append", default=[], help="config overrides, e.g. train.num_threads=1")
    ap.add_argument("--keep", help="keep the work directory here (default: a temporary one, removed)")
    args = ap.parse_args()
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = sorted(set(runs) - {"plain", "loop", "recipe"})
    if unknown:
        ap.error(f"unknown runs: {', '.join(unknown)}")

    from t2sql import pipeline
    from t2sql.config import EvalConfig, TechniqueSpec, load_config
    from t2sql.finetune import finetune, prepare_base
    from t2sql.hardware import set_threads
    from t2sql.validation import validation_metrics_fn

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="t2sql-bench-recipes-"))
    cfg = load_config(RECIPES[args.recipe], args.set + [f"train.max_minutes={args.minutes}",
                                                        f"work_dir={work / 'work'}"])
    threads = set_threads(cfg.train.num_threads)
    max_src, max_tgt, max_new = cfg.train.max_source_length, cfg.train.max_target_length, cfg.eval.max_new_tokens
    load = os.getloadavg()
    results: dict[str, dict] = {}
    history: list[dict] = []
    try:
        data = pipeline.prepare(cfg)
        splits = {s: data["stats"]["splits"][s]["records"] for s in ("train", "validation", "test")}
        print(f"recipe {args.recipe}: {splits}; {threads} threads; budget {args.minutes} min each; "
              f"load average {load[0]:.2f}", flush=True)
        root = pipeline.registry_root(cfg)
        for run in runs:
            t0 = time.perf_counter()
            prompt = cfg.prompt if run == "recipe" else None
            base = prepare_base(cfg.model, data["train"], pipeline.work_dir(cfg), root, prompt=prompt)
            base_dir = Path(base["path"])
            if run == "plain":
                plain = _load_plain_script()
                r = plain.baseline_train(base_dir, data, work / run, args.minutes, max_src, max_tgt, threads)
                trained = {"tokens_per_s": r["tokens_per_s"], "steps": r["steps"], "model_dir": r["model_dir"]}
            else:
                fn = validation_metrics_fn(data["validation"], base_dir, prompt, max_new_tokens=max_new,
                                           max_source_length=max_src) if run == "recipe" else None
                s = finetune(base, TechniqueSpec(name="full"), cfg.train, data, work / run, prompt=prompt,
                             progress=False, val_metrics_fn=fn)
                trained = {"tokens_per_s": s["tokens_per_s"], "steps": s["global_step"], "model_dir": s["model_dir"]}
                if run == "recipe":
                    history = s["history"]
            print(f"{run}: {trained['steps']} steps, {trained['tokens_per_s']:.0f} target tok/s "
                  f"({time.perf_counter() - t0:.0f} s with data and base)", flush=True)
            # The recipe is scored as it is shipped (its eval: section); the other runs greedily.
            eval_cfg = cfg.eval if run == "recipe" else EvalConfig(batch_size=32, max_new_tokens=max_new)
            val = evaluate_split(trained["model_dir"], data["validation"], args.val_examples, work / f"{run}-val",
                                 max_src, eval_cfg)
            test = evaluate_split(trained["model_dir"], data["test"], args.test_examples, work / f"{run}-test",
                                  max_src, eval_cfg)
            results[run] = {**trained, "val": val, "test": test}
            print(f"{run}: val EX {val['execution_accuracy']:.3f} (runs {val['execution_success_rate']:.3f}), "
                  f"test EX {test['execution_accuracy']:.3f} (runs {test['execution_success_rate']:.3f}, "
                  f"n={test['n']})", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print("\n| run | steps | target tok/s | val EX | val runs | test EX | test runs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for run, r in results.items():
        print(f"| {run} | {r['steps']} | {r['tokens_per_s']:.0f} | {r['val']['execution_accuracy']:.3f} | "
              f"{r['val']['execution_success_rate']:.3f} | {r['test']['execution_accuracy']:.3f} | "
              f"{r['test']['execution_success_rate']:.3f} |")
    if history:
        print("\nrecipe learning curve:\n| elapsed s | step | val loss | val EX (sample) | val runs (sample) |")
        print("| --- | --- | --- | --- | --- |")
        for h in history:
            print(f"| {h['elapsed_s']:.0f} | {h['step']} | {h['val_loss']:.3f} | {h.get('val_execution_accuracy', '')} | "
                  f"{h.get('val_execution_success', '')} |")
    summary = {"recipe": args.recipe, "minutes_each": args.minutes, "threads": threads,
               "load_average_at_start": round(load[0], 2), "load_average_at_end": round(os.getloadavg()[0], 2)}
    for run, r in results.items():
        summary[f"{run}_train_tokens_per_s"] = round(r["tokens_per_s"], 1)
        summary[f"{run}_val_execution_accuracy"] = r["val"]["execution_accuracy"]
        summary[f"{run}_test_execution_accuracy"] = r["test"]["execution_accuracy"]
        summary[f"{run}_test_execution_success_rate"] = r["test"]["execution_success_rate"]
    if "recipe" in results and "plain" in results:
        summary["tokens_per_s_ratio"] = round(results["recipe"]["tokens_per_s"] /
                                              max(results["plain"]["tokens_per_s"], 1e-9), 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
