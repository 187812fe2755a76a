"""score_spider on the shipped Spider sample: gold scores 100 %, altered predictions do not."""

import json
from collections import Counter
from pathlib import Path

import pytest

from t2sql.evaluation import format_score_table, score_spider

SPIDER = Path(__file__).resolve().parents[2] / "data" / "spider_sample"
REFERENCE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "eval" / "spider_reference.json").read_text())


def write_lines(path, queries):
    path.write_text("".join(q.replace("\n", " ") + "\n" for q in queries))
    return path


def test_gold_predictions_score_100_percent_on_all_sample_questions(tmp_path):
    questions = json.loads((SPIDER / "train_spider.json").read_text())
    preds = write_lines(tmp_path / "gold.sql", [q["query"] for q in questions])
    result = score_spider(preds, SPIDER, split="train", out_path=tmp_path / "results.json")
    assert result["n"] == 1486
    assert result["exact_match"] == 1.0
    assert result["execution_accuracy"] == 1.0
    assert result["metrics"]["n_gold_errors"] == 0
    counts = Counter(REFERENCE["hardness"])
    for level, row in result["by_hardness"].items():
        assert row["count"] == counts[level]
        assert row["exact_match"] == 1.0 and row["execution_accuracy"] == 1.0
    entries = json.loads((tmp_path / "results.json").read_text())
    assert len(entries) == 1486
    assert all(e["exact_match"] is True and e["execution_match"] is True and e["error_category"] == "correct"
               for e in entries)
    assert {e["hardness"] for e in entries} == {"easy", "medium", "hard", "extra"}
    table = format_score_table(result)
    assert "EXECUTION ACCURACY" in table and "1486" in table


def test_altered_predictions_score_below_100_percent(tmp_path):
    questions = json.loads((SPIDER / "train_spider.json").read_text())[:200]
    split = tmp_path / "subset.json"
    split.write_text(json.dumps(questions))
    preds = []
    for i, q in enumerate(questions):
        if i % 4 == 1:
            preds.append(q["query"].replace("DESC", "ASC") if "DESC" in q["query"] else "SELECT nonsense FROM nowhere")
        elif i % 4 == 3:
            preds.append("SELEC broken")
        else:
            preds.append(q["query"])
    result = score_spider(write_lines(tmp_path / "pred.sql", preds), SPIDER, split=str(split),
                          out_path=tmp_path / "out.json")
    assert result["n"] == 200
    # Half the predictions are gold; an ASC for DESC may still return the same rows (e.g. one row).
    assert 0.5 <= result["execution_accuracy"] < 0.6
    assert result["exact_match"] == 0.5
    entries = json.loads((tmp_path / "out.json").read_text())
    for i, e in enumerate(entries):
        if i % 4 in (0, 2):
            assert e["execution_match"] is True and e["exact_match"] is True
        if i % 4 == 3:
            assert e["execution_match"] is False and e["error_category"] == "does_not_parse"
        if i % 4 == 1 and e["pred"] == "SELECT nonsense FROM nowhere":
            assert e["error_category"] == "unknown_table"
    assert result["error_categories"]["does_not_parse"] == 50


def test_prediction_count_must_match_questions(tmp_path):
    preds = write_lines(tmp_path / "short.sql", ["SELECT 1"] * 3)
    with pytest.raises(ValueError, match="3 predictions for 1486 questions"):
        score_spider(preds, SPIDER, split="train")
    with pytest.raises(FileNotFoundError, match="dev.json"):
        score_spider(preds, SPIDER, split="dev")
