"""Validation execution accuracy for the learning curve (the one decoder, the one judge), and value pointers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import TINY_MODEL

from t2sql.config import ModelConfig
from t2sql.data.sources import load_spider, load_wikisql
from t2sql.io import write_jsonl
from t2sql.linking import mark_question, point_values, question_word_spans, resolve_pointers
from t2sql.linking.pointers import bare_value
from t2sql.prompt import PromptOptions, build_source, build_target, postprocess
from t2sql.evaluation.judge import ExampleScorer, score_predictions
from t2sql.validation import VALIDATION_SCORING, evenly_spaced, translate_records, validation_metrics_fn

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "spider_sample"
WIKISQL = ROOT / "tests" / "fixtures" / "data" / "wikisql"
POINTERS = PromptOptions(format="linked", placeholders=True, link_marks=True, value_pointers=True,
                         infer_joins=True, snap_values=True)


def _records():
    spider, _ = load_spider(str(SAMPLE), databases=["gymnast", "musical"])
    wikisql, _ = load_wikisql(str(WIKISQL))
    return spider[:10] + wikisql[:10]


def test_gold_queries_score_full_marks_and_wrong_ones_do_not():
    records = _records()
    judge = ExampleScorer(VALIDATION_SCORING)
    gold = score_predictions(records, [r["answer"] for r in records], judge)
    assert gold == {"execution_accuracy": 1.0, "execution_success_rate": 1.0, "n": 20}
    broken = score_predictions(records, ["SELEC nothing"] * 20, judge)
    assert broken == {"execution_accuracy": 0.0, "execution_success_rate": 0.0, "n": 20}
    # Runs everywhere, right nowhere: a constant that no gold query returns.
    const = score_predictions(records, ["SELECT 'no such answer'"] * 20, judge)
    assert const["execution_success_rate"] == 1.0 and const["execution_accuracy"] == 0.0


def test_value_pointers_round_trip():
    q = "Which routes have \"Replaced by US 81\" listed with no. larger than 4.5?"
    spans = question_word_spans(q)
    assert [q[a:b] for a, b in spans][:6] == ["Which", "routes", "have", '"', "Replaced", "by"]
    assert mark_question(q).startswith('w1 Which w2 routes w3 have w4 " w5 Replaced')
    sql = "SELECT a FROM t WHERE b LIKE '%Replaced by US 81%' AND c > 4.5 AND d = 'elsewhere' LIMIT 1"
    pointed = point_values(sql, q)
    assert pointed == "SELECT a FROM t WHERE b LIKE '% w5 w8 %' AND c > w16 AND d = 'elsewhere' LIMIT 1"
    assert resolve_pointers(pointed, q) == sql
    assert resolve_pointers("SELECT a FROM t WHERE b = 'w90'", q) == "SELECT a FROM t WHERE b = 'w90'"


def test_a_bare_pointer_is_always_a_value():
    """A bare pointer (written for numbers) to another word is read as a number or a string, never as an
    identifier: ``= w3`` over ``R`` is ``= 'R'``, not the column ``R``."""
    q = "Films rated R with more than four stars , 200,000 votes or 4.5 , and O'Neil ?"
    sql = "SELECT a FROM t WHERE r = w3 AND s > w7 AND v > w10 AND x < w13 AND y = w16 AND z = w14"
    assert resolve_pointers(sql, q) == ("SELECT a FROM t WHERE r = 'R' AND s > 4 AND v > 200000 AND x < 4.5 "
                                        "AND y = 'O' AND z = ','")
    assert [bare_value(w) for w in ("56", "-3.5", "1,000", "Twenty", "million", "O'Neil")] == [
        "56", "-3.5", "1000", "20", "1000000", "'O''Neil'"]


def test_pointer_targets_map_back_to_the_gold_on_every_fixture_record():
    judge = ExampleScorer(VALIDATION_SCORING)
    records = _records()
    targets = [build_target(r["answer"], r["question"], r["context"], POINTERS) for r in records]
    # WikiSQL values are spans of the question: they become pointers, not text.
    wikisql = [t for t, r in zip(targets, records) if r["source"] == "wikisql" and "WHERE" in r["answer"]]
    assert wikisql and all(re.search(r"= (' )?w\d+", t) for t in wikisql), wikisql
    preds = [postprocess(t, r["question"], r["context"], POINTERS) for t, r in zip(targets, records)]
    assert score_predictions(records, preds, judge)["execution_accuracy"] == 1.0


def test_validation_metrics_fn_decodes_a_fixed_sample(tmp_path):
    import torch

    from t2sql.modeling import build_t5, train_tokenizer

    records = _records()
    write_jsonl(tmp_path / "val.jsonl", records)
    texts = [build_source(r["question"], r["context"], POINTERS) for r in records] + [r["answer"] for r in records]
    tok = train_tokenizer(texts * 3, 400, extra_tokens=POINTERS.extra_tokens())
    torch.manual_seed(0)
    model = build_t5(ModelConfig(**TINY_MODEL), tok)
    fn = validation_metrics_fn(tmp_path / "val.jsonl", tok, POINTERS, n=6, max_new_tokens=8)
    got = fn(model)
    assert set(got) == {"val_execution_accuracy", "val_execution_success", "val_decode_s"}
    assert 0.0 <= got["val_execution_accuracy"] <= got["val_execution_success"] <= 1.0
    model.train()
    preds = translate_records(model, tok, records[:6], POINTERS, max_new_tokens=8)
    assert model.training  # given back in the mode it was in
    assert len(preds) == 6 and all(isinstance(p, str) for p in preds)
    assert json.dumps(got)  # a plain dict of numbers: it joins the training history

    # The in-memory decoder writes what the same model serves once saved.
    from t2sql.inference import Translator
    from t2sql.prompt import save_prompt_options

    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    save_prompt_options(POINTERS, tmp_path / "model")
    served = Translator(tmp_path / "model", max_new_tokens=8, device="cpu")
    assert served.translate([(r["question"], r["context"], r.get("db_path")) for r in records[:6]]) == preds


def test_repair_closes_cut_off_output():
    from t2sql.linking import repair_sql

    assert repair_sql("SELECT COUNT(*) FROM t1 WHERE c3 = '") == "SELECT COUNT(*) FROM t1"
    assert repair_sql("SELECT c1 FROM t1 WHERE c2 = ' w5 ' AND") == "SELECT c1 FROM t1 WHERE c2 = ' w5 '"
    assert repair_sql("SELECT c1 FROM t1 WHERE c2 IN (SELECT c3 FROM t2 WHERE c4 = 'ab") == \
        "SELECT c1 FROM t1 WHERE c2 IN (SELECT c3 FROM t2)"
    assert repair_sql("SELECT a FROM t WHERE b = 'it''s'") == "SELECT a FROM t WHERE b = 'it''s'"
    opts = POINTERS.replace(repair=True)
    ctx = "CREATE TABLE singer (name TEXT, country TEXT)"
    assert postprocess("SELECT COUNT(*) FROM t1 WHERE c2 = '", "How many singers?", ctx, opts) == \
        "SELECT COUNT(*) FROM singer"
    assert postprocess("SELECT COUNT(*) FROM t1 WHERE c2 = '", "How many singers?", ctx, POINTERS) != \
        "SELECT COUNT(*) FROM singer"  # off unless asked for


def test_validation_sample_is_spread_over_the_file(tmp_path):
    write_jsonl(tmp_path / "v.jsonl", [{"id": str(i)} for i in range(100)])
    picked = [int(r["id"]) for r in evenly_spaced(tmp_path / "v.jsonl", 4)]
    assert picked == [0, 25, 50, 75]
    assert len(evenly_spaced(tmp_path / "v.jsonl", 500)) == 100
