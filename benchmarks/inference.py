"""Inference backends side by side: latency, throughput, agreement and size, measured in one run.

    .venv/bin/python benchmarks/inference.py                   # t5-small-shaped model, random weights
    .venv/bin/python benchmarks/inference.py --model runs/<id>/model --questions 24   # a trained model: real EM/EX

Every backend serves the same model on the same inputs (questions and full schemas from
data/spider_sample) with the same decoding: greedy, key/value cache on, exactly ``--new-tokens``
new tokens (min = max, so random weights cannot stop early and every backend does the same work).
For each backend: latency p50/p95 and throughput at batch 1 (one question at a time) and batch 16,
ratios to PyTorch fp32, agreement with PyTorch fp32's tokens (and, for a trained model, exact-match
and execution-accuracy deltas), and size ratios. Execution-guided decoding (first runnable of 4
beams) is measured on the fastest backend. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import time
from pathlib import Path

# Idle OpenMP threads block instead of spinning (read once, when torch loads). On a 2-core machine
# shared with other work, spinning PyTorch threads made batch-1 generation ~7x slower (6.4 s vs
# 0.94 s for 32 tokens); ONNX Runtime's pools are set the same way (Translator(spinning=False)).
# Run with OMP_WAIT_POLICY=ACTIVE to measure spinning threads on an idle machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2sql.evaluation.execution import connect_readonly, execute  # noqa: E402
from t2sql.inference import Translator  # noqa: E402
from t2sql import hardware  # noqa: E402
from t2sql.prompt import build_source  # noqa: E402

SAMPLE = ROOT / "data" / "spider_sample"
T5_SMALL = dict(d_model=512, d_ff=2048, d_kv=64, num_layers=6, num_decoder_layers=6, num_heads=8, vocab_size=32128)


def load_questions(n: int, seed: int = 0) -> list[dict]:
    """``n`` Spider sample questions spread over its databases, with their full schemas and gold SQL."""
    import random

    rows = json.loads((SAMPLE / "train_spider.json").read_text())
    random.Random(seed).shuffle(rows)
    contexts: dict[str, str] = {}
    picked, per_db = [], {}
    for r in rows:
        db = r["db_id"]
        if per_db.get(db, 0) >= max(1, n // 12):
            continue
        path = SAMPLE / "database" / db / f"{db}.sqlite"
        if db not in contexts:
            conn = sqlite3.connect(path)
            contexts[db] = "; ".join(s for (s,) in conn.execute(
                "SELECT sql FROM sqlite_master WHERE type='table' AND sql IS NOT NULL"))
            conn.close()
        picked.append({"question": r["question"], "context": contexts[db], "answer": r["query"], "db_path": str(path)})
        per_db[db] = per_db.get(db, 0) + 1
        if len(picked) == n:
            break
    return picked


def build_model(out: Path) -> Path:
    """A t5-small-shaped T5 with random weights (seed 0) and a tokenizer trained on the sample; reused when present."""
    from transformers import T5Config, T5ForConditionalGeneration

    from t2sql.modeling import train_tokenizer

    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    rows = json.loads((SAMPLE / "train_spider.json").read_text())
    tok = train_tokenizer([r["question"] for r in rows] + [r["query"] for r in rows]
                          + [q["context"] for q in load_questions(200)], 4096)
    torch.manual_seed(0)
    cfg = T5Config(**T5_SMALL, feed_forward_proj="relu", pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model = T5ForConditionalGeneration(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_bitnet(model_dir: Path, out: Path) -> Path | None:
    """A BitNet export of the same model (ternary weights, quantization fully on), or None without the technique."""
    try:
        from t2sql.techniques import get_technique

        bitnet = get_technique("bitnet")
    except (KeyError, ImportError):
        return None
    if (out / "t2sql_technique.json").is_file():
        return out
    from t2sql.model_dir import load as load_model

    model, tok = load_model(model_dir)
    config = bitnet.Config(warmup_steps=0)
    bitnet.export(bitnet.prepare(model, config), config, out, tok)
    return out


def exact_and_execution(preds: list[str], questions: list[dict]) -> tuple[float, float]:
    """Exact match (whitespace/case-insensitive) and execution accuracy (same rows, any order) against gold."""
    em = ex = 0
    for pred, q in zip(preds, questions):
        em += " ".join(pred.lower().split()) == " ".join(q["answer"].lower().split())
        conn = connect_readonly(q["db_path"])
        try:
            got, gold = execute(conn, pred, timeout_s=2.0), execute(conn, q["answer"], timeout_s=2.0)
        finally:
            conn.close()
        ex += got.ok and gold.ok and sorted(map(repr, got.rows)) == sorted(map(repr, gold.rows))
    return em / len(questions), ex / len(questions)


def token_agreement(a: list[list[int]], b: list[list[int]]) -> float:
    same = total = 0
    for x, y in zip(a, b):
        n = max(len(x), len(y))
        same += sum(i == j for i, j in zip(x, y))
        total += n
    return same / max(total, 1)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def measure(translators: dict[str, Translator], questions: list[dict], b1_count: int, b16_reps: int) -> dict:
    """Batch-1 latency over ``b1_count`` questions and batch-16 time over ``b16_reps`` batches, per backend.

    Backends take turns question by question (and batch by batch), so a change in the machine's load
    during the run falls on all of them alike instead of on whichever ran at that moment. Throughputs
    are taken from medians (batch 1: 1000 / p50 ms; batch 16: 16 / median seconds).
    """
    sources = [build_source(q["question"], q["context"]) for q in questions]
    lat: dict[str, list[float]] = {b: [] for b in translators}
    ids_b1: dict[str, list[list[int]]] = {b: [] for b in translators}
    b16: dict[str, list[float]] = {b: [] for b in translators}
    for tr in translators.values():
        tr.batch_size = 16
        tr.generate_ids(sources[:2])  # warm-up: allocations, kernel selection, a batched call
    # Batches of 16 are spread among the single questions, so both see the same stretch of time.
    b16_rounds = {round((k + 0.5) * b1_count / b16_reps) for k in range(b16_reps)} if b16_reps else set()
    for r in range(max(b1_count, max(b16_rounds, default=0) + 1)):
        for b, tr in translators.items():
            if r < b1_count:
                t0 = time.perf_counter()
                ids_b1[b].append(tr.generate_ids([sources[r]])[0][0])
                lat[b].append((time.perf_counter() - t0) * 1000.0)
            if r in b16_rounds:
                t0 = time.perf_counter()
                tr.generate_ids(sources[:16])
                b16[b].append(time.perf_counter() - t0)
    out = {}
    for b, tr in translators.items():
        decode = tr.tokenizer.decode
        b16_s = statistics.median(b16[b])
        out[b] = {"b1_ms_p50": statistics.median(lat[b]), "b1_ms_p95": percentile(lat[b], 0.95),
                  "b1_qps": 1000.0 / statistics.median(lat[b]), "b16_s": b16_s, "b16_qps": 16 / b16_s,
                  "ids_b1": ids_b1[b], "sql_b1": [decode(i, skip_special_tokens=True) for i in ids_b1[b]]}
    return out


def measure_guided(model_dir: Path, backend: str, common: dict, beams: int, questions: list[dict]) -> dict:
    """Execution-guided decoding against plain beam search: latency p50 and execution accuracy."""
    kw = {**common, "num_beams": beams, "min_new_tokens": 0}
    row = {}
    for name, tr in (("beam", Translator(model_dir, backend, **kw)),
                     ("guided", Translator(model_dir, backend, execution_guided=True, **kw))):
        lat, preds = [], []
        for q in questions:
            t0 = time.perf_counter()
            preds.append(tr.translate([(q["question"], q["context"], q["db_path"])])[0])
            lat.append((time.perf_counter() - t0) * 1000.0)
        row[name] = {"ms_p50": statistics.median(lat), "execution_accuracy": exact_and_execution(preds, questions)[1]}
        if name == "guided":
            row[name]["stats"] = tr.guided_totals
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a trained model directory (default: t5-small-shaped random weights)")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "out" / "inference"), help="model and ONNX cache")
    ap.add_argument("--backends", default="torch-fp32,torch-bf16,torch-int8,onnx-fp32,onnx-int8,bitnet")
    ap.add_argument("--questions", type=int, default=16, help="inputs (at least 16: one batch of 16)")
    ap.add_argument("--b1", type=int, default=8, help="questions timed one at a time per backend")
    ap.add_argument("--b16-reps", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="default: physical cores")
    ap.add_argument("--guided-beams", type=int, default=4)
    args = ap.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    trained = args.model is not None
    model_dir = Path(args.model) if trained else build_model(work / "model")
    questions = load_questions(max(args.questions, 16))
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    dirs = {b: model_dir for b in backends}
    if "bitnet" in backends:
        bitnet_dir = build_bitnet(model_dir, work / "bitnet")
        if bitnet_dir is None:
            backends.remove("bitnet")
        else:
            dirs["bitnet"] = bitnet_dir
    onnx_root = work / "onnx" / ("trained" if trained else "random")
    common = dict(num_threads=args.threads, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                  batch_size=1, max_source_length=512, onnx_dir=onnx_root, device="cpu")
    print(f"machine: {hardware.describe()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"load average {os.getloadavg()[0]:.2f}")
    translators: dict[str, Translator] = {}
    loads: dict[str, float] = {}
    for b in backends:
        t0 = time.perf_counter()
        translators[b] = Translator(dirs[b], b, **common)
        loads[b] = time.perf_counter() - t0
        print(f"  loaded {b:<11} in {loads[b]:5.1f} s  {translators[b].info}", flush=True)
    first = next(iter(translators.values()))
    lens = [len(x) for x in first.encode([build_source(q["question"], q["context"]) for q in questions[:16]])]
    tok_lens = (min(lens), int(statistics.median(lens)), max(lens))
    print(f"inputs: {len(questions)} questions, source tokens min/median/max {tok_lens}, {args.new_tokens} new tokens "
          f"each, threads {first.threads}; {args.b1} questions one at a time, {args.b16_reps} batches of 16, "
          f"backends taking turns", flush=True)
    results = measure(translators, questions, args.b1, args.b16_reps)
    for b, r in results.items():
        r.update(size_bytes=translators[b].size_bytes(), load_s=loads[b])
        print(f"  {b:<11} b1 p50 {r['b1_ms_p50']:8.1f} ms  p95 {r['b1_ms_p95']:8.1f} ms  b16 {r['b16_s']:6.2f} s "
              f"({r['b16_qps']:5.1f} q/s)  size {r['size_bytes'] / 1e6:7.1f} MB", flush=True)
    translators.clear()
    guided = None
    if args.guided_beams > 1 and "onnx-int8" in backends:
        sub = questions[:4]
        guided = measure_guided(dirs["onnx-int8"], "onnx-int8", common, args.guided_beams, sub)
        print(f"  execution-guided ({args.guided_beams} beams, onnx-int8, {len(sub)} questions): p50 "
              f"{guided['guided']['ms_p50']:.0f} ms vs {guided['beam']['ms_p50']:.0f} ms plain beams; EX "
              f"{guided['guided']['execution_accuracy']:.2f} vs {guided['beam']['execution_accuracy']:.2f}; "
              f"{guided['guided']['stats']}", flush=True)

    base = results["torch-fp32"]
    print("\nratios to torch-fp32 (batch 1 latency p50, batch-16 throughput vs fp32 one at a time, agreement, size):")
    summary: dict[str, object] = {}
    for b, r in results.items():
        agree = token_agreement(base["ids_b1"], r["ids_b1"])
        seq_agree = sum(x == y for x, y in zip(base["ids_b1"], r["ids_b1"])) / len(r["ids_b1"])
        line = {"b1_speedup": base["b1_ms_p50"] / r["b1_ms_p50"], "b16_vs_fp32_b1_throughput": r["b16_qps"] / base["b1_qps"],
                "token_agreement": agree, "sequence_agreement": seq_agree,
                "size_ratio": r["size_bytes"] / base["size_bytes"], "b1_ms_p50": r["b1_ms_p50"],
                "b1_ms_p95": r["b1_ms_p95"], "b16_qps": r["b16_qps"], "size_mb": r["size_bytes"] / 1e6}
        if trained:
            sub = questions[:args.b1]
            em, ex = exact_and_execution([s.strip() for s in r["sql_b1"]], sub)
            em0, ex0 = exact_and_execution([s.strip() for s in base["sql_b1"]], sub)
            line.update(exact_match=em, execution_accuracy=ex, em_delta=em - em0, ex_delta=ex - ex0)
        summary[b] = {k: round(v, 4) if isinstance(v, float) else v for k, v in line.items()}
        extra = f"  EM {line['em_delta']:+.3f} EX {line['ex_delta']:+.3f}" if trained else ""
        print(f"  {b:<11} b1 x{line['b1_speedup']:5.2f}  b16/fp32-b1 x{line['b16_vs_fp32_b1_throughput']:6.2f}  "
              f"tokens {agree:6.1%}  sequences {seq_agree:6.1%}  size x{line['size_ratio']:5.3f}{extra}")

    out: dict[str, object] = {"model": "trained" if trained else "t5-small-shape random", "new_tokens": args.new_tokens,
                              "threads": torch.get_num_threads(), "source_tokens": tok_lens}
    if "onnx-int8" in results:
        out["onnx_int8_b1_speedup"] = round(summary["onnx-int8"]["b1_speedup"], 3)
        out["b16_vs_fp32_b1_throughput"] = round(summary["onnx-int8"]["b16_vs_fp32_b1_throughput"], 3)
    best = max((b for b in summary), key=lambda b: summary[b]["b16_qps"])
    out["b16_best_backend"] = best
    out["b16_best_vs_fp32_b1_throughput"] = summary[best]["b16_vs_fp32_b1_throughput"]
    if "onnx-int8" in results and "onnx-fp32" in results:
        out["int8_size_ratio"] = round(results["onnx-int8"]["size_bytes"] / results["onnx-fp32"]["size_bytes"], 4)
    if "torch-int8" in results:
        out["torch_int8_size_ratio"] = round(results["torch-int8"]["size_bytes"] / base["size_bytes"], 4)
    if guided is not None:
        out["guided"] = guided
    out["backends"] = summary
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
