"""What dropout costs a CPU training step: the same model and batches with dropout on and off.

    python benchmarks/dropout_cost.py                   # the spider_cpu model shape, bf16 autocast where the CPU has it
    python benchmarks/dropout_cost.py --config configs/create_context_cpu.yaml --precision fp32

Dropout draws one random number per activation (``aten::bernoulli_``), and PyTorch draws them on
one core with its Mersenne Twister: for a small T5 on 2 cores that is a large share of the step,
larger than the matrix products, which AMX/AVX-512 make cheap. The script builds the config's
model three times (``dropout_rate`` as configured; the same with no dropout on the attention
weights, the largest tensors masks are drawn for; and no dropout), times training steps on the same random
batches alternately (so load on the machine hits them alike), profiles one step of each, and
prints seconds per step, the share of the step spent drawing dropout masks, and the ratio. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "spider_cpu.yaml"))
    ap.add_argument("--dropout", type=float, help="the rate compared with 0 (default: the config's, else 0.1)")
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--source-length", type=int, default=140)
    ap.add_argument("--target-length", type=int, default=28)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers.models.t5.modeling_t5 import T5Attention

    from t2sql.config import load_config
    from t2sql.modeling import build_t5
    from t2sql.hardware import flush_denormals, set_threads
    from t2sql.training import autocast_context
    from t2sql.hardware import cpu_supports_bf16

    set_threads(args.threads)
    flush_denormals()
    cfg = load_config(args.config)
    rate = args.dropout if args.dropout is not None else (cfg.model.dropout_rate or 0.1)
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if cpu_supports_bf16() else "fp32"

    class _Tok:  # build_t5 reads the vocabulary size and special ids only
        pad_token_id, eos_token_id = 0, 1

        def __len__(self) -> int:
            return cfg.model.vocab_size

    models = {}
    variants = (("dropout", rate, None), ("hidden only", rate, 0.0), ("no dropout", 0.0, None))
    for name, p, attn in variants:
        torch.manual_seed(0)
        model = build_t5(cfg.model.model_copy(update={"dropout_rate": p}), _Tok())
        if attn is not None:  # T5 drops attention weights at dropout_rate; spare them
            for m in model.modules():
                if isinstance(m, T5Attention):
                    m.dropout = attn
        model.train()
        models[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randint(5, cfg.model.vocab_size, (args.batch_size, args.source_length), generator=gen),
                torch.randint(5, cfg.model.vocab_size, (args.batch_size, args.target_length), generator=gen))
               for _ in range(args.steps + 1)]

    def step(name: str, ids: torch.Tensor, labels: torch.Tensor) -> float:
        model, optim = models[name]
        t0 = time.perf_counter()
        with autocast_context(precision, torch.device("cpu")):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    for name in models:  # warm-up
        step(name, *batches[0])
    times: dict[str, list[float]] = {name: [] for name in models}
    for ids, labels in batches[1:]:
        for name in models:
            times[name].append(step(name, ids, labels))
    share = {}
    for name in models:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(name, *batches[0])
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        share[name] = sum(e.self_cpu_time_total for e in events if e.key == "aten::bernoulli_") / max(total, 1)
    median = {name: statistics.median(t) for name, t in times.items()}
    for name in models:
        print(f"{name:>11}: {median[name]:.3f} s/step (median of {args.steps}), "
              f"drawing dropout masks {100 * share[name]:.0f}% of a step", flush=True)
    print(json.dumps({"config": args.config, "dropout_rate": rate, "precision": precision, "threads": args.threads,
                      "batch": [args.batch_size, args.source_length, args.target_length],
                      "s_per_step_dropout": round(median["dropout"], 3),
                      "s_per_step_hidden_only": round(median["hidden only"], 3),
                      "s_per_step_no_dropout": round(median["no dropout"], 3),
                      "bernoulli_share_dropout": round(share["dropout"], 3),
                      "bernoulli_share_hidden_only": round(share["hidden only"], 3),
                      "dropout_over_no_dropout": round(median["dropout"] / median["no dropout"], 3),
                      "hidden_only_over_no_dropout": round(median["hidden only"] / median["no dropout"], 3)}))


if __name__ == "__main__":
    main()
