"""How much a better choice among a model's beams could buy: the ceiling of reranking.

    .venv/bin/python benchmarks/beams.py --model runs/spider_cpu-1a2b3c/model --data .t2sql/work/data/<key>/test.jsonl
    .venv/bin/python benchmarks/beams.py --candidates beams.jsonl          # re-score saved candidates

The model decodes ``--beams`` candidates per test question (constrained decoding as the recipe
serves it, unless ``--plain``), and every candidate is scored by the project's judge and run on
its database (read-only). Printed:

- the oracle at k: the share of questions for which one of the first k beams is right (all
  questions, and those whose gold result is not empty or zero). No reranker can beat it;
- the top beam, and the first beam whose SQL runs (execution-guided decoding);
- execution consensus: the candidate whose result the most beams share, each beam's vote
  weighted 1/(rank+1);
- a learned reranker, cross-validated by database (trained on the other databases' questions,
  scored on the held-out one): a scikit-learn gradient-boosted classifier on the beam's rank,
  whether it runs, its result's size, its share of the consensus, and whether the question's
  wording (``how many``, ``average``, ``most``, ``each``, ``not``, ...) and the SQL's clauses
  (``COUNT``, ``AVG``, ``ORDER BY ... LIMIT``, ``GROUP BY``, ``NOT IN``, ...) agree.

``--save FILE`` keeps the candidates (and their verdicts) as JSONL, which ``--candidates`` reads
back without decoding again. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (question wording, SQL clause): the reranker sees whether each is present in one, both or neither.
CUES = (
    (r"\bhow many\b|\bnumber of\b|\bcount\b", r"\bcount\s*\("),
    ((r"\bmost\b|\bhighest\b|\blargest\b|\bbiggest\b|\boldest\b|\byoungest\b|\bleast\b|\blowest\b|"
      r"\bsmallest\b|\bfewest\b|\w+est\b|\btop\b|\blatest\b|\bearliest\b"), r"\blimit\s+\d"),
    (r"\baverage\b|\bmean\b", r"\bavg\s*\("),
    (r"\btotal\b|\bsum\b", r"\bsum\s*\("),
    (r"\bmaximum\b|\bmax\b", r"\bmax\s*\("),
    (r"\bminimum\b|\bmin\b", r"\bmin\s*\("),
    (r"\beach\b|\bper\b|\bevery\b", r"\bgroup by\b"),
    (r"\bnot\b|\bnever\b|\bwithout\b|\bno\b|n't\b", r"\bnot in\b|\bexcept\b|!=|<>"),
    (r"\bboth\b", r"\bintersect\b"),
    (r"\bor\b", r"\bunion\b|\bor\b"),
    (r"\bdistinct\b|\bdifferent\b|\bunique\b", r"\bdistinct\b"),
    (r"\border\b|\bsort(ed)?\b|\bascending\b|\bdescending\b|\balphabetical", r"\border by\b"),
    (r"\bmore than\b|\bgreater\b|\bover\b|\babove\b|\bat least\b|\blarger than\b", r">"),
    (r"\bless than\b|\bfewer\b|\bbelow\b|\bunder\b|\bat most\b|\bsmaller than\b", r"<"),
    (r"\bmost\b|\bhighest\b|\blargest\b|\boldest\b|\blatest\b|\bdescending\b", r"\bdesc\b"),
)
_SQL_WORDS = {"select", "from", "where", "and", "or", "count", "avg", "sum", "max", "min", "group", "by",
              "order", "limit", "desc", "asc", "join", "on", "as", "not", "in", "distinct", "having", "like",
              "union", "intersect", "except", "between", "is", "null"}


def result_key(rows: list[tuple]) -> str:
    """A result's rows as an order-free key (two candidates with the same key answer alike)."""
    return json.dumps(sorted(repr(r) for r in rows)[:500])


def decode(args) -> list[dict]:
    """Candidates for every test question, each with the judge's verdict and its result's key."""
    from t2sql.evaluation.execution import execute
    from t2sql.evaluation.judge import ExampleScorer, informative_result
    from t2sql.inference import Translator
    from t2sql.io import read_jsonl

    records = list(read_jsonl(args.data))[:args.limit]
    tr = Translator.load(args.model, args.registry, num_beams=args.beams, batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens, num_threads=args.threads)
    tr.constrained = not args.plain
    scorer, rows, t0 = ExampleScorer(), [], time.perf_counter()
    try:
        for start in range(0, len(records), args.batch_size):
            batch = records[start:start + args.batch_size]
            cands = tr.translate([(r["question"], r["context"], r.get("db_path")) for r in batch],
                                 num_candidates=args.beams)
            for rec, sqls in zip(batch, cands):
                out = []
                for sql in sqls:
                    line, _ = scorer.score(rec, sql)
                    res = execute(rec["db_path"], sql, timeout_s=2.0, row_cap=1000) if rec.get("db_path") else None
                    ok = bool(res is not None and res.ok)
                    out.append({"sql": sql, "correct": bool(line["correct"]), "runs": ok,
                                "rows": len(res.rows) if ok else -1, "columns": len(res.columns) if ok else -1,
                                "empty": ok and not informative_result(res.rows),
                                "key": result_key(res.rows) if ok else None})
                rows.append({"db_id": rec.get("db_id"), "question": rec["question"], "gold": rec["answer"],
                             "informative": line.get("gold_informative"), "candidates": out})
            print(f"  {len(rows)}/{len(records)} questions, {time.perf_counter() - t0:.0f} s", file=sys.stderr,
                  flush=True)
    finally:
        scorer.close()
    return rows


