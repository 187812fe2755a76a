"""Constrained decoding against plain decoding: the same model and questions, side by side in one run.

    .venv/bin/python benchmarks/constrained.py --model runs/spider_cpu-1a2b3c/model --data .t2sql/work/data/<key>/test.jsonl
    .venv/bin/python benchmarks/constrained.py --model champion --data test.jsonl --limit 50 --beams 4

One translator is loaded; after a short warm-up in both modes, the test questions are decoded and
scored (t2sql.evaluation, the project's judge) without and then with constraints
(:mod:`t2sql.inference.constrained`). Printed per mode: the share of predictions that run on their
database (``execution_success_rate``), execution accuracy (all, and where the gold result is not
empty or zero), the share of questions with literals whose literals the prediction writes right, p50
and mean latency per question (batch time / batch size), and the ratio of constrained to plain
latency; for the constrained run, how many rows x steps were checked, candidates checked per step,
fallbacks (steps where none of the top candidates was valid) and the seconds spent checking.
``--value-rule both`` adds a constrained run with the value rule off (a value's pointers free to name
any question word) between the two. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEYS = ("n_examples", "execution_success_rate", "execution_accuracy", "execution_accuracy_informative",
        "exact_set_match", "latency_ms_p50", "latency_ms_mean")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model directory, run id, run:<id> or champion")
    ap.add_argument("--registry", default="runs")
    ap.add_argument("--data", required=True, help="test JSONL (records with question, context, answer, db_path)")
    ap.add_argument("--limit", type=int, default=None, help="first N questions only (a quick run)")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--beams", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--top-k", type=int, default=None, help="candidates checked per step (default: constrained.TOP_K)")
    ap.add_argument("--value-rule", choices=["on", "both"], default="on",
                    help="both: also decode constrained with the value rule off (constrained.VALUE_RULE), between the two")
    ap.add_argument("--out", default=None, help="directory for predictions and metrics (default: a temporary one)")
    args = ap.parse_args(argv)

    from t2sql.config import EvalConfig
    from t2sql.evaluation.evaluate import evaluate_model
    from t2sql.inference import Translator
    from t2sql.inference import constrained
    from t2sql.io import read_jsonl

    if args.top_k is not None:
        constrained.TOP_K = args.top_k
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="t2sql-constrained-"))
    out.mkdir(parents=True, exist_ok=True)
    cfg = EvalConfig(batch_size=args.batch_size, num_beams=args.beams, max_new_tokens=args.max_new_tokens,
                     max_examples=args.limit)
    tr = Translator.load(args.model, args.registry, backend=args.backend, num_beams=args.beams,
                         batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, num_threads=args.threads)

    warm = [(r["question"], r["context"], r.get("db_path")) for r in list(read_jsonl(args.data))[:2]]
    for mode in (False, True):
        tr.constrained = mode
        tr.translate(warm)
    tr.constraint_totals = {}

    results, walls = {}, {}
    modes = [("plain", False, True)]
    if args.value_rule == "both":
        modes.append(("no-value-rule", True, False))
    modes.append(("constrained", True, True))
    totals: dict = {}
    for name, mode, value_rule in modes:
        tr.constrained = mode
        constrained.VALUE_RULE = value_rule
        tr.constraint_totals = {}
        t0 = time.perf_counter()
        metrics = evaluate_model(tr, args.data, cfg, out / name)
        walls[name] = round(time.perf_counter() - t0, 1)
        results[name] = {k: metrics.get(k) for k in KEYS}
        totals = dict(tr.constraint_totals)
    constrained.VALUE_RULE = True

    def ratio(key: str) -> float | None:
        a, b = results["plain"].get(key), results["constrained"].get(key)
        return round(b / a, 3) if a and b is not None else None

    def values_right(name: str) -> float | None:
        """Share of the questions whose gold query holds literals that the prediction writes the same
        literals (compared lower-cased, as a sorted list)."""
        import sqlglot
        from sqlglot import exp

        def literals(sql: str) -> list[str] | None:
            try:
                return sorted(str(x.this).lower() for x in sqlglot.parse_one(sql, read="sqlite").find_all(exp.Literal))
            except Exception:  # noqa: BLE001 - a prediction that does not parse has no literals to compare
                return None

        rows = [json.loads(x) for x in (out / name / "predictions.jsonl").read_text().splitlines()]
        pairs = [(g, literals(r.get("pred") or "")) for r in rows if (g := literals(r["gold"]))]
        return round(sum(g == p for g, p in pairs) / len(pairs), 3) if pairs else None

    for name in results:
        results[name]["values_right"] = values_right(name)

    def same_predictions(first: str = "plain") -> int:
        plain = [json.loads(x) for x in (out / first / "predictions.jsonl").read_text().splitlines()]
        cons = [json.loads(x) for x in (out / "constrained" / "predictions.jsonl").read_text().splitlines()]
        return sum(a.get("pred") == b.get("pred") for a, b in zip(plain, cons))

    summary = {
        "model": str(tr.model_dir), "data": str(args.data), "backend": tr.backend, "beams": args.beams,
        "batch_size": args.batch_size, "top_k": constrained.TOP_K, "plain": results["plain"],
        "constrained": results["constrained"], **({"no_value_rule": results["no-value-rule"],
                                                    "same_as_no_value_rule": same_predictions("no-value-rule")}
                                                   if "no-value-rule" in results else {}),
        "latency_ratio_p50": ratio("latency_ms_p50"),
        "latency_ratio_mean": ratio("latency_ms_mean"), "same_predictions": same_predictions(),
        "checks": {**totals, "seconds": round(totals.get("seconds", 0.0), 2),
                   "checked_per_step": round(totals["checked"] / totals["steps"], 2) if totals.get("steps") else None},
        "wall_s": walls, "out": str(out),
    }

    def fmt(v) -> str:
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    print(f"{'':14s} {'runs':>7s} {'EX':>7s} {'EX inf.':>7s} {'values':>7s} {'p50 ms':>9s} {'mean ms':>9s}")
    for name in results:
        m = results[name]
        print(f"{name:14s} {fmt(m['execution_success_rate']):>7s} {fmt(m['execution_accuracy']):>7s} "
              f"{fmt(m['execution_accuracy_informative']):>7s} {fmt(m['values_right']):>7s} "
              f"{fmt(m['latency_ms_p50']):>9s} {fmt(m['latency_ms_mean']):>9s}")
    print(f"latency ratio (constrained / plain): p50 {fmt(summary['latency_ratio_p50'])}, mean "
          f"{fmt(summary['latency_ratio_mean'])}; {summary['same_predictions']} of {results['plain']['n_examples']} "
          f"predictions unchanged; checks {summary['checks']}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
