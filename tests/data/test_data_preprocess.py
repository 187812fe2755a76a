"""prepare_data: normalised, de-duplicated splits with no database in two splits, byte-identical on rerun."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from t2sql.config import DataConfig
from t2sql.data import prepare_data
from t2sql.data.preprocess import assign_splits, group_key
from t2sql.io import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "data"
SPLITS = ("train", "validation", "test")


def config(**overrides) -> DataConfig:
    raw = {
        "sources": [
            {"kind": "spider", "path": str(ROOT / "data" / "spider_sample")},
            {"kind": "wikisql", "path": str(FIX / "wikisql"), "files": ["dev.jsonl", "malformed.jsonl"]},
            {"kind": "create_context", "path": str(FIX / "create_context" / "rows.jsonl")},
        ],
        "val_fraction": 0.15,
        "test_fraction": 0.15,
    }
    raw.update(overrides)
    return DataConfig.model_validate(raw)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    return prepare_data(config(), out, seed=7), out


def test_counts_rejects_and_duplicates(prepared):
    result, out = prepared
    stats = result["stats"]
    per_source = {s["kind"]: s for s in stats["sources"]}
    # the sample repeats one question word for word (same database and SQL)
    assert per_source["spider"]["loaded"] == 1486 and per_source["spider"]["duplicates"] == 1
    assert per_source["spider"]["records"] == 1485 and per_source["spider"]["rejects"] == 0
    assert per_source["wikisql"]["records"] == 21 and per_source["wikisql"]["rejects"] == 9
    # row 6 of rows.jsonl equals row 0 once "age  >  56" is normalised
    assert per_source["create_context"]["loaded"] == 7 and per_source["create_context"]["duplicates"] == 1
    assert per_source["create_context"]["records"] == 6
    assert stats["duplicates"] == 2 and stats["records"] == 1485 + 21 + 6
    assert stats["rejects"] == 18 and sum(stats["rejects_by_reason"].values()) == 18
    assert stats["rejects_by_reason"]["invalid JSON"] == 2
    assert stats["rejects_by_reason"]["unknown aggregation"] == 1
    rejects = list(read_jsonl(result["rejects"]))
    assert len(rejects) == 18 and all({"source", "file", "row", "reason", "raw"} <= set(r) for r in rejects)
    assert json.loads((out / "stats.json").read_text()) == stats
    total = 0
    for s in SPLITS:
        rows = list(read_jsonl(result[s]))
        assert len(rows) == stats["splits"][s]["records"] > 0
        total += len(rows)
    assert total == stats["records"]


def test_records_are_normalised_and_unique(prepared):
    result, _ = prepared
    rows = [r for s in SPLITS for r in read_jsonl(result[s])]
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({(r["question"], r["context"], r["answer"]) for r in rows}) == len(rows)
    assert not any("  " in r["question"] for r in rows)
    spider = [r for r in rows if r["source"] == "spider"]
    assert not any("  " in r["answer"] and "'" not in r["answer"] for r in spider)
    assert sum('"' in r["answer"] for r in spider) == 0  # every double-quoted value became '...'
    budget = next(r for r in rows if r["answer"].endswith("ORDER BY budget_in_billions DESC LIMIT 1"))
    assert budget["question"] == "Which department has the largest budget?"


def test_no_database_in_two_splits(prepared):
    result, _ = prepared
    where = defaultdict(set)
    for s in SPLITS:
        for r in read_jsonl(result[s]):
            where[group_key(r)].add(s)
    assert all(len(v) == 1 for v in where.values())
    spider_dbs = {s: {r["db_id"] for r in read_jsonl(result[s]) if r["source"] == "spider"} for s in SPLITS}
    assert all(spider_dbs[s] for s in SPLITS)
    assert sum(len(v) for v in spider_dbs.values()) == 24


def test_prepare_is_idempotent(prepared, tmp_path):
    result, out = prepared
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = prepare_data(config(), out, seed=7)
    assert again["fingerprint"] == result["fingerprint"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    elsewhere = prepare_data(config(), tmp_path / "other", seed=7)
    assert elsewhere["fingerprint"] == result["fingerprint"]
    reseeded = prepare_data(config(), tmp_path / "reseeded", seed=8)
    assert reseeded["fingerprint"] != result["fingerprint"]


def test_assignment_is_stable_when_data_grows():
    keys = [f"spider:db{i}" for i in range(200)]
    first = assign_splits(keys, 0.1, 0.1, seed=1)
    grown = assign_splits(keys + [f"wikisql:t{i}" for i in range(300)], 0.1, 0.1, seed=1)
    assert all(grown[k] == first[k] for k in keys)
    share = sum(v == "test" for v in grown.values()) / len(grown)
    assert 0.05 < share < 0.15


def test_every_split_gets_a_group_from_three():
    for seed in range(20):
        got = assign_splits(["a", "b", "c"], 0.1, 0.1, seed=seed)
        assert sorted(got.values()) == ["test", "train", "validation"]
    two = assign_splits(["a", "b"], 0.1, 0.1, seed=0)
    assert set(two.values()) <= set(SPLITS) and len(two) == 2
    none_asked = assign_splits([f"k{i}" for i in range(5)], 0.0, 0.1, seed=0)
    assert "validation" not in none_asked.values()


def test_random_split_mixes_databases(tmp_path):
    cfg = config(sources=[{"kind": "spider", "path": str(ROOT / "data" / "spider_sample"),
                           "databases": ["musical", "dorm_1"]}], split_by="random")
    result = prepare_data(cfg, tmp_path, seed=0)
    musical = {s for s in SPLITS for r in read_jsonl(result[s]) if r["db_id"] == "musical"}
    assert musical == set(SPLITS)


def test_nothing_usable_is_an_error(tmp_path):
    cfg = config(sources=[{"kind": "wikisql", "path": str(FIX / "wikisql" / "malformed.jsonl"),
                           "databases": ["no-such-table"]}])
    with pytest.raises(ValueError, match="no usable record"):
        prepare_data(cfg, tmp_path, seed=0)


def test_a_train_only_source_adds_training_data_without_moving_the_other_splits(tmp_path):
    spider = {"kind": "spider", "path": str(ROOT / "data" / "spider_sample")}
    wikisql = {"kind": "wikisql", "path": str(FIX / "wikisql"), "files": ["dev.jsonl"]}
    alone = prepare_data(config(sources=[spider]), tmp_path / "alone", seed=3)
    both = prepare_data(config(sources=[spider, {**wikisql, "train_only": True}]), tmp_path / "both", seed=3)
    # Validation and test are the Spider ones, byte for byte; every WikiSQL record is in train.
    for s in ("validation", "test"):
        assert Path(both[s]).read_bytes() == Path(alone[s]).read_bytes()
    train = list(read_jsonl(both["train"]))
    n_wikisql = both["stats"]["sources"][1]["records"]
    assert n_wikisql > 0 and both["stats"]["sources"][1]["train_only"] is True
    assert sum(r["source"] == "wikisql" for r in train) == n_wikisql
    assert len(train) == alone["stats"]["splits"]["train"]["records"] + n_wikisql
    # Without the flag the WikiSQL tables are split like any other.
    split = prepare_data(config(sources=[spider, wikisql]), tmp_path / "split", seed=3)
    held_out = [r for s in ("validation", "test") for r in read_jsonl(split[s]) if r["source"] == "wikisql"]
    assert held_out
