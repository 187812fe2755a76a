"""Query sketches retrieved from similar training questions (prompt.skeleton_hints)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from conftest import TINY_MODEL

from t2sql.prompt import PromptOptions, build_source, placeholder_target
from t2sql.retrieval import SKELETON_FILE, SkeletonIndex, mask_question, record_group, skeleton

HINTS = PromptOptions(schema_format="compact", placeholders=True, link_marks=True, value_pointers=True,
                      infer_joins=True, snap_values=True, repair=True, skeleton_hints=2)


def test_skeleton_blanks_tables_columns_and_values():
    assert skeleton("SELECT COUNT(*) FROM t3 WHERE c13 > w10") == "SELECT COUNT(*) FROM t WHERE c > v"
    assert skeleton("SELECT AVG( c9) FROM t2 WHERE NOT c8 IN (SELECT c1 FROM t1 WHERE c6 = ' w11 w12 ')") == \
        "SELECT AVG( c) FROM t WHERE NOT c IN (SELECT c FROM t WHERE c = v)"
    assert skeleton("SELECT c49, c51 FROM t4 JOIN t3 ORDER BY c10 DESC LIMIT 5") == \
        "SELECT c, c FROM t JOIN t ORDER BY c DESC LIMIT v"
    assert skeleton("SELECT c1 FROM t1 WHERE c2 LIKE ' % w4 % ' AND c3 = 'East' AND c4 > 2.5") == \
        "SELECT c FROM t WHERE c LIKE v AND c = v AND c > v"


def test_mask_question_blanks_what_depends_on_the_database():
    ctx = "CREATE TABLE singer (singer_ID NUMBER PRIMARY KEY, Name TEXT, Country TEXT, birthYear NUMBER)"
    assert mask_question("How many singers are from France?", ctx) == "how many SCH are from CAP ?"
    assert mask_question("List the names of singers born after 1990.", ctx) == \
        "list the SCH of SCH born after NUM ."
    assert mask_question("Which singer has 'Le Tigre' as name?", ctx) == "which SCH has CAP as SCH ?"
    # camelCase and snake_case names are split into their words
    assert mask_question("What is the average birth year?", ctx) == "what is the average SCH SCH ?"


def _record(db: str, question: str, answer: str, context: str) -> dict:
    return {"db_id": db, "question": question, "answer": answer, "context": context}


CTX_A = "CREATE TABLE singer (singer_id NUMBER PRIMARY KEY, name TEXT, country TEXT, age NUMBER)"
CTX_B = "CREATE TABLE ship (ship_id NUMBER PRIMARY KEY, name TEXT, tonnage NUMBER, flag TEXT)"
CTX_C = "CREATE TABLE book (book_id NUMBER PRIMARY KEY, title TEXT, writer TEXT, pages NUMBER)"
TRAIN = [
    _record("a", "How many singers are there?", "SELECT count(*) FROM singer", CTX_A),
    _record("a", "List the names of singers ordered by age in descending order.",
            "SELECT name FROM singer ORDER BY age DESC", CTX_A),
    _record("b", "How many ships are there?", "SELECT count(*) FROM ship", CTX_B),
    _record("b", "Show the name of the ship with the largest tonnage.",
            "SELECT name FROM ship ORDER BY tonnage DESC LIMIT 1", CTX_B),
    _record("c", "What is the average number of pages of books?", "SELECT avg(pages) FROM book", CTX_C),
]


def test_index_finds_the_sketch_of_the_most_similar_question_and_never_its_own_database():
    index = SkeletonIndex.build(TRAIN, HINTS)
    assert len(index) == 5
    ctx = "CREATE TABLE car (car_id NUMBER PRIMARY KEY, maker TEXT, horsepower NUMBER)"
    assert index.hints("How many cars are there?", ctx, 1) == ["SELECT COUNT(*) FROM t"]
    two = index.hints("Show the maker of the car with the largest horsepower.", ctx, 2)
    assert two[0] == "SELECT c FROM t ORDER BY c DESC LIMIT v" and len(two) == 2 and two[1] != two[0]
    # Distinct sketches only: five questions hold four shapes.
    assert len(index.hints("How many cars are there?", ctx, 8)) == 4
    # A training question of database b borrows from a and c only: the nearest left is a's count.
    own = index.hints("Show the name of the ship with the largest tonnage.", CTX_B, 5, exclude_group="b")
    assert "SELECT c FROM t ORDER BY c DESC LIMIT v" not in own
    assert set(own) <= {skeleton(placeholder_target(r["answer"], r["question"], r["context"], HINTS))
                        for r in TRAIN if r["db_id"] != "b"}
    assert record_group({"context": "CREATE TABLE x (y TEXT)"}) == "CREATE TABLE x (y TEXT)"


def test_index_saves_and_loads_with_clear_errors(tmp_path):
    index = SkeletonIndex.build(TRAIN, HINTS)
    index.save(tmp_path)
    again = SkeletonIndex.load(tmp_path)
    ctx = "CREATE TABLE car (car_id NUMBER PRIMARY KEY, maker TEXT)"
    for q in ("How many cars are there?", "List makers ordered by name.", "average of what?"):
        assert again.hints(q, ctx, 3) == index.hints(q, ctx, 3)
    with pytest.raises(FileNotFoundError, match=SKELETON_FILE):
        SkeletonIndex.load(tmp_path / "elsewhere")
    (tmp_path / SKELETON_FILE).write_text(json.dumps({"questions": ["q"]}))
    with pytest.raises(ValueError, match="not a sketch index"):
        SkeletonIndex.load(tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        SkeletonIndex([], [], [])


def test_sketches_sit_between_question_and_schema():
    src = build_source("How many singers are there?", CTX_A, HINTS, hints=["SELECT COUNT(*) FROM t", "SELECT c FROM t"])
    q, sketch, schema = src.split(" | ", 2)
    assert q.startswith("question: w1 How")
    assert sketch == "sketch: SELECT COUNT(*) FROM t ; SELECT c FROM t"
    assert schema.startswith("t1 singer")
    assert "sketch" not in build_source("How many singers are there?", CTX_A, HINTS)
    with pytest.raises(ValidationError, match="skeleton_hints needs placeholders"):
        PromptOptions(skeleton_hints=2)


def test_a_model_trained_with_sketches_carries_its_index_to_the_translator(sample_splits, tmp_path):
    from t2sql.config import ModelConfig, TechniqueSpec, TrainConfig
    from t2sql.finetune import finetune, prepare_base
    from t2sql.inference import Translator

    prompt = HINTS.model_copy(update={"shuffle_tables": True})
    base = prepare_base(ModelConfig(**TINY_MODEL), sample_splits["train"], tmp_path / "work", tmp_path / "runs",
                        prompt=prompt)
    cfg = TrainConfig(epochs=1, batch_size=16, learning_rate=3e-3, max_source_length=160, max_target_length=48,
                      num_threads=1, val_max_examples=16, val_execution_examples=4, val_max_new_tokens=16)
    summary = finetune(base, TechniqueSpec(name="full"), cfg, sample_splits, tmp_path / "run", prompt=prompt,
                       progress=False)
    model_dir = tmp_path / "run" / "model"
    saved = SkeletonIndex.load(model_dir)
    train = [json.loads(line) for line in open(sample_splits["train"])]
    assert 0 < len(saved) <= len(train)
    assert "val_execution_accuracy" in summary["history"][-1]

    tr = Translator(model_dir, num_threads=1, max_new_tokens=16)
    rec = json.loads(open(sample_splits["test"]).readline())
    src = tr.sources([(rec["question"], rec["context"])])[0]
    assert " | sketch: SELECT" in src
    assert src == build_source(rec["question"], rec["context"], prompt,
                               hints=saved.hints(rec["question"], rec["context"], 2))
    assert isinstance(tr.translate([(rec["question"], rec["context"])])[0], str)
    (model_dir / SKELETON_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="skeleton_hints"):
        Translator(model_dir, num_threads=1)
