"""Peak memory of streaming evaluation on N and 4N examples, each in a fresh process.

    .venv/bin/python benchmarks/eval_memory.py --n 1500

Records cycle through the shipped Spider sample, each query made unique by a comment (every fifth
record without its database, so it is scored on generated databases); predictions alternate between
the gold query and an altered one.
Each size runs ``evaluate_predictions`` in its own subprocess, which reports its peak RSS and the RSS
after imports and a warm-up run. The last line is one JSON object with
``peak_rss_ratio_4n_vs_n`` (target <= 1.15) and the growth above the warm baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPIDER = ROOT / "data" / "spider_sample"


def _records(n: int):
    from t2sql.evaluation.schema import context_from_sqlite

    questions = json.loads((SPIDER / "train_spider.json").read_text())
    contexts: dict[str, str] = {}
    for i in range(n):
        q = questions[i % len(questions)]
        db = SPIDER / "database" / q["db_id"] / f"{q['db_id']}.sqlite"
        if q["db_id"] not in contexts:
            contexts[q["db_id"]] = context_from_sqlite(db)
        schema_only = i % 5 == 4
        # A comment makes every query text unique, so caches keyed by text cannot hide growth.
        yield {"id": f"r{i}", "question": f"{q['question']} ({i})", "context": contexts[q["db_id"]],
               "answer": f"{q['query']} /* r{i} */",
               "db_id": q["db_id"], "db_path": None if schema_only else str(db),
               "source": "create_context" if schema_only else "spider"}


def _predictions(n: int):
    for i, record in enumerate(_records(n)):
        gold = record["answer"]
        if i % 2:
            yield {"sql": gold.replace("DESC", "ASC").replace(">", "<"), "latency_ms": 5.0 + i % 17}
        else:
            yield {"sql": gold, "latency_ms": 5.0 + i % 13}


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def child(n: int, batch_size: int) -> None:
    from t2sql.config import EvalConfig
    from t2sql.evaluation import evaluate_predictions

    cfg = EvalConfig(batch_size=batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        evaluate_predictions(_records(50), _predictions(50), cfg, Path(tmp) / "warmup")  # fill lazy caches
        baseline = _rss_mb()
        metrics = evaluate_predictions(_records(n), _predictions(n), cfg, Path(tmp) / "run")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"n": n, "peak_rss_mb": peak_mb, "baseline_rss_mb": baseline,
                      "seconds": metrics["eval_seconds"], "execution_accuracy": metrics["execution_accuracy"],
                      "n_examples": metrics["n_examples"]}))


def run(n: int, batch_size: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, __file__, "--child", str(n), "--batch-size", str(batch_size)],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child run for n={n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500, help="examples in the small run (the large one has 4N)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.batch_size)
        return
    small = run(args.n, args.batch_size)
    large = run(4 * args.n, args.batch_size)
    for r in (small, large):
        print(f"n={r['n']:>6}  peak RSS {r['peak_rss_mb']:7.1f} MB  (warm baseline {r['baseline_rss_mb']:.1f} MB, "
              f"growth {r['peak_rss_mb'] - r['baseline_rss_mb']:+.1f} MB)  {r['seconds']:.1f} s  "
              f"execution accuracy {r['execution_accuracy']:.3f}")
    growth_small = small["peak_rss_mb"] - small["baseline_rss_mb"]
    growth_large = large["peak_rss_mb"] - large["baseline_rss_mb"]
    print(json.dumps({
        "peak_rss_ratio_4n_vs_n": round(large["peak_rss_mb"] / small["peak_rss_mb"], 4),
        "n": args.n,
        "peak_rss_mb_n": round(small["peak_rss_mb"], 1),
        "peak_rss_mb_4n": round(large["peak_rss_mb"], 1),
        "growth_mb_n": round(growth_small, 2),
        "growth_mb_4n": round(growth_large, 2),
        "bytes_per_extra_example": round((growth_large - growth_small) * 2**20 / (3 * args.n), 1),
    }))


if __name__ == "__main__":
    main()
