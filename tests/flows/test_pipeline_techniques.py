"""Every technique through the real flow on tiny data: one comparison table, per-technique caching."""

from pathlib import Path

import pytest
import yaml

from conftest import tiny_config

TECHNIQUES = [
    {"name": "full"},
    {"name": "lora", "params": {"r": 4, "alpha": 8}},
    {"name": "qlora", "params": {"r": 4, "alpha": 8}},
    {"name": "adalora"},
    {"name": "bitnet", "params": {"warmup_steps": 0}},
    {"name": "iterative", "params": {"max_rounds": 2}},
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from flows.pipeline import t2sql_pipeline

    tmp = tmp_path_factory.mktemp("techniques")
    cfg = tiny_config(tmp, techniques=TECHNIQUES,
                      rank_sweep={"enabled": True, "ranks": [2, 8], "max_minutes": 0.05, "val_examples": 8},
                      train={"epochs": 1})
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = t2sql_pipeline(config_path=str(path))
    return tmp, path, first


def test_comparison_table_has_every_technique(runs):
    _, _, first = runs
    table = {r["technique"]: r for r in first["techniques"]}
    assert set(table) == {t["name"] for t in TECHNIQUES}
    for row in table.values():
        for key in ("trainable_params", "peak_rss_mb", "wall_s", "tokens_per_s", "best_val_loss", "exact_match",
                    "execution_accuracy", "size_mb"):
            assert row[key] is not None, (row["technique"], key)
    assert table["lora"]["trainable_params"] < table["full"]["trainable_params"]
    report = (Path(first["run_dir"]) / "report.html").read_text()
    assert "bitnet" in report and "adalora" in report


def test_rank_sweep_chose_a_swept_rank(runs):
    tmp, _, first = runs
    sweeps = list((tmp / "work" / "finetune").glob("lora-*"))
    assert len(sweeps) >= 3  # two sweep runs and the LoRA run itself


def test_changing_one_technique_retrains_only_it(runs):
    from flows.pipeline import t2sql_pipeline

    tmp, path, _ = runs
    before = {p.name for p in (tmp / "work" / "finetune").iterdir()}
    cfg = yaml.safe_load(path.read_text())
    cfg["techniques"][1]["train"] = {"learning_rate": 0.005}
    path.write_text(yaml.safe_dump(cfg))
    t2sql_pipeline(config_path=str(path))
    new = {p.name for p in (tmp / "work" / "finetune").iterdir()} - before
    assert len(new) == 1 and next(iter(new)).startswith("lora-")
