"""write_report: HTML with embedded plots, Markdown and JSON, each section only when its data exists."""

import json

import pydantic
import pytest

from t2sql.compression.variants import report_sections as compression_sections
from t2sql.evaluation import evaluate_predictions
from t2sql.report import write_report
from t2sql.summary import RunSummary
from t2sql.techniques import report_sections

HEAD = "CREATE TABLE head (head_id INTEGER, name VARCHAR, age INTEGER)"


def evaluated(tmp_path):
    records = [{"id": str(i), "question": f"question {i}", "context": HEAD, "answer": gold, "db_id": None,
                "db_path": None, "source": "create_context"}
               for i, gold in enumerate(["SELECT name FROM head WHERE age > 50", "SELECT min(age) FROM head",
                                         "SELECT name FROM head ORDER BY age DESC LIMIT 1"])]
    preds = [{"sql": "SELECT name FROM head WHERE age > 50", "latency_ms": 12.0},
             {"sql": "SELECT max(age) FROM head", "latency_ms": 18.0},
             {"sql": "SELECT name FROM head ORDER BY age ASC LIMIT 1", "latency_ms": 25.0}]
    return evaluate_predictions(records, preds, None, tmp_path / "eval")


VARIANTS = [{"variant": "fp32", "backend": "torch-fp32", "precision": "fp32", "sparsity": 0.0, "size_mb": 24.0,
             "latency_ms_p50": 80.0, "exact_match": 0.2, "execution_accuracy": 0.3},
            {"variant": "onnx-int8", "backend": "onnx-int8", "precision": "int8", "sparsity": 0.0, "size_mb": 8.0,
             "latency_ms_p50": 30.0, "exact_match": 0.2, "execution_accuracy": 0.29}]
# Fine-tune summaries as the pipeline records them: each technique's facts from its summary(model).
FINETUNES = [{"technique": "adalora", "technique_summary": {"rank_pattern": {"encoder.block.0.q": 3,
                                                                             "encoder.block.0.v": 1},
                                                            "total_rank": 4, "initial_total_rank": 8, "target_r": 2}},
             {"technique": "bitnet", "technique_summary": {"bitlinear_layers": 12, "ramp": 1.0,
                                                           "zero_weight_fraction": 0.3141, "weight_bits": 2}},
             {"technique": "full", "technique_summary": {}}]


def test_full_report(tmp_path):
    metrics = evaluated(tmp_path)
    summary = {
        "metrics": metrics,
        "history": [{"step": s, "elapsed_s": 2.0 * s, "train_loss": 3 - 0.1 * s, "val_loss": 3.2 - 0.1 * s,
                     "val_execution_accuracy": 0.05 * s} for s in range(6)],
        "techniques": [{"technique": "lora", "trainable_params": 1000, "peak_rss_mb": 500.0, "wall_s": 60.0,
                        "tokens_per_s": 900.0, "best_val_loss": 1.1, "exact_match": 0.2, "execution_accuracy": 0.3,
                        "size_mb": 3.5},
                       {"technique": "full", "trainable_params": 60000, "peak_rss_mb": 900.0, "wall_s": 90.0,
                        "tokens_per_s": 700.0, "best_val_loss": 1.0, "exact_match": 0.25, "execution_accuracy": 0.35,
                        "size_mb": 24.0}],
        "rank_sweep": [{"rank": r, "trainable_params": 100 * r, "val_loss": 2.0 / r, "execution_accuracy": 0.1 * r}
                       for r in (1, 2, 4)],
        "chosen_rank": 4,
        "variants": VARIANTS,
        "sections": [s.model_dump() for s in report_sections(FINETUNES) + compression_sections(VARIANTS)],
        "champion": {"promoted": True, "reason": "no champion yet", "candidate": metrics, "champion": None},
        "exploration": {"n_rows": 3, "markdown_path": str(tmp_path / "explore.md")},
    }
    (tmp_path / "explore.md").write_text("Questions per source: 3\n")
    paths = write_report(tmp_path / "run", summary)
    html = paths["html"].read_text()
    md = paths["markdown"].read_text()
    for title in ("Metrics", "By hardness", "Accuracy per business scenario", "Error categories", "Latency",
                  "Learning curve", "Fine-tuning techniques compared", "LoRA rank", "Compressed variants",
                  "Champion gate", "Data exploration", "Sample successes and failures",
                  "AdaLoRA final ranks", "BitNet b1.58 weights", "Compression"):
        assert f"<h2>{title}" in html and f"## {title}" in md, title
    assert "| encoder.block.0.q | 3 |" in md and "Total rank 4 of an initial 8" in md
    assert "| 12 | 1.00 | 0.314 | 2 |" in md  # BitNet's zero share is a fraction column: three decimals
    assert "| onnx-int8 | onnx-int8 | int8 | 0.000 | 8.00 | 0.0362 |" in md
    assert html.count("data:image/png;base64,") == 7
    assert set(paths["plots"]) == {"accuracy_per_scenario", "error_categories", "latency_histogram", "learning_curve",
                                   "techniques", "rank_sweep", "variants_accuracy_latency"}
    assert all(p.stat().st_size > 1000 for p in paths["plots"].values())
    assert "| execution accuracy | 0.333 |" in md
    assert "Questions per source: 3" in md
    assert "wrong aggregation" in md and "SELECT max(age) FROM head" in html
    data = json.loads(paths["json"].read_text())
    assert data["chosen_rank"] == 4 and data["metrics"]["n_examples"] == 3
    assert "Learning curve" in data["section_titles"] and "AdaLoRA final ranks" in data["section_titles"]
    assert RunSummary.model_validate({k: v for k, v in data.items() if k not in ("generated", "section_titles")})


def test_only_present_sections_are_written(tmp_path):
    paths = write_report(tmp_path / "empty", {})
    assert "No results to report yet." in paths["markdown"].read_text()
    assert "<img" not in paths["html"].read_text()
    metrics = evaluated(tmp_path)
    paths = write_report(tmp_path / "eval_only", {"predictions_path": metrics["predictions_path"]})
    html = paths["html"].read_text()
    assert "<h2>Latency" in html and "<h2>Sample successes and failures" in html
    assert "<h2>Learning curve" not in html and "<h2>Metrics" not in html


def test_summary_fields_are_typed():
    with pytest.raises(pydantic.ValidationError, match="adalora_ranks"):
        RunSummary.model_validate({"adalora_ranks": {"q": 3}})  # techniques add sections instead
    with pytest.raises(pydantic.ValidationError, match="chosen_rank"):
        RunSummary.model_validate({"chosen_rank": "four"})
    assert report_sections([{"technique": "lora", "technique_summary": {"r": 8}}]) == []  # no hook, no section
