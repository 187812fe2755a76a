"""`t2sql predict` functions: one line per question, in order, through the model's own prompt format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import TINY_MODEL

from t2sql.config import TrainConfig
from t2sql.io import write_jsonl
from t2sql.predict import predict_records, predict_spider, spider_records
from t2sql.prompt import PromptOptions, build_source, build_target, save_prompt_options

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "spider_sample"
DBS = ("gymnast", "musical")
OPTS = PromptOptions(format="linked", placeholders=True, column_types=False)


@pytest.fixture(scope="module")
def spider_dir(tmp_path_factory) -> Path:
    """A Spider-layout directory over two sample databases with a six-question dev split."""
    root = tmp_path_factory.mktemp("spider")
    tables = [e for e in json.loads((SAMPLE / "tables.json").read_text()) if e["db_id"] in DBS]
    (root / "tables.json").write_text(json.dumps(tables))
    for db in DBS:
        (root / "database" / db).mkdir(parents=True)
        shutil.copy(SAMPLE / "database" / db / f"{db}.sqlite", root / "database" / db / f"{db}.sqlite")
    train = json.loads((SAMPLE / "train_spider.json").read_text())
    dev = [q for q in train if q["db_id"] in DBS][:6]
    (root / "dev.json").write_text(json.dumps(dev))
    return root


@pytest.fixture(scope="module")
def constant_model(tmp_path_factory, spider_dir) -> Path:
    """A tiny T5 trained to answer ``SELECT COUNT(*) FROM t1`` (the first table) to everything."""
    import torch

    from t2sql.modeling import build_t5, train_tokenizer
    from t2sql.training import train_model

    from t2sql.config import ModelConfig

    work = tmp_path_factory.mktemp("model")
    records = list(spider_records(spider_dir, "dev"))
    first = {r["db_id"]: json.loads((spider_dir / "tables.json").read_text()) for r in records}
    rows = []
    for r in records:
        table = next(e for e in first[r["db_id"]] if e["db_id"] == r["db_id"])["table_names_original"][0]
        rows.append({**r, "answer": f"SELECT count(*) FROM {table}"})
    write_jsonl(work / "train.jsonl", rows * 8)
    write_jsonl(work / "val.jsonl", rows)
    texts = [build_source(r["question"], r["context"], OPTS) for r in rows] + \
        [build_target(r["answer"], r["question"], r["context"], OPTS) for r in rows]
    tok = train_tokenizer(texts * 4, 400, extra_tokens=OPTS.extra_tokens())
    torch.manual_seed(0)
    model = build_t5(ModelConfig(**TINY_MODEL), tok)
    cfg = TrainConfig(epochs=25, batch_size=16, learning_rate=1e-2, max_source_length=160, max_target_length=24,
                      early_stopping_patience=0, num_threads=1, val_max_examples=6, eval_every_steps=1000,
                      warmup_ratio=0.0, lr_schedule="constant")
    train_model(model, tok, work / "train.jsonl", work / "val.jsonl", cfg, work / "train", progress=False, prompt=OPTS)
    out = work / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    save_prompt_options(OPTS, out)
    return out


def test_spider_records_follow_the_split(spider_dir):
    records = list(spider_records(spider_dir, "dev"))
    assert [r["question"] for r in records] == [q["question"] for q in json.loads((spider_dir / "dev.json").read_text())]
    assert all(r["db_path"] and Path(r["db_path"]).is_file() for r in records)
    assert all(r["context"].startswith("CREATE TABLE") for r in records)
    with pytest.raises(FileNotFoundError, match="split 'test'"):
        list(spider_records(spider_dir, "test"))


def test_predict_spider_writes_one_mapped_back_query_per_question(spider_dir, constant_model, tmp_path):
    out = tmp_path / "pred.sql"
    n = predict_spider(str(constant_model), spider_dir, "dev", out, batch_size=4, num_threads=1)
    lines = out.read_text().splitlines()
    assert n == len(lines) == 6
    tables = {e["db_id"]: e["table_names_original"][0] for e in json.loads((spider_dir / "tables.json").read_text())}
    dev = json.loads((spider_dir / "dev.json").read_text())
    # The model writes placeholders; the translator maps them back with the saved prompt options.
    assert lines == [f"SELECT COUNT(*) FROM {tables[q['db_id']]}" for q in dev]

    from t2sql.evaluation import score_spider

    scored = score_spider(out, spider_dir, "dev")
    assert scored["n"] == 6
    expected = sum(q["query"].lower().replace(" ", "") == f"selectcount(*)from{tables[q['db_id']].lower()}"
                   for q in dev) / 6
    assert scored["execution_accuracy"] >= expected


def test_predict_records_streams_a_jsonl_file(spider_dir, constant_model, tmp_path):
    records = list(spider_records(spider_dir, "dev"))
    data = tmp_path / "q.jsonl"
    write_jsonl(data, [{"question": r["question"], "context": r["context"]} for r in records[:3]])
    out = tmp_path / "pred.sql"
    assert predict_records(str(constant_model), data, out, chunk=2, num_threads=1) == 3
    assert len(out.read_text().splitlines()) == 3
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"question": "q"}])
    with pytest.raises(ValueError, match="record 1 has no 'context'"):
        predict_records(str(constant_model), bad, out)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert predict_records(str(constant_model), empty, tmp_path / "none.sql") == 0
    assert (tmp_path / "none.sql").read_text() == ""


def test_evaluate_cache_key_follows_a_model_file_edited_in_place(tmp_path):
    import os

    from cli import _model_key

    prompt = tmp_path / "t2sql_prompt.json"
    prompt.write_text('{"format": "linked"}')
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    folder_time = os.path.getmtime(tmp_path)
    first = _model_key(tmp_path)
    assert _model_key(tmp_path) == first
    with prompt.open("r+") as f:  # rewritten in place: the folder's own time does not move
        f.write('{"format": "linked", "order_words": true}')
    assert os.path.getmtime(tmp_path) == folder_time
    assert _model_key(tmp_path) != first
