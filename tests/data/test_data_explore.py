"""explore: report files, counts, truncated shares on crafted lengths, SQL feature counts."""

from __future__ import annotations

import json

import pytest

from t2sql.data.explore import explore
from t2sql.data.explore import sql_features
from t2sql.io import write_jsonl
from t2sql.prompt import build_source

CTX = "CREATE TABLE t (a TEXT, b TEXT)"  # 7 whitespace words
ANSWERS = [
    "SELECT a FROM t",  # 4 words
    "SELECT COUNT(*) FROM t GROUP BY a HAVING COUNT(*) > 1",  # 11 words
    "SELECT DISTINCT a FROM t JOIN u ON t.a = u.a ORDER BY a LIMIT 1",  # 16 words
    "SELECT a FROM t WHERE a IN (SELECT b FROM u) UNION SELECT c FROM v WHERE c LIKE '%x%'",  # 19 words
]


def record(i: int, question_words: int, answer: str, source: str = "spider") -> dict:
    return {"id": f"r{i}", "question": " ".join(["w"] * question_words), "context": CTX, "answer": answer,
            "db_id": f"db{i}", "db_path": None, "source": source}


@pytest.fixture
def crafted(tmp_path):
    # source = "question: <q> schema: <ctx>": 2 + q + 7 words -> 10, 20, 30, 40 in train
    train = [record(i, n, ANSWERS[i]) for i, n in enumerate((1, 11, 21, 31))]
    validation = [record(10, 1, ANSWERS[0], "wikisql")]
    test = [record(20, 51, ANSWERS[1], "create_context")]
    paths = {}
    for name, rows in (("train", train), ("validation", validation), ("test", test)):
        paths[name] = str(tmp_path / f"{name}.jsonl")
        write_jsonl(paths[name], rows)
    return paths


def test_explore_whitespace_counts(crafted, tmp_path):
    out = tmp_path / "explore"
    summary = explore(crafted, out, max_source_length=25, max_target_length=11)
    for name in ("exploration.md", "exploration.html", "exploration.json", "counts.png", "source_lengths.png",
                 "target_lengths.png", "sql_features.png"):
        assert (out / name).stat().st_size > 0, name
    assert summary["counts"] == {"train": {"spider": 4}, "validation": {"wikisql": 1},
                                 "test": {"create_context": 1}}
    assert summary["length_unit"] == "whitespace words" and summary["tokenizer"] is None
    src = summary["lengths"]["by_split"]["train"]["source"]
    assert (src["min"], src["max"], src["truncated"], src["truncated_share"]) == (10, 40, 2, 0.5)
    overall = summary["lengths"]["source"]  # 10, 20, 30, 40, 10, 60 words
    assert overall["truncated"] == 3 and overall["truncated_share"] == pytest.approx(0.5)
    tgt = summary["lengths"]["target"]  # 4, 11, 16, 19, 4, 11 words; > 11 truncated
    assert tgt["truncated"] == 2 and tgt["truncated_share"] == pytest.approx(2 / 6)
    feats = summary["sql_features"]
    assert {f: v["count"] for f, v in feats.items()} == {
        "join": 1, "aggregate": 2, "group_by": 2, "order_by": 1, "limit": 1, "nested": 1, "set_operation": 1,
        "distinct": 1, "having": 2, "like": 1}
    assert feats["aggregate"]["share"] == pytest.approx(2 / 6)
    assert json.loads((out / "exploration.json").read_text()) == json.loads(json.dumps(summary))
    page = (out / "exploration.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<img" in page and 'src="counts.png"' not in page
    md = (out / "exploration.md").read_text()
    assert "whitespace-separated words" in md and "![counts](counts.png)" in md
    assert "| source | 10 |" in md and "50.00%" in md


def test_explore_with_tokenizer(crafted, tmp_path):
    from t2sql.modeling import train_tokenizer

    texts = [build_source(f"how many rows {i}", CTX) for i in range(50)] + ANSWERS * 10
    tok = train_tokenizer(texts, vocab_size=300)
    rows = [json.loads(line) for name in ("train", "validation", "test") for line in open(crafted[name])]
    src_lengths = [len(tok(build_source(r["question"], r["context"]))["input_ids"]) for r in rows]
    limit = sorted(src_lengths)[2]  # a limit inside the crafted range of lengths
    expected = sum(n > limit for n in src_lengths) / len(rows)
    assert 0 < expected < 1
    summary = explore(crafted, tmp_path / "tok", tokenizer=tok, max_source_length=limit, max_target_length=512)
    assert summary["length_unit"] == "tokens"
    assert summary["lengths"]["source"]["truncated_share"] == pytest.approx(expected)
    assert summary["lengths"]["source"]["max"] == max(src_lengths)
    assert summary["lengths"]["target"]["truncated"] == 0
    assert "tokens of the tokenizer" in (tmp_path / "tok" / "exploration.md").read_text()


def test_sql_features():
    assert sql_features("SELECT a FROM t") == set()
    assert sql_features("SELECT count(DISTINCT a) FROM t") == {"aggregate", "distinct"}
    assert sql_features("SELECT a FROM t EXCEPT SELECT a FROM u") == {"set_operation"}
    assert sql_features("SELECT a FROM (SELECT a FROM t) AS s") == {"nested"}
    assert sql_features("SELECT name FROM") is None
