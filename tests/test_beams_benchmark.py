"""benchmarks/beams.py: the oracle over beams, execution consensus and the by-database reranker."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def beams():
    spec = importlib.util.spec_from_file_location("beams_benchmark", ROOT / "benchmarks" / "beams.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cand(sql: str, correct: bool, key: str | None, rows: int = 1) -> dict:
    return {"sql": sql, "correct": correct, "runs": key is not None, "rows": rows if key else -1,
            "columns": 1 if key else -1, "empty": False, "key": key}


def test_consensus_prefers_the_result_most_beams_share(beams):
    cands = [cand("SELECT a FROM t", False, "x"), cand("SELECT b FROM t", True, "y"),
             cand("SELECT c FROM t", True, "y"), cand("SELECT d FROM t", False, "y")]
    # "x": 1; "y": 1/2 + 1/3 + 1/4 = 1.083
    assert beams.pick_consensus(cands) == 1
    assert beams.pick_consensus([cand("SELECT", False, None), cand("SELECT a FROM t", True, "x")]) == 1
    assert beams.pick_consensus([cand("SELECT", False, None)]) == 0


def test_features_read_question_cues(beams):
    rows = beams.features("How many singers are there?",
                          [cand("SELECT COUNT(*) FROM singer", True, "k"), cand("SELECT name FROM singer", False, "j")])
    assert len(rows) == 2 and len(rows[0]) == len(rows[1])
    # the first cue (how many / COUNT): both for the first candidate, question only for the second
    assert rows[0][10:13] == [1.0, 0.0, 0.0]
    assert rows[1][10:13] == [0.0, 1.0, 0.0]


def test_report_from_saved_candidates(beams, tmp_path, capsys):
    rows = []
    for db in ("a", "b", "c"):
        for n in range(6):
            right = n % 3
            rows.append({"db_id": db, "question": f"How many things {n}?", "gold": "SELECT COUNT(*) FROM t",
                         "informative": n % 2 == 0,
                         "candidates": [cand(f"SELECT {i}", i == right, str(i)) for i in range(4)]})
    path = tmp_path / "beams.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = beams.main(["--candidates", str(path)])
    # right beam at rank 0, 1, 2 in turn: one of the first k right for 1/3, 2/3, 3/3 of the questions
    assert result["oracle"] == {1: pytest.approx({"ex": 0.3333, "informative": 0.3333}, abs=1e-3),
                                2: pytest.approx({"ex": 0.6667, "informative": 0.6667}, abs=1e-3),
                                4: {"ex": 1.0, "informative": 1.0}}
    assert result["top beam"]["ex"] == pytest.approx(1 / 3, abs=1e-3)
    assert result["first that runs"]["ex"] == pytest.approx(1 / 3, abs=1e-3)
    assert 0.0 <= result["reranker (by database)"]["ex"] <= 1.0
    assert "oracle: one of the first 4 right" in capsys.readouterr().out


def test_reranker_learns_a_question_cue_across_databases(beams):
    """The right candidate is the only one that counts, at a rank that changes: trained on the other
    databases, the reranker finds it where the top beam is right a third of the time."""
    rows = []
    for db in ("a", "b", "c", "d"):
        for n in range(9):
            right = n % 3
            rows.append({"db_id": db, "question": f"How many pets does owner {n} have?", "informative": True,
                         "candidates": [cand("SELECT COUNT(*) FROM pets" if i == right else f"SELECT name{i} FROM pets",
                                             i == right, str(i)) for i in range(3)]})
    picks = beams.rerank_by_database(rows)
    assert picks == [n % 3 for _ in range(4) for n in range(9)]
    assert beams.share(rows, [r["candidates"][0]["correct"] for r in rows]) == pytest.approx((1 / 3, 1 / 3))
