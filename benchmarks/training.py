"""The pipeline's training against a plain ``Seq2SeqTrainer`` script, same model, data and budget.

    python benchmarks/training.py                         # Spider sample shipped in the repo, 3 min each
    python benchmarks/training.py --minutes 10 --config configs/spider.yaml   # with T2SQL_DATA_DIR set

The baseline is what most tutorials do: the plain question + schema prompt, every batch padded to
the maximum lengths, a constant learning rate, batch 8. The pipeline run uses the config as it is
(its prompt format included). Both runs start from the same freshly built model and tokenizer and stop
at the same wall-clock budget. Printed side by side: non-padding target tokens per second and
validation execution accuracy; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def baseline_train(base_dir: Path, data: dict, out_dir: Path, minutes: float, max_src: int, max_tgt: int,
                   threads: int) -> dict:
    """Seq2SeqTrainer, batches padded to the max lengths, constant lr 1e-3, batch 8, stopped at the budget."""
    import torch
    from datasets import load_dataset
    from transformers import (DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback)

    from t2sql.model_dir import load as load_model
    from t2sql.prompt import build_source

    torch.set_num_threads(threads)
    model, tok = load_model(base_dir)
    model.train()
    ds = load_dataset("json", data_files={"train": data["train"]})["train"]

    def encode(batch):
        enc = tok([build_source(q, c) for q, c in zip(batch["question"], batch["context"])],
                  max_length=max_src, truncation=True, padding="max_length")
        enc["labels"] = tok(batch["answer"], max_length=max_tgt, truncation=True, padding="max_length")["input_ids"]
        enc["labels"] = [[t if t != tok.pad_token_id else -100 for t in row] for row in enc["labels"]]
        return enc

    ds = ds.map(encode, batched=True, remove_columns=ds.column_names)
    counted = {"tokens": 0}
    base_collator = DataCollatorForSeq2Seq(tok, model=model, padding="max_length", max_length=max_src)

    def collator(features):
        batch = base_collator(features)
        counted["tokens"] += int((batch["labels"] != -100).sum())
        return batch

    class Budget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if time.perf_counter() - self.t0 > minutes * 60:
                control.should_training_stop = True

    args = Seq2SeqTrainingArguments(output_dir=str(out_dir / "hf"), per_device_train_batch_size=8, learning_rate=1e-3,
                                    lr_scheduler_type="constant", num_train_epochs=100, save_strategy="no",
                                    logging_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0,
                                    disable_tqdm=True, seed=42)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=ds, data_collator=collator, callbacks=[Budget()])
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    model.save_pretrained(out_dir / "model")
    tok.save_pretrained(out_dir / "model")
    return {"tokens_per_s": counted["tokens"] / wall, "wall_s": wall, "steps": trainer.state.global_step,
            "model_dir": str(out_dir / "model")}


def pipeline_train(base_dir: Path, data: dict, out_dir: Path, train_cfg, prompt) -> dict:
    from t2sql.config import TechniqueSpec
    from t2sql.finetune import finetune

    result = finetune({"path": str(base_dir), "fingerprint": "bench"}, TechniqueSpec(name="full"), train_cfg, data,
                      out_dir, prompt=prompt, progress=False)
    return {"tokens_per_s": result["tokens_per_s"], "wall_s": result["train_wall_s"], "steps": result["global_step"],
            "model_dir": result["model_dir"]}


def val_execution_accuracy(model_dir: str, val_path: str, n: int, out_dir: Path, max_src: int) -> dict:
    from t2sql.config import EvalConfig
    from t2sql.evaluation.evaluate import evaluate_model
    from t2sql.inference import Translator

    tr = Translator(model_dir, max_new_tokens=128, batch_size=32, max_source_length=max_src)
    m = evaluate_model(tr, val_path, EvalConfig(max_examples=n, batch_size=32), out_dir)
    return {"execution_accuracy": m["execution_accuracy"], "exact_match": m["exact_match"],
            "execution_success_rate": m["execution_success_rate"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget of each run")
    ap.add_argument("--val-examples", type=int, default=150)
    ap.add_argument("--max-source-length", type=int, default=512, help="what the baseline pads to")
    ap.add_argument("--max-target-length", type=int, default=128)
    ap.add_argument("--set", action="append", default=[], help="config overrides for the pipeline run")
    args = ap.parse_args()

    from t2sql import pipeline
    from t2sql.config import load_config
    from t2sql.hardware import set_threads

    cfg = load_config(args.config, args.set + [f"train.max_minutes={args.minutes}", "train.epochs=1000",
                                               f"train.max_source_length={args.max_source_length}",
                                               f"train.max_target_length={args.max_target_length}",
                                               "train.early_stopping_patience=0"])
    threads = set_threads(cfg.train.num_threads)
    work = Path(tempfile.mkdtemp(prefix="t2sql-bench-train-"))
    try:
        cfg = cfg.model_copy(update={"work_dir": str(work / "work")})
        data = pipeline.prepare(cfg)
        base = pipeline.base_model(cfg, data)
        print(f"data: {data['stats']['splits']['train']['records']} train / "
              f"{data['stats']['splits']['validation']['records']} validation; base {base['origin']}; "
              f"{threads} threads; budget {args.minutes} min each", flush=True)
        ours = pipeline_train(Path(base["path"]), data, work / "ours", cfg.train, cfg.prompt)
        print(f"pipeline: {ours['steps']} steps, {ours['tokens_per_s']:.0f} target tok/s", flush=True)
        plain = baseline_train(Path(base["path"]), data, work / "plain", args.minutes, args.max_source_length,
                               args.max_target_length, threads)
        print(f"plain Seq2SeqTrainer: {plain['steps']} steps, {plain['tokens_per_s']:.0f} target tok/s", flush=True)
        ours_ev = val_execution_accuracy(ours["model_dir"], data["validation"], args.val_examples, work / "ev1",
                                         args.max_source_length)
        plain_ev = val_execution_accuracy(plain["model_dir"], data["validation"], args.val_examples, work / "ev2",
                                          args.max_source_length)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratio = ours["tokens_per_s"] / max(plain["tokens_per_s"], 1e-9)
    print("\n| run | steps | target tok/s | val EX | val EM | val executes |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r, ev in (("pipeline", ours, ours_ev), ("plain Seq2SeqTrainer", plain, plain_ev)):
        print(f"| {name} | {r['steps']} | {r['tokens_per_s']:.0f} | {ev['execution_accuracy']:.3f} | "
              f"{ev['exact_match']:.3f} | {ev['execution_success_rate']:.3f} |")
    print(f"tokens/s ratio: {ratio:.2f}x")
    print(json.dumps({"train_tokens_per_s_ratio": round(ratio, 3),
                      "train_tokens_per_s": round(ours["tokens_per_s"], 1),
                      "baseline_train_tokens_per_s": round(plain["tokens_per_s"], 1),
                      "val_execution_accuracy": ours_ev["execution_accuracy"],
                      "baseline_val_execution_accuracy": plain_ev["execution_accuracy"],
                      "val_exact_match": ours_ev["exact_match"], "baseline_val_exact_match": plain_ev["exact_match"],
                      "minutes_each": args.minutes}))


if __name__ == "__main__":
    main()
