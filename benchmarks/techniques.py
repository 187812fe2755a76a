"""Peak memory and training speed of each fine-tuning technique, relative to full fine-tuning.

    .venv/bin/python benchmarks/techniques.py --shape quickstart --steps 10

One base model (quickstart-shaped: d_model 256, 3+3 layers; or ``--shape t5-small``: 60M
parameters) is built once with a tokenizer trained on the shipped Spider sample. Each technique then
trains it for the same batches (length-grouped, dynamically padded, as the training loop does) in its
own fresh subprocess, which reports its peak RSS and the target tokens per second over the timed
steps (after ``--warmup`` untimed ones). Iterative refinement is left out: each of its rounds costs
what its inner technique costs.

The last line is one JSON object: ``{"lora": {"peak_rss_ratio": ..., "tokens_per_s_ratio": ...}, ...}``
(ratios to full fine-tuning measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPIDER = ROOT / "data" / "spider_sample"

# (row name, technique, params, train.quantization)
ROWS = [
    ("full", "full", {}, "nf4"),
    ("lora", "lora", {"r": 8, "alpha": 16, "target_modules": ["q", "v"]}, "nf4"),
    ("qlora", "qlora", {"r": 8, "alpha": 16, "target_modules": ["q", "v"]}, "nf4"),
    ("qlora_int8", "qlora", {"r": 8, "alpha": 16, "target_modules": ["q", "v"]}, "int8"),
    ("adalora", "adalora", {"init_r": 12, "target_r": 8, "alpha": 16, "target_modules": ["q", "v"]}, "nf4"),
    ("bitnet", "bitnet", {"warmup_steps": 0}, "nf4"),
]

SHAPES = {
    "quickstart": {"d_model": 256, "d_ff": 1024, "d_kv": 64, "num_layers": 3, "num_decoder_layers": 3, "num_heads": 4,
                   "vocab_size": 4096},
    "t5-small": {"d_model": 512, "d_ff": 2048, "d_kv": 64, "num_layers": 6, "num_decoder_layers": 6, "num_heads": 8,
                 "vocab_size": 32128},
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_base(shape: str, out: Path) -> dict[str, str]:
    """Prepare the Spider sample and save a randomly initialised base model with its tokenizer."""
    from transformers import T5Config, T5ForConditionalGeneration

    from t2sql.config import DataConfig, SourceConfig
    from t2sql.data.preprocess import prepare_data
    from t2sql.io import read_jsonl
    from t2sql.modeling import train_tokenizer
    from t2sql.prompt import build_source

    data = prepare_data(DataConfig(sources=[SourceConfig(kind="spider", path=str(SPIDER))]), out / "data", seed=0)
    texts = [t for r in read_jsonl(data["train"]) for t in (build_source(r["question"], r["context"]), r["answer"])]
    dims = dict(SHAPES[shape])
    tok = train_tokenizer(texts, vocab_size=4096)
    vocab = max(dims.pop("vocab_size"), len(tok))
    config = T5Config(vocab_size=vocab, dropout_rate=0.1, feed_forward_proj="relu", pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id, **dims)
    model = T5ForConditionalGeneration(config)
    model.save_pretrained(out / "base", safe_serialization=True)
    tok.save_pretrained(out / "base")
    return {"model": str(out / "base"), "train": data["train"]}


def worker(args: argparse.Namespace) -> None:
    """Train one technique for warmup + steps batches and print one JSON line of measurements."""
    import torch

    from t2sql.config import TrainConfig
    from t2sql.model_dir import load as load_model
    from t2sql.modeling import count_parameters
    from t2sql.hardware import set_threads
    from t2sql.techniques import get_technique
    from t2sql.training import collate, encode_file, length_grouped_batches, seq2seq_loss

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    set_threads(args.threads)
    torch.manual_seed(0)
    rss_start = _rss_mb()
    train_cfg = TrainConfig(device="cpu", quantization=args.quantization, batch_size=args.batch_size,
                            max_source_length=args.max_source_length, max_target_length=args.max_target_length)
    model, tok = load_model(args.model_dir)
    model.train()
    technique = get_technique(args.technique)
    cfg = technique.Config.model_validate(json.loads(args.params))
    model = technique.prepare(model, cfg, train_cfg)
    model.train()
    trainable, total = count_parameters(model)
    enc = encode_file(args.train, tok, args.max_source_length, args.max_target_length)
    lengths = [len(s) + len(t) for s, t in zip(enc.sources, enc.targets)]
    batches = length_grouped_batches(lengths, args.batch_size, seed=0)
    n_steps = args.warmup + args.steps
    batches = (batches * (n_steps // len(batches) + 1))[:n_steps]
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4)
    device = torch.device("cpu")
    tokens, t_start = 0, None
    for step, idx in enumerate(batches, start=1):
        if step == args.warmup + 1:
            t_start = time.perf_counter()
        batch = collate(enc, idx, tok.pad_token_id, device)
        loss, n_tok = seq2seq_loss(model, batch)
        if hasattr(technique, "regularization") and (reg := technique.regularization(model)) is not None:
            loss = loss + reg
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        if hasattr(technique, "on_optimizer_step"):
            technique.on_optimizer_step(model, step, n_steps)
        optim.zero_grad(set_to_none=True)
        if step > args.warmup:
            tokens += n_tok
    elapsed = time.perf_counter() - t_start
    print(json.dumps({"tokens_per_s": tokens / elapsed, "step_s": elapsed / args.steps, "peak_rss_mb": _rss_mb(),
                      "rss_before_model_mb": rss_start, "trainable_params": trainable, "total_params": total}))


def run_row(base: dict[str, str], technique: str, params: dict, quantization: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--model-dir", base["model"], "--train", base["train"],
           "--technique", technique, "--params", json.dumps(params), "--quantization", quantization,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
           "--max-source-length", str(args.max_source_length), "--max-target-length", str(args.max_target_length)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise RuntimeError(f"{technique} worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="quickstart")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per technique")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-source-length", type=int, default=256)
    parser.add_argument("--max-target-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="default: physical cores")
    parser.add_argument("--repeats", type=int, default=1, help="runs per technique; the fastest is kept")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--technique", help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--quantization", default="nf4", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return

    with tempfile.TemporaryDirectory(prefix="t2sql-bench-techniques-") as tmp:
        base = build_base(args.shape, Path(tmp))
        measured: dict[str, dict] = {}
        for _ in range(args.repeats):
            for row, technique, params, quantization in ROWS:
                m = run_row(base, technique, params, quantization, args)
                if row not in measured or m["tokens_per_s"] > measured[row]["tokens_per_s"]:
                    measured[row] = m
    full = measured["full"]
    print(f"shape {args.shape}, {args.steps} timed steps of batch {args.batch_size} after {args.warmup} warm-up, "
          f"each technique in a fresh process")
    print(f"{'technique':<11} {'trainable':>11} {'total':>11} {'step s':>7} {'tok/s':>8} {'peak MB':>8} "
          f"{'tok/s x':>8} {'peak x':>7} {'model+train MB x':>17}")
    full_delta = full["peak_rss_mb"] - full["rss_before_model_mb"]
    ratios = {}
    for row, *_ in ROWS:
        m = measured[row]
        delta = m["peak_rss_mb"] - m["rss_before_model_mb"]
        tps_ratio = m["tokens_per_s"] / full["tokens_per_s"]
        rss_ratio = m["peak_rss_mb"] / full["peak_rss_mb"]
        print(f"{row:<11} {m['trainable_params']:>11,} {m['total_params']:>11,} {m['step_s']:>7.3f} "
              f"{m['tokens_per_s']:>8.0f} {m['peak_rss_mb']:>8.0f} {tps_ratio:>8.2f} {rss_ratio:>7.2f} "
              f"{delta / full_delta:>17.2f}")
        if row != "full":
            ratios[row] = {"peak_rss_ratio": round(rss_ratio, 3), "tokens_per_s_ratio": round(tps_ratio, 3)}
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