def features(question: str, cands: list[dict]) -> list[list[float]]:
    """One feature row per candidate of a question (see the module docstring)."""
    q = question.lower()
    qwords = set(re.findall(r"[a-z0-9]+", q))
    votes = Counter(c["key"] for c in cands if c["key"] is not None)
    out = []
    for i, c in enumerate(cands):
        s = c["sql"].lower()
        f = [i, i == 0, c["runs"], c["rows"], math.log1p(max(c["rows"], 0)), c["empty"], c["columns"],
             votes[c["key"]] / len(cands) if c["key"] is not None else 0.0, len(s.split()), s.count(" join ")]
        for q_cue, s_cue in CUES:
            a, b = bool(re.search(q_cue, q)), bool(re.search(s_cue, s))
            f += [a and b, a and not b, b and not a]
        names = set(re.findall(r"[a-z_][a-z0-9_]*", s)) - _SQL_WORDS
        parts = [w for name in names for w in name.split("_") if w and not re.fullmatch(r"t\d+", w)]
        f += [sum(w in qwords or w + "s" in qwords or w.rstrip("s") in qwords for w in parts) / max(1, len(parts)),
              len(names), c["columns"] - 1 - q.count(" and ")]
        out.append([float(x) for x in f])
    return out


def pick_consensus(cands: list[dict]) -> int:
    """The candidate whose result the most beams share, votes weighted 1/(rank+1); beam 0 when none runs."""
    votes: Counter = Counter()
    for i, c in enumerate(cands):
        if c["key"] is not None:
            votes[c["key"]] += 1.0 / (i + 1)
    best, score = 0, -1.0
    for i, c in enumerate(cands):
        if c["key"] is not None and votes[c["key"]] > score + 1e-9:
            best, score = i, votes[c["key"]]
    return best


def rerank_by_database(rows: list[dict]) -> list[int]:
    """The reranker's pick per question, each database scored by a model trained on the others."""
    import numpy as np
    from sklearn.ensemble import GradientBoostingClassifier

    feats = [np.array(features(r["question"], r["candidates"])) for r in rows]
    labels = [np.array([c["correct"] for c in r["candidates"]]) for r in rows]
    picks = [0] * len(rows)
    for db in sorted({r["db_id"] for r in rows}):
        train = [i for i, r in enumerate(rows) if r["db_id"] != db]
        test = [i for i, r in enumerate(rows) if r["db_id"] == db]
        y = np.concatenate([labels[i] for i in train])
        if y.all() or not y.any():
            continue
        clf = GradientBoostingClassifier(n_estimators=150, max_depth=3, learning_rate=0.05, subsample=0.8,
                                         random_state=0).fit(np.vstack([feats[i] for i in train]), y)
        for i in test:
            picks[i] = int(np.argmax(clf.predict_proba(feats[i])[:, 1]))
    return picks


def share(rows: list[dict], hits: list[bool]) -> tuple[float, float]:
    """(share of all questions, share of questions with an informative gold result) with a hit."""
    inf = [hit for r, hit in zip(rows, hits) if r.get("informative")]
    return sum(hits) / max(1, len(rows)), sum(inf) / max(1, len(inf))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory, run id, run:<id> or champion")
    ap.add_argument("--registry", default="runs")
    ap.add_argument("--data", help="test JSONL (records with question, context, answer, db_path)")
    ap.add_argument("--candidates", help="JSONL written by --save: score these instead of decoding")
    ap.add_argument("--save", help="write the candidates and their verdicts here (JSONL)")
    ap.add_argument("--beams", type=int, default=8)
    ap.add_argument("--plain", action="store_true", help="unconstrained beam search")
    ap.add_argument("--limit", type=int, default=None, help="first N questions only")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-rerank", action="store_true", help="skip the cross-validated reranker")
    args = ap.parse_args(argv)
    if args.candidates:
        with open(args.candidates, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    elif args.model and args.data:
        rows = decode(args)
    else:
        ap.error("give --model and --data, or --candidates")
    if args.save:
        with open(args.save, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    k_max = max(len(r["candidates"]) for r in rows)
    result: dict = {"n": len(rows), "beams": k_max, "oracle": {}}
    print(f"{len(rows)} questions, {k_max} beams each")
    print(f"{'choice':<40} {'EX':>6} {'EX, gold not empty/zero':>24}")
    k = 1
    while k <= k_max:
        ex, inf = share(rows, [any(c["correct"] for c in r["candidates"][:k]) for r in rows])
        result["oracle"][k] = {"ex": round(ex, 4), "informative": round(inf, 4)}
        print(f"{f'oracle: one of the first {k} right':<40} {ex:>6.3f} {inf:>24.3f}")
        k *= 2
    picks = {"top beam": lambda r: 0,
             "first that runs": lambda r: next((i for i, c in enumerate(r["candidates"]) if c["runs"]), 0),
             "execution consensus": lambda r: pick_consensus(r["candidates"])}
    chosen = {name: [fn(r) for r in rows] for name, fn in picks.items()}
    if not args.no_rerank and len({r["db_id"] for r in rows}) > 1:
        chosen["reranker (by database)"] = rerank_by_database(rows)
    for name, idx in chosen.items():
        ex, inf = share(rows, [r["candidates"][i]["correct"] for r, i in zip(rows, idx)])
        result[name] = {"ex": round(ex, 4), "informative": round(inf, 4)}
        print(f"{name:<40} {ex:>6.3f} {inf:>24.3f}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
