"""The learned schema ranker against the rule marks: how often the prompt shows every gold column, and
how many columns it shows, on the same test questions.

    T2SQL_DATA_DIR=../shared/data .venv/bin/python benchmarks/ranker.py \\
        --data .t2sql/work/data/<key> --config configs/spider_cpu.yaml --k 2,4,6
    .venv/bin/python benchmarks/ranker.py --data DIR --config CONFIG --ranker runs/.../ranker.joblib

``--data`` is a prepared data folder (``train.jsonl``, ``test.jsonl``: what ``t2sql run`` writes under
``work_dir/data/<key>``). The ranker is trained on ``train.jsonl`` (or read from ``--ranker``), with
each question's context written as the prompt reads it (stored values the question names). For the
rules alone and for the rules plus the ranker's k best columns that the input hides, it prints side by side on
``test.jsonl``: the share of questions whose every gold column and table is shown, the share of gold
columns shown, columns and tables shown per question, and the ranker's training and scoring time. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="prepared data folder with train.jsonl and test.jsonl")
    ap.add_argument("--config", default=str(ROOT / "configs" / "spider_cpu.yaml"), help="its prompt section is used")
    ap.add_argument("--k", default="2,4,6", help="ranked columns to try, comma-separated")
    ap.add_argument("--ranker", default=None, help="a trained ranker file (default: train one)")
    ap.add_argument("--max-train", type=int, default=3000, help="training questions the ranker reads")
    ap.add_argument("--max-test", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="folder for the trained ranker (default: a temporary one)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from t2sql.config import load_config
    from t2sql.evaluation.oracle import schema_shown
    from t2sql.io import read_jsonl
    from t2sql.linking.ranker import load_ranker, train_ranker
    from t2sql.prompt import question_context

    prompt = load_config(args.config).prompt
    data = Path(args.data)
    test = list(read_jsonl(data / "test.jsonl"))[:args.max_test]
    train_s = None
    if args.ranker:
        path = str(Path(args.ranker).resolve())
    else:
        train = [{**r, "context": question_context(r["question"], r["context"], r.get("db_path"), prompt)}
                 for r in read_jsonl(data / "train.jsonl")]
        t0 = time.perf_counter()
        ranker = train_ranker(train, max_questions=args.max_train, progress=True)
        train_s = time.perf_counter() - t0
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="t2sql-ranker-"))
        path = str(ranker.save(out / "ranker.joblib").resolve())
        print(f"trained on {ranker.stats['questions']} questions ({ranker.stats['columns']} columns) in "
              f"{train_s:.0f} s: {path}", flush=True)
    ranker = load_ranker(path)
    rows = {"rules": schema_shown(test, prompt)}
    score_s = {}
    for k in [int(x) for x in args.k.split(",") if x.strip()]:
        t0 = time.perf_counter()
        rows[f"rules+ranker@{k}"] = schema_shown(test, prompt, ranker, k)
        score_s[k] = (time.perf_counter() - t0) / max(1, len(test))
    print(f"{'':18} {'all gold shown':>15} {'gold columns':>13} {'columns':>8} {'tables':>7}")
    for name, r in rows.items():
        print(f"{name:18} {r['all_gold_shown']:15.3f} {r['gold_column_recall']:13.3f} {r['columns_shown']:8.1f} "
              f"{r['tables_shown']:7.1f}")
    result = {"data": str(data), "test_questions": rows["rules"]["questions"], "ranker": path,
              "train_s": round(train_s, 1) if train_s else None,
              "score_ms_per_question": {k: round(v * 1000, 1) for k, v in score_s.items()}, "rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
