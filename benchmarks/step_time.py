"""Training step time of a trained model with subnormal floats flushed to zero, and without.

    python benchmarks/step_time.py                       # newest checkpoint under .t2sql/work/finetune
    python benchmarks/step_time.py --checkpoint .t2sql/work/finetune/full-<key>/train/checkpoints/step-00000600.pt

A freshly built model trains at one speed; hundreds of steps later its activations and gradients
hold subnormal floats, which x86 cores compute on far more slowly, and the same step takes twice as
long unless they are flushed to zero (:func:`t2sql.hardware.flush_denormals`, on by default).
This script loads the base model and a training checkpoint (weights and optimizer state), then
times the same random batches in fresh processes: the base model, the trained model with flushing
off, and with it on (the setting must be made before PyTorch starts its worker threads, hence one
process each). The last line is one JSON object with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(args: argparse.Namespace) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import time

    import torch

    import t2sql.hardware as hardware
    from t2sql import model_dir

    if not args.flush:
        torch.set_flush_denormal(False)
        hardware.flush_denormals = lambda: None
    hardware.set_threads(args.threads)
    if not args.flush:
        torch.set_flush_denormal(False)
    from t2sql.training import autocast_context

    model, _ = model_dir.load(args.base)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.01},
                               {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=1e-4)
    if args.checkpoint != "none":
        ck = torch.load(args.checkpoint, weights_only=False, map_location="cpu")
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in ck["trainable"].items():
                named[name].copy_(tensor)
        optim.load_state_dict(ck["optimizer"])
    model.train()
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size

    def step() -> None:
        ids = torch.randint(5, vocab - 1, (args.batch_size, args.source_length), generator=gen)
        labels = torch.randint(5, vocab - 1, (args.batch_size, args.target_length), generator=gen)
        with autocast_context(args.precision, torch.device("cpu")):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    print(json.dumps({"s_per_step": (time.perf_counter() - t0) / args.steps}))


def _newest_checkpoint() -> Path | None:
    found = sorted((ROOT / ".t2sql" / "work" / "finetune").glob("*/train/checkpoints/step-*.pt"),
                   key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _base_of(checkpoint: Path) -> Path:
    summary = checkpoint.parents[2] / "finetune.json"
    if summary.is_file():
        model_dir = Path(json.loads(summary.read_text())["model_dir"])
        if model_dir.is_dir():
            return model_dir
    raise SystemExit(f"no finished model beside {checkpoint}; pass --base")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="a training checkpoint (default: the newest under .t2sql/work/finetune)")
    ap.add_argument("--base", help="model directory of the same shape (default: the run's exported model)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--source-length", type=int, default=200)
    ap.add_argument("--target-length", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--flush", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    checkpoint = Path(args.checkpoint) if args.checkpoint else _newest_checkpoint()
    if checkpoint is None or not checkpoint.is_file():
        raise SystemExit("no checkpoint found: train a model first (t2sql run ...) or pass --checkpoint")
    base = Path(args.base) if args.base else _base_of(checkpoint)
    common = [sys.executable, __file__, "--child", "--base", str(base), "--steps", str(args.steps),
              "--batch-size", str(args.batch_size), "--source-length", str(args.source_length),
              "--target-length", str(args.target_length), "--threads", str(args.threads),
              "--precision", args.precision]
    variants = {"untrained, flushed": ["--checkpoint", "none", "--flush", "1"],
                "trained, not flushed": ["--checkpoint", str(checkpoint), "--flush", "0"],
                "trained, flushed": ["--checkpoint", str(checkpoint), "--flush", "1"]}
    times = {}
    for name, extra in variants.items():
        out = subprocess.run(common + extra, check=True, capture_output=True, text=True, cwd=ROOT).stdout
        times[name] = json.loads(out.strip().splitlines()[-1])["s_per_step"]
        print(f"{name}: {times[name]:.3f} s/step", flush=True)
    print(json.dumps({"checkpoint": str(checkpoint), "precision": args.precision, "threads": args.threads,
                      "trained_unflushed_over_flushed": round(times["trained, not flushed"] / times["trained, flushed"], 3),
                      "trained_flushed_over_untrained": round(times["trained, flushed"] / times["untrained, flushed"], 3),
                      **{k.replace(", ", "_").replace(" ", "_") + "_s_per_step": round(v, 3) for k, v in times.items()}}))


if __name__ == "__main__":
    main()
