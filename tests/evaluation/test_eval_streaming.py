"""evaluate_predictions / evaluate_model: streaming in batches, the metrics they report, corpus BLEU."""

import json
import sqlite3
from pathlib import Path

import pytest
import sacrebleu

from t2sql.config import EvalConfig
from t2sql.evaluation import ExampleScorer, ScoringOptions, evaluate_model, evaluate_predictions
from t2sql.evaluation.evaluate import PREDICTIONS_FILE

SPIDER = Path(__file__).resolve().parents[2] / "data" / "spider_sample"


def spider_records(n):
    questions = json.loads((SPIDER / "train_spider.json").read_text())[:n]
    for i, q in enumerate(questions):
        db = SPIDER / "database" / q["db_id"] / f"{q['db_id']}.sqlite"
        yield {"id": f"s{i}", "question": q["question"], "context": "", "answer": q["query"],
               "db_id": q["db_id"], "db_path": str(db), "source": "spider"}


class CountingScorer(ExampleScorer):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.scored = 0

    def score(self, record, pred_sql, latency_ms=None):
        self.scored += 1
        return super().score(record, pred_sql, latency_ms)


def test_records_are_read_one_batch_ahead_at_most(tmp_path):
    batch = 7
    scorer = CountingScorer(ScoringOptions())
    pulled = {"records": 0, "preds": 0}

    def records():
        for r in spider_records(40):
            # Reading record k before examples up to k - batch are scored means reading ahead too far.
            if pulled["records"] - scorer.scored >= batch:
                raise AssertionError(f"record {pulled['records']} read with only {scorer.scored} scored")
            pulled["records"] += 1
            yield r

    def predictions():
        for r in spider_records(40):
            if pulled["preds"] - scorer.scored >= batch:
                raise AssertionError("predictions read too far ahead")
            pulled["preds"] += 1
            yield r["answer"]

    m = evaluate_predictions(records(), predictions(), EvalConfig(batch_size=batch), tmp_path, scorer=scorer)
    assert m["n_examples"] == 40 and m["execution_accuracy"] == 1.0 and pulled["records"] == 40


def shop_db(tmp_path, rows: str):
    """A one-table SQLite shop (item: id, name, price) holding ``rows`` (an SQL VALUES list)."""
    db = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(f"CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL); INSERT INTO item VALUES {rows};")
    conn.close()
    return db


def test_metrics_on_a_small_database(tmp_path):
    db = shop_db(tmp_path, "(1, 'pen', 1.5), (2, 'book', 12.0), (3, 'ink', 4.0)")
    base = {"context": "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL)", "db_id": "shop",
            "db_path": str(db), "source": "spider"}
    golds = ["SELECT name FROM item WHERE price > 2", "SELECT count(*) FROM item", "SELECT max(price) FROM item",
             "SELECT name FROM item ORDER BY price DESC"]
    preds = [{"sql": "select NAME from item where price > 2", "latency_ms": 10.0},
             {"sql": "SELECT count(id) FROM item", "latency_ms": 20.0},
             {"sql": "SELECT min(price) FROM item", "latency_ms": 30.0},
             {"sql": "SELECT name FROM item ORDER BY", "latency_ms": 40.0}]
    records = [{**base, "id": str(i), "question": f"q{i}", "answer": g} for i, g in enumerate(golds)]
    m = evaluate_predictions(records, preds, EvalConfig(batch_size=3), tmp_path / "out")
    assert m["n_examples"] == 4 and m["n_with_database"] == 4
    assert m["exact_match"] == 0.25            # only the first, after normalisation
    assert m["exact_set_match"] == 0.25        # count(id) is another column to Spider
    assert m["execution_accuracy"] == 0.5      # first and second give the gold rows
    assert m["parse_rate"] == 0.75
    assert m["execution_success_rate"] == 0.75
    assert m["latency_ms_p50"] == pytest.approx(25.0) and m["latency_ms_p95"] == pytest.approx(38.5)
    assert m["error_categories"]["correct"]["count"] == 2
    assert m["error_categories"]["wrong_aggregation"]["count"] == 1
    assert m["error_categories"]["does_not_parse"]["count"] == 1
    assert set(m["by_hardness"]) <= {"easy", "medium", "hard", "extra"}
    assert m["by_scenario"]["filter"]["n"] == 1
    hyps = [p["sql"] for p in preds]
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [golds]).score)
    lines = [json.loads(x) for x in (tmp_path / "out" / PREDICTIONS_FILE).read_text().splitlines()]
    assert [x["execution_match"] for x in lines] == [True, True, False, False]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["n_examples"] == 4


def test_streamed_bleu_equals_corpus_bleu(tmp_path):
    records = list(spider_records(60))
    preds = [r["answer"].replace("count(*)", "count(id)").replace("WHERE", "where") for r in records]
    m = evaluate_predictions(records, preds, EvalConfig(batch_size=8), tmp_path)
    expected = sacrebleu.corpus_bleu(preds, [[r["answer"] for r in records]]).score
    assert m["bleu"] == pytest.approx(expected, abs=1e-9)
    assert m["bleu"] < 100


