"""Execution accuracy of one model on the same questions on SQLite and on PostgreSQL, side by side.

    .venv/bin/python benchmarks/engines.py                              # lookup translator, temporary PostgreSQL
    .venv/bin/python benchmarks/engines.py --model tiny --limit 200     # an untrained tiny T5 (webui.testing)
    .venv/bin/python benchmarks/engines.py --model runs/<id>/model --pg-url 'postgresql+psycopg://u@127.0.0.1/{db_id}'

The Spider sample's databases are copied into PostgreSQL with ``t2sql.databases.load.load_sqlite``
(a temporary server on 127.0.0.1 unless ``--pg-url`` names one, with ``{db_id}`` for each database).
Each question is translated once per engine from that engine's own schema text (as the GUI and
``t2sql ask`` do), then judged by :class:`t2sql.evaluation.judge.ExampleScorer`: on the SQLite file,
and on PostgreSQL through ``ScoringOptions.database_url`` (the SQL rewritten into PostgreSQL's
dialect). It prints execution accuracy on both, gold SQL's own accuracy on PostgreSQL, and every
question whose verdict differs, with the known dialect differences
(:data:`t2sql.databases.dialects.KNOWN_DIFFERENCES`).

Models: ``lookup`` (default; :class:`webui.testing.LookupTranslator`, gold SQL for sample questions,
a naive guess for others, so it measures the engines, not a model), ``tiny`` (an untrained tiny T5
registered by :func:`webui.testing.make_registry`), or a model directory / run id of ``--registry``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / "data" / "spider_sample"


def _translator(model: str, registry: str | None, tmp: Path):
    if model == "lookup":
        from webui.testing import LookupTranslator

        t = LookupTranslator()
        return "lookup (gold SQL of known sample questions)", lambda q, ctx: t.translate_one(q, ctx)[0]
    from t2sql.inference import Translator

    if model == "tiny":
        from webui.testing import make_registry

        make_registry(tmp / "runs")
        tr = Translator.load("champion", str(tmp / "runs"), backend="torch")
    else:
        tr = Translator.load(model, registry or "runs", backend="torch")
    return str(tr.model_dir), lambda q, ctx: tr.translate_one(q, ctx)[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="lookup", help="lookup, tiny, or a model directory / run id")
    p.add_argument("--registry", default=None)
    p.add_argument("--pg-url", default=None, help="PostgreSQL URL with {db_id}; default: a temporary server")
    p.add_argument("--databases", nargs="*", default=None, help="db_ids (default: every sample database)")
    p.add_argument("--limit", type=int, default=None, help="questions at most (a fixed random sample)")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--json", default=None, help="write the figures here as JSON")
    args = p.parse_args(argv)

    from t2sql.data.schema import sqlite_create_tables
    from t2sql.databases import introspect
    from t2sql.databases.connections import Connection
    from t2sql.databases.dialects import KNOWN_DIFFERENCES
    from t2sql.databases.load import load_sqlite
    from t2sql.evaluation.execution import execute
    from t2sql.evaluation.judge import ExampleScorer, ScoringOptions
    from t2sql.evaluation.results import order_matters, results_match

    questions = json.loads((SAMPLE / "train_spider.json").read_text())
    if args.databases:
        questions = [q for q in questions if q["db_id"] in set(args.databases)]
    if args.limit and len(questions) > args.limit:
        questions = random.Random(0).sample(questions, args.limit)
    db_ids = sorted({q["db_id"] for q in questions})

    server = None
    with tempfile.TemporaryDirectory(prefix="t2sql-engines-") as tmp_dir:
        tmp = Path(tmp_dir)
        template = args.pg_url
        if template is None:
            from t2sql.databases.servers import TemporaryPostgres

            server = TemporaryPostgres().start()
            template = server.url("{db_id}")
        try:
            t0 = time.perf_counter()
            for db_id in db_ids:
                load_sqlite(SAMPLE / "database" / db_id / f"{db_id}.sqlite", template.replace("{db_id}", db_id),
                            create=True, replace=True)
            load_s = time.perf_counter() - t0
            name, translate = _translator(args.model, args.registry, tmp)
            pg_conns = {d: Connection(template.replace("{db_id}", d), timeout_s=args.timeout) for d in db_ids}
            sqlite_ctx = {d: sqlite_create_tables(SAMPLE / "database" / d / f"{d}.sqlite") for d in db_ids}
            pg_ctx = {d: introspect.create_tables(pg_conns[d]) for d in db_ids}
            sqlite_judge = ExampleScorer(ScoringOptions(timeout_s=args.timeout, fuzz_databases=0))
            pg_judge = ExampleScorer(ScoringOptions(timeout_s=args.timeout, fuzz_databases=0, database_url=template))
            rows = []
            t0 = time.perf_counter()
            for q in questions:
                d = q["db_id"]
                record = {"id": q.get("question"), "db_id": d, "question": q["question"], "answer": q["query"],
                          "db_path": str(SAMPLE / "database" / d / f"{d}.sqlite"), "context": ""}
                pred_sqlite = translate(q["question"], sqlite_ctx[d])
                pred_pg = translate(q["question"], pg_ctx[d])
                s_line, _ = sqlite_judge.score(record, pred_sqlite)
                p_line, _ = pg_judge.score(record, pred_pg)
                g_line, _ = pg_judge.score(record, q["query"])
                g_sqlite = execute(record["db_path"], q["query"], timeout_s=args.timeout)
                g_pg = pg_conns[d].execute(q["query"], read="sqlite", timeout_s=args.timeout)
                same_rows = g_sqlite.ok and g_pg.ok and results_match(g_sqlite.rows, g_pg.rows,
                                                                       order_matters=order_matters(q["query"]))
                rows.append({"db_id": d, "question": q["question"], "gold": q["query"], "pred_sqlite": pred_sqlite,
                             "pred_pg": pred_pg, "sqlite": s_line["execution_match"] is True,
                             "pg": p_line["execution_match"] is True,
                             "pg_checked": p_line["execution_match"] is not None,
                             "gold_on_pg": g_line["execution_match"], "same_gold_rows": same_rows, "gold_error_pg": g_line.get("gold_error"),
                             "pg_error": p_line.get("error"), "sqlite_error": s_line.get("error")})
            score_s = time.perf_counter() - t0
            sqlite_judge.close()
            pg_judge.close()
            for c in pg_conns.values():
                c.close()
        finally:
            if server is not None:
                server.stop()

    n = len(rows)
    ex_sqlite = sum(r["sqlite"] for r in rows) / n
    ex_pg = sum(r["pg"] for r in rows) / n
    gold_pg = sum(bool(r["gold_on_pg"]) for r in rows) / n
    differ = [r for r in rows if r["sqlite"] != r["pg"]]
    gold_fail = [r for r in rows if not r["gold_on_pg"]]
    print(f"model: {name}")
    print(f"questions: {n} on {len(db_ids)} databases (copied into PostgreSQL in {load_s:.1f} s; scored in "
          f"{score_s:.1f} s)")
    print()
    print(f"{'':34} {'SQLite':>10} {'PostgreSQL':>12}")
    print(f"{'execution accuracy (model)':34} {ex_sqlite:>10.4f} {ex_pg:>12.4f}")
    print(f"{'execution accuracy (gold SQL)':34} {'1.0000':>10} {gold_pg:>12.4f}")
    same_rows = [r for r in rows if r["same_gold_rows"]]
    print(f"{'gold rows equal to SQLite rows':34} {'':>10} {len(same_rows):>6} / {n}")
    print(f"{'same verdict on both':34} {n - len(differ):>10} / {n}")
    if gold_fail:
        print("\ngold SQL that does not give the same result on PostgreSQL (or fails there):")
        for r in gold_fail[:20]:
            print(f"  [{r['db_id']}] {r['gold']}\n      {r['gold_error_pg'] or 'result differs'}")
    other_rows = [r for r in rows if not r["same_gold_rows"]]
    if other_rows:
        print("\ngold SQL whose rows on PostgreSQL differ from SQLite's:")
        for r in other_rows[:20]:
            print(f"  [{r['db_id']}] {r['gold']}")
    if differ:
        print("\nquestions judged differently:")
        reasons = Counter()
        for r in differ[:30]:
            why = r["pg_error"] or r["sqlite_error"] or "result differs"
            reasons[why.split(":")[0][:60]] += 1
            print(f"  [{r['db_id']}] {r['question']}\n      sqlite={r['sqlite']} pg={r['pg']}: {why[:160]}")
    print("\nknown dialect differences (rewrites: stored name case, LIKE -> ILIKE):")
    for item in KNOWN_DIFFERENCES["postgres"]:
        print(f"  - {item}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": name, "n": n, "ex_sqlite": ex_sqlite, "ex_postgres": ex_pg,
                                               "gold_on_postgres": gold_pg, "gold_rows_equal": len(same_rows), "differ": differ,
                                               "gold_fail": gold_fail, "gold_rows_differ": other_rows},
                                              indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
