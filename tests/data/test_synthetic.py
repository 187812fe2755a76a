"""Synthetic training questions: drawn only from training databases, every query runs and returns rows,
value swaps change the question and the query together, and the option reaches the prepared data."""

import hashlib
import json

import sqlglot

from conftest import SAMPLE
from t2sql.config import load_config
from t2sql.data.preprocess import prepare_data
from t2sql.data.sources import load_spider
from t2sql.data.synthetic import SOURCE, synthesize, template_questions, value_swaps
from t2sql.evaluation.execution import execute
from t2sql.evaluation.schema import schema_from_context


def _records(dbs):
    return [r for r in load_spider(str(SAMPLE), databases=dbs)[0]]


def test_template_questions_run_and_name_their_columns():
    recs = _records(["club_1"])
    db = recs[0]["db_path"]
    before = hashlib.sha256(open(db, "rb").read()).hexdigest()
    out = template_questions(recs[0]["context"], db, "club_1", 15, seed=3)
    assert len(out) == 15 and len({r["answer"] for r in out}) == 15
    schema = schema_from_context(recs[0]["context"])
    for rec in out:
        assert rec["source"] == SOURCE and rec["db_id"] == "club_1" and rec["context"] == recs[0]["context"]
        result = execute(db, rec["answer"], timeout_s=2)
        assert result.ok and result.rows, rec["answer"]
        tree = sqlglot.parse_one(rec["answer"], read="sqlite")
        for table in tree.find_all(sqlglot.exp.Table):
            assert schema.has_table(table.name)
        keys = {id(c) for j in tree.find_all(sqlglot.exp.Join) for c in j.find_all(sqlglot.exp.Column)}
        for col in tree.find_all(sqlglot.exp.Column):  # the question says each column's words (join keys aside)
            if id(col) not in keys:
                assert col.name.replace("_", " ").lower() in rec["question"].lower(), (rec["question"], col.name)
    assert hashlib.sha256(open(db, "rb").read()).hexdigest() == before  # read-only
    assert template_questions(recs[0]["context"], db, "club_1", 15, seed=3) == out  # same seed, same draw


def test_value_swap_changes_question_and_query_together():
    rec = {"id": "x", "question": "How many musicals did Bob Fosse get nominated for?",
           "answer": "SELECT count(*) FROM musical WHERE Nominee = 'Bob Fosse'",
           **{k: v for k, v in _records(["musical"])[0].items() if k in ("context", "db_path", "db_id")}}
    out = value_swaps(rec, 2, seed=0)
    assert [r["question"] for r in out] == ["How many musicals did Cleavant Derricks get nominated for?"]
    assert out[0]["answer"] == "SELECT COUNT(*) FROM musical WHERE Nominee = 'Cleavant Derricks'"
    assert execute(rec["db_path"], out[0]["answer"], timeout_s=2).rows[0][0] > 0
    # A value the question does not hold as whole words, or holds twice, is not swapped.
    assert value_swaps({**rec, "question": "How many musicals did Bob Fosses get nominated for?"}, 2, 0) == []
    assert value_swaps({**rec, "question": "Bob Fosse, or Bob Fosse: how many?"}, 2, 0) == []


def test_synthesize_reads_only_the_databases_it_is_given():
    train = _records(["club_1", "gymnast"])
    out, stats = synthesize(train, templates_per_database=10, swaps=1, seed=1)
    assert {r["db_id"] for r in out} <= {"club_1", "gymnast"}
    assert stats["templates"] + stats["value_swaps"] >= stats["kept"] == len(out) > 10
    known = {(r["question"], r["answer"]) for r in train}
    assert not any((r["question"], r["answer"]) in known for r in out)


def test_prepared_data_adds_synthetic_records_to_train_only(tmp_path):
    cfg = load_config(raw={
        "name": "syn", "work_dir": str(tmp_path),
        "data": {"sources": [{"kind": "spider", "path": str(SAMPLE),
                              "databases": ["club_1", "gymnast", "musical", "wrestler", "climbing", "election"]}],
                 "val_fraction": 0.2, "test_fraction": 0.2,
                 "synthetic": {"templates_per_database": 8, "value_swaps": 1}}})
    out = prepare_data(cfg.data, tmp_path / "data", seed=0)
    splits = {s: [json.loads(line) for line in open(out[s])] for s in ("train", "validation", "test")}
    held_out = {r["db_id"] for s in ("validation", "test") for r in splits[s]}
    synthetic = [r for r in splits["train"] if r["source"] == SOURCE]
    assert synthetic and not any(r["source"] == SOURCE for s in ("validation", "test") for r in splits[s])
    assert not {r["db_id"] for r in synthetic} & held_out
    assert out["stats"]["synthetic"]["kept"] == len(synthetic)
    assert out["stats"]["splits"]["train"]["by_source"][SOURCE] == len(synthetic)