def test_counts_of_records_and_predictions_must_agree(tmp_path):
    with pytest.raises(ValueError, match="predictions ended after 3"):
        evaluate_predictions(spider_records(5), ["SELECT 1"] * 3, EvalConfig(batch_size=2), tmp_path)
    with pytest.raises(ValueError, match="more predictions than records"):
        evaluate_predictions(spider_records(2), ["SELECT 1"] * 3, EvalConfig(batch_size=2), tmp_path)
    m = evaluate_predictions(spider_records(10), ["SELECT 1"] * 4, EvalConfig(batch_size=3, max_examples=4), tmp_path)
    assert m["n_examples"] == 4


def test_evaluate_model_with_a_tiny_real_model(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    from t2sql.inference.translator import Translator
    from t2sql.modeling import train_tokenizer

    records = list(spider_records(12))
    texts = [r["question"] for r in records] + [r["answer"] for r in records] * 3
    model_dir = tmp_path / "model"
    tok = train_tokenizer(texts, vocab_size=300, out_dir=model_dir)
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2,
                   d_kv=16, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id)
    T5ForConditionalGeneration(cfg).save_pretrained(model_dir)
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in records))
    translator = Translator(model_dir, num_threads=1, max_new_tokens=8, batch_size=4)
    m = evaluate_model(translator, test, EvalConfig(batch_size=5), tmp_path / "eval")
    assert m["n_examples"] == 12
    assert m["latency_ms_p50"] > 0 and m["latency_ms_p95"] >= m["latency_ms_p50"]
    assert 0 <= m["execution_accuracy"] <= 1 and m["n_with_database"] == 12
    lines = (tmp_path / "eval" / PREDICTIONS_FILE).read_text().splitlines()
    assert len(lines) == 12 and all("error_category" in json.loads(x) for x in lines)
    assert sum(v["count"] for v in m["error_categories"].values()) == 12


def test_predictions_much_slower_than_gold_are_flagged(tmp_path):
    db = tmp_path / "n.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE n (v INTEGER)")
    conn.executemany("INSERT INTO n VALUES (?)", [(i,) for i in range(100)])
    conn.commit()
    conn.close()
    record = {"id": "1", "question": "how many?", "context": "CREATE TABLE n (v INTEGER)", "db_id": "n",
              "db_path": str(db), "answer": "SELECT count(*) * 10000 FROM n"}
    # The same answer through a million-row cross join: far beyond 2x the gold query's time.
    slow = "SELECT count(*) FROM n AS a, n AS b, n AS c"
    m = evaluate_predictions([record, dict(record, id="2")], [slow, record["answer"]], None, tmp_path / "out")
    lines = [json.loads(x) for x in (tmp_path / "out" / PREDICTIONS_FILE).read_text().splitlines()]
    assert [x["execution_match"] for x in lines] == [True, True]
    assert lines[0]["slow_query"] is True and lines[0]["pred_exec_ms"] > 2 * lines[0]["gold_exec_ms"]
    assert m["slow_query_share"] == pytest.approx(0.5 if lines[1]["slow_query"] is False else 1.0)


def test_empty_or_zero_gold_results_are_counted_apart(tmp_path):
    db = shop_db(tmp_path, "(1, 'pen', 1.5), (2, 'book', 12.0)")
    base = {"context": "", "db_id": "shop", "db_path": str(db), "source": "spider"}
    cases = [  # (gold, prediction): a wrong query matches an empty gold result and a count of 0
        ("SELECT name FROM item WHERE name = 'cap'", "SELECT name FROM item WHERE name = 'hat'"),
        ("SELECT count(*) FROM item WHERE price > 100", "SELECT count(*) FROM item WHERE price > 50"),
        ("SELECT name FROM item WHERE price > 2", "SELECT name FROM item WHERE price > 2"),
        ("SELECT count(*) FROM item", "SELECT count(*) FROM item WHERE price > 2"),
        ("SELECT name FROM item", ""),
    ]
    records = [{**base, "id": str(i), "question": f"q{i}", "answer": g} for i, (g, _) in enumerate(cases)]
    m = evaluate_predictions(records, [p for _, p in cases], EvalConfig(), tmp_path / "out")
    assert m["execution_accuracy"] == pytest.approx(3 / 5)
    assert m["n_informative"] == 3
    assert m["execution_accuracy_informative"] == pytest.approx(1 / 3)
    lines = [json.loads(x) for x in (tmp_path / "out" / PREDICTIONS_FILE).read_text().splitlines()]
    assert [x.get("gold_informative") for x in lines] == [False, False, True, True, True]


def test_each_question_reaches_the_translator_with_its_database(tmp_path):
    class Recording:
        def __init__(self):
            self.pairs = []

        def translate(self, pairs):
            self.pairs += list(pairs)
            return ["SELECT 1"] * len(pairs)

    records = list(spider_records(4)) + [{"id": "cc", "question": "How many heads?", "answer": "SELECT count(*) FROM head",
                                          "context": "CREATE TABLE head (age INTEGER)", "db_path": None}]
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in records))
    translator = Recording()
    evaluate_model(translator, test, EvalConfig(batch_size=2), tmp_path / "eval")
    assert [p[2] for p in translator.pairs] == [r["db_path"] for r in records]
    assert all(p[2] and p[2].endswith(".sqlite") for p in translator.pairs[:4]) and translator.pairs[4][2] is None
