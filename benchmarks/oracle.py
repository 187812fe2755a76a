"""How much of a model's error is linking and how much decoding: the same model and test set, with the
full schema and with only the tables and columns the gold query reads (the oracle schema).

    .venv/bin/python benchmarks/oracle.py --model runs/spider_cpu-1a2b3c/model --data .t2sql/work/data/<key>/test.jsonl
    .venv/bin/python benchmarks/oracle.py --model champion --data test.jsonl --max-examples 200

For a model of the linked prompt format, the oracle input shows every gold column (the options that
show only the linked tables and columns are turned off for it, since the schema already holds only
what is needed) and the report gives how often the model's own input shows every gold table and
column (``gold_shown``). Execution accuracy on the oracle schema is an upper bound on what better
linking alone can buy; the rest is lost in decoding. The last line is one JSON object.
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


def gold_shown(record: dict, prompt) -> bool | None:
    """Whether the model's input for ``record`` shows every table and column its gold query reads."""
    from t2sql.evaluation.oracle import gold_items
    from t2sql.prompt import question_context
    from t2sql.prompts.linked import view

    if prompt.format != "linked":
        return None
    context = question_context(record["question"], record["context"], record.get("db_path"), prompt)
    try:
        tables, columns = gold_items(record["answer"], context)
    except ValueError:
        return None
    lay = view(record["question"], context, prompt.options)
    shown_tables = {name.lower() for name in lay.tables.values()}
    shown_columns = {(t.lower(), c.lower()) for k, (t, c) in lay.columns.items() if k not in lay.hidden}
    return all(t.lower() in shown_tables for t in tables) and \
        all((t.lower(), c.lower()) in shown_columns for t, c in columns)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model directory, run id, run:<id> or champion")
    ap.add_argument("--registry", default="runs")
    ap.add_argument("--data", required=True, help="test JSONL (records with question, context, answer, db_path)")
    ap.add_argument("--max-examples", type=int, default=None)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--out", default=None, help="directory for predictions and metrics (default: a temporary one)")
    args = ap.parse_args(argv)

    from t2sql.config import EvalConfig
    from t2sql.evaluation.evaluate import evaluate_model
    from t2sql.evaluation.oracle import gold_only_context
    from t2sql.inference import Translator
    from t2sql.io import read_jsonl, write_jsonl

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="t2sql-oracle-"))
    out.mkdir(parents=True, exist_ok=True)
    records = list(read_jsonl(args.data))[:args.max_examples]
    oracle, skipped = [], 0
    for r in records:
        try:
            oracle.append({**r, "context": gold_only_context(r["answer"], r["context"])})
        except ValueError:
            skipped += 1  # a gold query sqlglot cannot read: left out of both runs
    kept = {r["id"] for r in oracle}
    full = [r for r in records if r["id"] in kept]
    write_jsonl(out / "full.jsonl", full)
    write_jsonl(out / "oracle.jsonl", oracle)

    cfg = EvalConfig()
    translator = Translator.load(args.model, args.registry, backend=args.backend)
    prompt = translator.prompt
    shown = [gold_shown(r, prompt) for r in full]
    t0 = time.perf_counter()
    m_full = evaluate_model(translator, out / "full.jsonl", cfg, out / "eval-full")
    t_full = time.perf_counter() - t0
    if prompt.format == "linked":
        translator.prompt = prompt.replace(linked_tables_only=False, linked_columns_only=False, key_columns=False)
    t0 = time.perf_counter()
    m_oracle = evaluate_model(translator, out / "oracle.jsonl", cfg, out / "eval-oracle")
    t_oracle = time.perf_counter() - t0

    def pick(m):
        return {k: m.get(k) for k in ("execution_accuracy", "execution_accuracy_informative", "execution_success_rate",
                                      "exact_set_match", "n_examples")}

    known = [s for s in shown if s is not None]
    result = {
        "model": str(translator.model_dir), "data": str(args.data), "examples": len(full), "skipped": skipped,
        "full": pick(m_full), "oracle": pick(m_oracle),
        "gold_shown": round(sum(known) / len(known), 4) if known else None,
        "lost_to_linking": round((m_oracle["execution_accuracy"] or 0) - (m_full["execution_accuracy"] or 0), 4),
        "lost_to_decoding": round(1 - (m_oracle["execution_accuracy"] or 0), 4),
        "wall_s": {"full": round(t_full, 1), "oracle": round(t_oracle, 1)}, "out": str(out),
    }
    print(f"{len(full)} questions ({skipped} skipped): execution accuracy {result['full']['execution_accuracy']:.3f} "
          f"with the model's own schema view, {result['oracle']['execution_accuracy']:.3f} with the gold tables and "
          f"columns only; every gold item shown for {result['gold_shown']} of the questions")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
