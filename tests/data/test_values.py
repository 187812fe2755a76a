"""Values of a database that a question names: found, written into the context, read by the prompt."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from pydantic import ValidationError

from t2sql.data.values import add_column_comments, question_values, with_question_values
from t2sql.linking import parse_context
from t2sql.prompt import PromptOptions, build_source, placeholder_target, postprocess, question_context

CONTEXT = ("CREATE TABLE climber (climber_id NUMBER PRIMARY KEY, name TEXT, country TEXT, points NUMBER); "
           "CREATE TABLE \"mountain range\" (range_id NUMBER, \"range name\" TEXT /* 'Alps' */, "
           "PRIMARY KEY (range_id, \"range name\"))")


@pytest.fixture()
def climbing_db(tmp_path):
    path = tmp_path / "climbing.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(CONTEXT.replace("; ", ";\n").replace(" /* 'Alps' */", "") + ";")
    conn.executemany("INSERT INTO climber VALUES (?, ?, ?, ?)", [
        (1, "Ann Lee", "United Kingdom", 10), (2, "Bo Kim", "Switzerland", 20), (3, "Cy Roe", "Kingdom", 5),
        (4, "the", "St. Louis", 7), (5, "Di Poe", "2014", 1)])
    conn.executemany('INSERT INTO "mountain range" VALUES (?, ?)', [(1, "Alps"), (2, "Andes")])
    conn.commit()
    conn.close()
    return path


def test_question_values_finds_the_longest_runs_of_stored_text(climbing_db):
    digest = hashlib.sha256(climbing_db.read_bytes()).hexdigest()
    assert question_values(climbing_db, "How many climbers are from the united kingdom?") == {
        ("climber", "country"): ["United Kingdom"]}  # not also 'Kingdom', inside the longer run
    # punctuation and case do not matter; common words and numbers are never values
    assert question_values(climbing_db, "Who climbs in st louis or the Andes in 2014?") == {
        ("climber", "country"): ["St. Louis"], ("mountain range", "range name"): ["Andes"]}
    assert question_values(climbing_db, "How many points in total?") == {}
    assert hashlib.sha256(climbing_db.read_bytes()).hexdigest() == digest  # read, never written
    with pytest.raises(FileNotFoundError):
        question_values(climbing_db.parent / "missing.sqlite", "anything")


def test_add_column_comments_writes_values_beside_their_columns():
    out = add_column_comments(CONTEXT, {("climber", "country"): ["O'Neil Land"],
                                        ("mountain range", "range name"): ["Andes"], ("nope", "x"): ["y"]})
    assert "country TEXT /* 'O''Neil Land' */, points NUMBER" in out
    schema = parse_context(out)
    climber, ranges = schema.tables
    assert [c.samples for c in climber.columns] == [[], [], ["'O''Neil Land'"], []]
    assert ranges.name == "mountain range" and ranges.columns[1].samples == ["'Alps'", "'Andes'"]
    sqlite3.connect(":memory:").executescript(out.replace("; ", ";\n") + ";")  # still valid SQL
    assert add_column_comments(CONTEXT, {}) == CONTEXT
    assert add_column_comments(out, {("climber", "country"): ["O'Neil Land"]}) == out


def test_question_values_prompt_links_a_value_to_its_unnamed_column(climbing_db, tmp_path):
    opts = PromptOptions(format="linked", placeholders=True, link_marks=True, column_types=False,
                         infer_joins=True, value_pointers=True, linked_tables_only=True, linked_columns_only=True,
                         question_values=True)
    q = "What are the names of climbers from the United Kingdom?"
    gold = "SELECT name FROM climber WHERE country = 'United Kingdom'"
    # country is not named by the question: hidden, and the gold query cannot be written
    assert "country" not in build_source(q, CONTEXT, opts)
    assert placeholder_target(gold, q, CONTEXT, opts) is None
    ctx = question_context(q, CONTEXT, str(climbing_db), opts)
    assert build_source(q, ctx, opts).endswith(
        "| t1 climber [E] : c1 climber id [P] , c2 name [E] , c3 country [V] ( 'United Kingdom' )")
    target = placeholder_target(gold, q, ctx, opts)
    assert target == "SELECT c2 FROM t1 WHERE c3 = ' w9 w10 '"
    assert postprocess(target, q, ctx, opts) == gold
    # without a database, or with the option off, the context is used as it is
    assert question_context(q, CONTEXT, None, opts) == CONTEXT
    assert question_context(q, CONTEXT, str(climbing_db), opts.replace(question_values=False)) \
        == CONTEXT
    assert with_question_values(q, CONTEXT, tmp_path / "missing.sqlite") == CONTEXT
    with pytest.raises(ValidationError, match="question_values needs"):
        PromptOptions(question_values=True)

    from t2sql.modeling import train_tokenizer
    from t2sql.training import encode_file

    path = tmp_path / "train.jsonl"
    rows = [{"id": "a", "question": q, "context": CONTEXT, "answer": gold, "db_path": str(climbing_db)},
            {"id": "b", "question": q, "context": CONTEXT, "answer": gold}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = train_tokenizer([build_source(q, ctx, opts), target] * 5, 300)
    assert encode_file(path, tok, 128, 32, prompt=opts).ids == ["a"]  # b has no database to read values from


def test_the_translator_reads_values_from_each_pairs_database(climbing_db, tmp_path):
    import shutil

    from t2sql.inference import Translator
    from t2sql.prompt import PROMPT_FILE
    from webui.testing import tiny_model_dir

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir(), model_dir)
    opts = PromptOptions(format="linked", placeholders=True, link_marks=True, column_types=False,
                         question_values=True)
    (model_dir / PROMPT_FILE).write_text(opts.model_dump_json())
    q = "Who is from Switzerland?"
    tr = Translator(model_dir, "torch", num_threads=1, max_new_tokens=4,
                    db_resolver=lambda question, context: str(climbing_db))
    seen: list[str] = []
    sources = tr.sources
    tr.sources = lambda pairs: seen.extend(p[1] for p in pairs) or sources(pairs)
    tr.translate([(q, CONTEXT, str(climbing_db))])  # the path in the pair
    tr.translate([(q, CONTEXT)], db_paths=[str(climbing_db)])  # given beside the pairs
    tr.translate([(q, CONTEXT)])  # found by the resolver
    assert len(seen) == 3 and all("country TEXT /* 'Switzerland' */" in c for c in seen)
    tr.db_resolver = None
    tr.translate([(q, CONTEXT)])
    assert seen[-1] == CONTEXT
