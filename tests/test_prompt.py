"""Prompt formats: the plain default, the placeholder format, and mapping generated SQL back."""

from __future__ import annotations

import json
import os
import random
import sqlite3
from pathlib import Path

import pytest
import sqlglot
from pydantic import ValidationError

from t2sql.data.sources import load_spider, load_wikisql
from t2sql.evaluation.execution import execute
from t2sql.evaluation.fuzz import fuzz_verdict
from t2sql.evaluation.results import order_matters, results_match
from t2sql.linking import layout, parse_context, placeholder_tokens, snap_value
from t2sql.prompt import (PROMPT_FILE, PromptOptions, build_source, build_target, load_prompt_options, postprocess,
                          save_prompt_options)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "spider_sample"

LINKED = PromptOptions(format="linked", placeholders=True, link_marks=True, shuffle_tables=True,
                       infer_joins=True, snap_values=True)
CTX = ("CREATE TABLE singer (singer_id NUMBER PRIMARY KEY, name TEXT, country TEXT /* 'France', 'USA' */, age NUMBER); "
       "CREATE TABLE concert (concert_id NUMBER PRIMARY KEY, singer_id NUMBER, year TEXT, "
       "FOREIGN KEY (singer_id) REFERENCES singer(singer_id))")
Q = "What are the names of singers from France who had a concert in 2014?"


def test_default_options_keep_the_plain_format():
    assert build_source(" How  many?", "CREATE TABLE t (a TEXT)") == "question: How many? schema: CREATE TABLE t (a TEXT)"
    assert build_target("SELECT  a FROM t ;", "q", "c") == "SELECT a FROM t ;"
    assert postprocess(" SELECT a  FROM t; ") == "SELECT a FROM t"
    assert PromptOptions().extra_tokens() == []


def test_options_are_validated_and_saved_with_the_model(tmp_path):
    with pytest.raises(ValidationError, match="plain format: placeholders: Extra inputs are not permitted"):
        PromptOptions(format="plain", placeholders=True)
    with pytest.raises(ValidationError, match="placeholders needs format: linked"):
        PromptOptions(placeholders=True)  # a section without a format name, as written before formats had names
    with pytest.raises(ValidationError, match="infer_joins needs placeholders"):
        PromptOptions(format="linked", infer_joins=True)
    with pytest.raises(ValidationError, match="unknown prompt format 'fancy'; valid: linked, plain"):
        PromptOptions(format="fancy")
    save_prompt_options(LINKED, tmp_path)
    assert load_prompt_options(tmp_path) == LINKED
    assert json.loads((tmp_path / PROMPT_FILE).read_text())["format"] == "linked"
    assert load_prompt_options(tmp_path / "missing") == PromptOptions()


def test_options_saved_before_formats_had_names_still_load(tmp_path):
    old_linked = {"schema_format": "compact", "placeholders": True, "link_marks": True, "shuffle_tables": False,
                  "column_types": True, "sample_values": 0, "infer_joins": True, "snap_values": False,
                  "lowercase_question": False, "repair": False, "fix_tables": False, "value_pointers": True,
                  "question_links": False, "linked_tables_only": False, "linked_columns_only": False,
                  "expand_names": False, "key_columns": False, "rank_tables": False, "question_values": False}
    (tmp_path / PROMPT_FILE).write_text(json.dumps(old_linked))
    opts = load_prompt_options(tmp_path)
    assert opts.format == "linked" and opts.placeholders and opts.value_pointers and not opts.repair
    old_plain = {**old_linked, "schema_format": "sql", "placeholders": False, "infer_joins": False,
                 "value_pointers": False, "repair": True}
    (tmp_path / PROMPT_FILE).write_text(json.dumps(old_plain))
    plain = load_prompt_options(tmp_path)
    assert plain.format == "plain" and plain.repair and plain.model_dump() == {"format": "plain", "repair": True,
                                                                               "snap_values": False}
    with pytest.raises(AttributeError):
        plain.placeholders  # noqa: B018 - an option of the linked format only


def test_context_parsing_reads_types_samples_and_foreign_keys():
    schema = parse_context(CTX)
    assert [t.name for t in schema.tables] == ["singer", "concert"]
    country = schema.tables[0].columns[2]
    assert (country.name, country.type, country.samples) == ("country", "TEXT", ["'France'", "'USA'"])
    assert schema.foreign_keys == [(("concert", "singer_id"), ("singer", "singer_id"))]
    quoted = parse_context('CREATE TABLE "my table" ("first name" VARCHAR, [b] INT REFERENCES other(id))')
    assert [c.name for c in quoted.tables[0].columns] == ["first name", "b"]
    assert quoted.foreign_keys == [(("my table", "b"), ("other", "id"))]


def test_compact_source_numbers_names_and_marks_links():
    opts = PromptOptions(format="linked", placeholders=True, link_marks=True)
    src = build_source(Q, CTX, opts)
    assert src == ("question: What are the names of singers from France who had a concert in 2014? | "
                   "t1 singer [E] : c1 singer id number [P] , c2 name text [E] , c3 country text [V] ( 'France' ) , "
                   "c4 age number | t2 concert [E] : c5 concert id number [P] , c6 singer id number [P] , "
                   "c7 year text")


def test_question_links_write_the_numbers_a_word_names_beside_it():
    opts = PromptOptions(format="linked", placeholders=True, link_marks=True, value_pointers=True,
                         question_links=True)
    src = build_source(Q, CTX, opts)
    assert src.startswith("question: w1 What w2 are w3 the w4 names c2 w5 of w6 singers t1 c1 c6 w7 from w8 France "
                          "w9 who w10 had w11 a w12 concert t2 c5 w13 in w14 2014 w15 ? | t1 singer [E] : c1 singer id")
    # The target and its mapping back do not change: the numbers are the schema's.
    plain = opts.replace(question_links=False)
    gold = "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id WHERE T2.year = 2014"
    assert build_target(gold, Q, CTX, opts) == build_target(gold, Q, CTX, plain)
    with pytest.raises(ValidationError, match="question_links needs value_pointers"):
        PromptOptions(format="linked", placeholders=True, question_links=True)


def test_plural_question_words_link_to_singular_names():
    # ``names`` must meet ``name`` and ``codes`` ``code``; a plural never loses its stem's final e.
    lay = layout("List the names and type codes of the cities.",
                 "CREATE TABLE city (city_id NUMBER, name TEXT, type_code TEXT, status TEXT)",
                 shuffle_tables=False, column_types=False)
    assert lay.text == "t1 city [E] : c1 city id [P] , c2 name [E] , c3 type code [E] , c4 status"


def test_target_points_at_columns_and_drops_inferable_join_conditions():
    gold = ("SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id "
            "WHERE T1.country = 'France' AND T2.year = '2014'")
    opts = LINKED.replace(shuffle_tables=False)
    target = build_target(gold, Q, CTX, opts)
    assert target == "SELECT c2 FROM t1 JOIN t2 WHERE c3 = ' France ' AND c7 = ' 2014 '"
    assert postprocess(target, Q, CTX, opts) == (
        "SELECT singer.name FROM singer JOIN concert ON singer.singer_id = concert.singer_id "
        "WHERE singer.country = 'France' AND concert.year = '2014'")


def test_self_join_keeps_aliases():
    gold = "SELECT T1.name FROM singer AS T1 JOIN singer AS T2 ON T1.age = T2.age WHERE T1.singer_id <> T2.singer_id"
    opts = LINKED.replace(shuffle_tables=False)
    target = build_target(gold, Q, CTX, opts)
    assert target == "SELECT T1. c2 FROM t1 AS T1 JOIN t1 AS T2 ON T1. c4 = T2. c4 WHERE T1. c1 <> T2. c1"
    assert postprocess(target, Q, CTX, opts) == (
        "SELECT T1.name FROM singer AS T1 JOIN singer AS T2 ON T1.age = T2.age WHERE T1.singer_id <> T2.singer_id")


def test_unknown_placeholders_and_unparseable_output_never_raise():
    opts = LINKED.replace(shuffle_tables=False)
    assert postprocess("SELECT c99 FROM t1", Q, CTX, opts) == "SELECT c99 FROM singer"
    assert postprocess("SELECT ( ( JOIN", Q, CTX, opts) == "SELECT ( ( JOIN"
    assert postprocess("SELECT c1 FROM t1", Q, "not a schema", opts) == "SELECT c1 FROM t1"


def test_shuffled_numbering_is_fixed_by_the_question():
    one = layout("how many singers?", CTX, shuffle_tables=True)
    assert one.text == layout("how many singers?", CTX, shuffle_tables=True).text
    orders = {tuple(layout(f"question {i}", CTX, shuffle_tables=True, link_marks=False).tables.values())
              for i in range(20)}
    assert orders == {("singer", "concert"), ("concert", "singer")}


def test_value_columns_compare_a_value_on_the_one_column_that_stores_it():
    ctx = CTX.replace("year TEXT,", "year TEXT, theme TEXT /* 'USA' */,")
    opts = LINKED.replace(shuffle_tables=False, fix_tables=True, value_columns=True)
    off = opts.replace(value_columns=False)
    assert "c3 country text [V] ( 'France' )" in build_source(Q, ctx, opts)
    assert postprocess("SELECT c2 FROM t1 WHERE c2 = ' France '", Q, ctx, opts) == (
        "SELECT name FROM singer WHERE country = 'France'")
    assert postprocess("SELECT c2 FROM t1 WHERE c2 = ' France '", Q, ctx, off) == (
        "SELECT name FROM singer WHERE name = 'France'")
    assert postprocess("SELECT c2 FROM t1 WHERE c4 <> 'france'", Q, ctx, opts) == (
        "SELECT name FROM singer WHERE country <> 'France'")  # snapped to the stored spelling first
    # The column of another table: the query then reads that table (fix_tables).
    assert postprocess("SELECT COUNT(*) FROM t2 WHERE c7 = 'France'", Q, ctx, opts) == (
        "SELECT COUNT(*) FROM singer WHERE country = 'France'")
    # Left as written: a value two columns store, a pattern, a column the schema does not have.
    assert postprocess("SELECT c2 FROM t1 WHERE c2 = 'USA'", Q, ctx, opts) == (
        "SELECT name FROM singer WHERE name = 'USA'")
    assert postprocess("SELECT c2 FROM t1 WHERE c2 LIKE '%France%'", Q, ctx, opts) == (
        "SELECT name FROM singer WHERE name LIKE '%France%'")
    assert postprocess("SELECT c2 FROM t1 WHERE c99 = 'France'", Q, ctx, opts) == (
        "SELECT name FROM singer WHERE c99 = 'France'")
    with pytest.raises(ValidationError, match="value_columns needs placeholders"):
        PromptOptions(format="linked", value_columns=True)


def test_order_words_sort_in_the_direction_the_question_asks():
    from t2sql.linking import order_as_asked

    opts = LINKED.replace(shuffle_tables=False, order_words=True)
    q = "List the names of singers in ascending alphabetical order."
    assert postprocess("SELECT c2 FROM t1 ORDER BY c2 DESC", q, CTX, opts) == (
        "SELECT name FROM singer ORDER BY name ASC")
    assert postprocess("SELECT c2 FROM t1 ORDER BY c2 DESC", q, CTX, opts.replace(order_words=False)) == (
        "SELECT name FROM singer ORDER BY name DESC")
    rev = "List the names of singers in reverse alphabetical order."
    assert postprocess("SELECT c2 FROM t1 ORDER BY c2", rev, CTX, opts) == (
        "SELECT name FROM singer ORDER BY name DESC")
    assert order_as_asked("SELECT name FROM t ORDER BY age ASC LIMIT 3", "names in descending order of age") == (
        "SELECT name FROM t ORDER BY age DESC LIMIT 3")
    assert order_as_asked("SELECT name FROM t ORDER BY COUNT(*)", "in decreasing order of count") == (
        "SELECT name FROM t ORDER BY COUNT(*) DESC")
    # Left as written: a direction already right, no cue, both cues, two keys, two ORDER BYs.
    for sql, question in [("SELECT a FROM t ORDER BY a", "a in alphabetical order"),
                          ("SELECT a FROM t ORDER BY a DESC", "a sorted by b"),
                          ("SELECT a FROM t ORDER BY a DESC", "a ascending and b descending"),
                          ("SELECT a FROM t ORDER BY a, b DESC", "in alphabetical order"),
                          ("SELECT a FROM (SELECT a FROM t ORDER BY a DESC) ORDER BY a DESC", "in alphabetical order")]:
        assert order_as_asked(sql, question) == sql


def test_value_snapping():
    q = 'Which routes have "Replaced by US 81" listed for Butler CC (KS)?'
    assert snap_value("Replaced by US 81", q) == "Replaced by US 81"
    assert snap_value("Butler CC ( KS)", q) == "Butler CC (KS)"  # spacing undone from the question
    assert snap_value("Replaced by US 8l", q) == "Replaced by US 81"  # near miss snapped
    assert snap_value("%replaced%", q) == "%replaced%"  # found in the question in another case: kept
    assert snap_value("usa", "singers from the usa", ["'USA'"]) == "USA"  # stored spelling wins
    assert snap_value("Germany", q) == "Germany"  # nothing close: left alone
    # A pointer that stopped early takes the stored value the question names around it.
    q = 'Which mountains were climbed by climbers from "West Germany"?'
    assert snap_value("West", q, ["'West Germany'", "'Westland'"]) == "West Germany"
    assert snap_value("Germany", q, ["'West Germany'"]) == "West Germany"
    assert snap_value("West", q, ["'East Germany'"]) == "West"  # not a value the question names
    assert snap_value("%West%", q, ["'West Germany'"]) == "%West%"  # a pattern is left as written
    assert snap_value("Ger", q, ["'West Germany'"]) == "Ger"  # only whole words


def test_placeholder_tokens_stay_whole_in_a_trained_tokenizer():
    from t2sql.modeling import train_tokenizer

    texts = [build_source(Q, CTX, LINKED), "SELECT COUNT(*) FROM t1 WHERE c3 = ' France '"] * 20
    tok = train_tokenizer(texts, 300, extra_tokens=LINKED.extra_tokens())
    sql = "SELECT COUNT( c12) FROM t1 JOIN t2 WHERE c3 = ' France '"
    tokens = tok.convert_ids_to_tokens(tok(sql)["input_ids"])
    assert {" c12", " t1", " t2", " c3"} <= set(tokens)
    # Text after a kept token is pre-tokenized on its own, with a prefix space: ``c12)`` reads back ``c12 )``.
    assert tok.decode(tok(sql)["input_ids"], skip_special_tokens=True).split() == sql.replace(")", " )").split()
    assert len(placeholder_tokens()) == len(set(placeholder_tokens()))


def _spider_roundtrip_share(records):
    ok = n = 0
    for rec in records:
        gold = execute(rec["db_path"], rec["answer"], timeout_s=5)
        if not gold.ok:
            continue
        target = build_target(rec["answer"], rec["question"], rec["context"], LINKED)
        pred = execute(rec["db_path"], postprocess(target, rec["question"], rec["context"], LINKED), timeout_s=5)
        n += 1
        ok += pred.ok and results_match(gold.rows, pred.rows, order_matters=order_matters(rec["answer"]))
    return ok / n, n


def test_placeholder_targets_map_back_to_the_gold_results_on_spider():
    records, _ = load_spider(str(SAMPLE))
    records = [r for r in random.Random(0).sample(records, 250) if r["db_path"]]
    share, n = _spider_roundtrip_share(records)
    assert n >= 240
    assert share >= 0.98  # the rest: values the question spells differently from the database


def test_placeholder_targets_map_back_on_wikisql_shaped_records():
    records, _ = load_wikisql(str(ROOT / "tests" / "fixtures" / "data" / "wikisql"))
    assert records
    for rec in records:
        target = build_target(rec["answer"], rec["question"], rec["context"], LINKED)
        assert " c1" in target and " t1" in target
        back = postprocess(target, rec["question"], rec["context"], LINKED)
        verdict = fuzz_verdict(rec["context"], rec["answer"], back)
        assert verdict.match is not False, (rec["answer"], target, back)


def test_prompt_section_of_the_shipped_recipes_loads():
    from t2sql.config import load_config

    os.environ.setdefault("T2SQL_DATA_DIR", str(ROOT / "data"))
    for name in ("create_context_cpu", "spider_cpu"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.prompt.format == "linked" and cfg.prompt.placeholders
        assert cfg.data.split_by == "database"
        assert cfg.train.max_minutes == 25
        assert json.loads(cfg.prompt.model_dump_json()) == json.loads(PromptOptions.model_validate(
            cfg.prompt.model_dump()).model_dump_json())


def test_degenerate_output_with_dozens_of_joins_is_postprocessed_at_once():
    """sqlglot's parse time doubles per JOIN; a model's runaway output must not stall decoding."""
    import time

    opts = PromptOptions(format="linked", placeholders=True, link_marks=True, infer_joins=True,
                         snap_values=True, repair=True)
    text = "SELECT c2 FROM t1 " + "JOIN t2 " * 40
    t0 = time.perf_counter()
    out = postprocess(text, Q, CTX, opts)
    assert time.perf_counter() - t0 < 2.0
    assert out.startswith("SELECT singer.name FROM singer JOIN concert JOIN concert")


def test_linked_tables_only_shows_the_tables_a_question_names_and_training_skips_the_rest(tmp_path):
    ctx = ("CREATE TABLE singer (singer_id NUMBER, name TEXT, country TEXT); "
           "CREATE TABLE stadium (stadium_id NUMBER, capacity NUMBER); "
           "CREATE TABLE concert (concert_id NUMBER, singer_id NUMBER, year TEXT)")
    opts = PromptOptions(format="linked", placeholders=True, link_marks=True, column_types=False,
                         linked_tables_only=True)
    q = "What are the names of singers?"
    assert build_source(q, ctx, opts) == ("question: What are the names of singers? | t1 singer [E] : c1 singer id [P] , "
                                          "c2 name [E] , c3 country | t2 concert : c4 concert id , c5 singer id [P] , "
                                          "c6 year")
    assert build_target("SELECT name FROM singer", q, ctx, opts) == "SELECT c2 FROM t1"
    assert postprocess("SELECT c2 FROM t1", q, ctx, opts) == "SELECT name FROM singer"
    # No table linked: the whole schema is shown.
    assert "stadium" in build_source("How big is it?", ctx, opts)
    with pytest.raises(ValidationError, match="linked_tables_only needs"):
        PromptOptions(format="linked", link_marks=False, linked_tables_only=True)

    from t2sql.modeling import train_tokenizer
    from t2sql.training import encode_file

    rows = [{"id": "a", "question": q, "context": ctx, "answer": "SELECT name FROM singer"},
            {"id": "b", "question": q, "context": ctx, "answer": "SELECT capacity FROM stadium"},
            {"id": "c", "question": q, "context": ctx,
             "answer": "SELECT T1.name FROM singer AS T1 JOIN stadium AS T2 ON T1.singer_id = T2.stadium_id"}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = train_tokenizer([build_source(q, ctx, opts), "SELECT c2 FROM t1"] * 5, 300)
    enc = encode_file(path, tok, 128, 32, prompt=opts)
    assert enc.ids == ["a"]  # stadium is not shown for this question: nothing to point at
    assert len(encode_file(path, tok, 128, 32, prompt=opts.replace(linked_tables_only=False)).ids) == 3


# Two tables joined through keys the question does not name (performer_id -> singer.id).
PERFORMER_CTX = ("CREATE TABLE singer (id NUMBER PRIMARY KEY, name TEXT, country TEXT); "
                 "CREATE TABLE concert (concert_id NUMBER, performer_id NUMBER, year TEXT, "
                 "FOREIGN KEY (performer_id) REFERENCES singer(id))")
NUMBERED = PromptOptions(format="linked", placeholders=True, link_marks=True, column_types=False,
                         infer_joins=True)


def test_fix_tables_reaches_a_table_through_the_tables_that_link_it():
    from t2sql.linking.repair import _drop_repeated_joins, bridge_path
    from t2sql.linking.view import layout

    ctx = ("CREATE TABLE drivers (driverId NUMBER PRIMARY KEY, forename TEXT); "
           "CREATE TABLE races (raceId NUMBER PRIMARY KEY, name TEXT, circuitId NUMBER, "
           "FOREIGN KEY (circuitId) REFERENCES circuits(circuitId)); "
           "CREATE TABLE results (resultId NUMBER, raceId NUMBER, driverId NUMBER, "
           "FOREIGN KEY (raceId) REFERENCES races(raceId), FOREIGN KEY (driverId) REFERENCES drivers(driverId)); "
           "CREATE TABLE circuits (circuitId NUMBER PRIMARY KEY, country TEXT); "
           "CREATE TABLE sponsors (sponsorName TEXT)")
    q = "Which drivers raced in the Australian Grand Prix?"
    opts = NUMBERED.replace(repair=True, fix_tables=True)
    lay = layout(q, ctx, placeholders=True, link_marks=True, column_types=False)
    tid = {name.lower(): t for t, name in lay.tables.items()}
    drivers, races, results, circuits, sponsors = (tid[n] for n in ("drivers", "races", "results", "circuits",
                                                                     "sponsors"))
    assert bridge_path(lay, [drivers], races) == [results]
    assert bridge_path(lay, [drivers], circuits) == [results, races]
    assert bridge_path(lay, [drivers], circuits, max_bridges=1) is None
    assert bridge_path(lay, [results], races) == []
    assert bridge_path(lay, [drivers], sponsors) is None

    cid = {(t.lower(), c.lower()): k for k, (t, c) in lay.columns.items()}
    forename, race_name, country = cid[("drivers", "forename")], cid[("races", "name")], cid[("circuits", "country")]
    conn = sqlite3.connect(":memory:")
    conn.executescript(ctx.replace("; ", ";\n") + ";")
    conn.executescript("INSERT INTO drivers VALUES (1, 'Lewis'), (2, 'Nico');"
                       "INSERT INTO races VALUES (10, 'Australian Grand Prix', 7), (11, 'Chinese Grand Prix', 8);"
                       "INSERT INTO circuits VALUES (7, 'Australia'), (8, 'China');"
                       "INSERT INTO results VALUES (100, 10, 1), (101, 11, 2);")
    # no key between drivers and races: the bridge table results is joined between them
    got = postprocess(f"SELECT {forename} FROM {drivers} JOIN {races} WHERE {race_name} = 'Australian Grand Prix'",
                      q, ctx, opts)
    assert got == ("SELECT drivers.forename FROM drivers JOIN results ON drivers.driverId = results.driverId "
                   "JOIN races ON results.raceId = races.raceId WHERE races.name = 'Australian Grand Prix'")
    assert conn.execute(got).fetchall() == [("Lewis",)]
    # the bridge is a table the query joins later: it is joined where it is needed, once
    got = postprocess(f"SELECT {forename} FROM {drivers} JOIN {races} JOIN {results} "
                      f"WHERE {race_name} = 'Australian Grand Prix'", q, ctx, opts)
    assert got.count("JOIN results") == 1 and got.index("JOIN results") < got.index("JOIN races"), got
    assert conn.execute(got).fetchall() == [("Lewis",)]
    # each arm of a set operation reads its own tables: a join repeated across arms is kept
    got = postprocess(f"SELECT {forename} FROM {drivers} JOIN {results} JOIN {races} WHERE {race_name} = 'Australian "
                      f"Grand Prix' INTERSECT SELECT {forename} FROM {drivers} JOIN {results} JOIN {races} WHERE "
                      f"{race_name} = 'Chinese Grand Prix'", q, ctx, opts)
    assert got.count("JOIN results ON") == 2 and got.count("JOIN races ON") == 2, got
    assert _drop_repeated_joins("SELECT c1 FROM t1 JOIN t2 JOIN t2 EXCEPT SELECT c1 FROM t1 JOIN t2 JOIN t3 JOIN t3") == (
        "SELECT c1 FROM t1 JOIN t2 EXCEPT SELECT c1 FROM t1 JOIN t2 JOIN t3")
    # a bare JOIN whose condition a later JOIN writes is left as written
    d_id, r_did, r_rid, race_id = (cid[k] for k in (("drivers", "driverid"), ("results", "driverid"),
                                                    ("results", "raceid"), ("races", "raceid")))
    got = postprocess(f"SELECT {forename} FROM {drivers} JOIN {races} JOIN {results} ON {d_id} = {r_did} AND "
                      f"{race_id} = {r_rid} WHERE {race_name} = 'Australian Grand Prix'", q, ctx, opts)
    assert got.startswith("SELECT drivers.forename FROM drivers JOIN races JOIN results ON "), got
    assert conn.execute(got).fetchall() == [("Lewis",)]
    # two bridges, found from the columns the query reads
    got = postprocess(f"SELECT {forename} FROM {drivers} WHERE {country} = 'China'", q, ctx, opts)
    assert conn.execute(got).fetchall() == [("Nico",)], got
    assert got.count(" ON ") == 3
    # nothing links the two: left as a plain join; without fix_tables no bridge is added
    assert "JOIN sponsors" in postprocess(f"SELECT {forename} FROM {drivers} JOIN {sponsors}", q, ctx, opts)
    plain = postprocess(f"SELECT {forename} FROM {drivers} JOIN {races}", q, ctx, opts.replace(fix_tables=False))
    assert plain == "SELECT drivers.forename FROM drivers JOIN races"


def test_linked_columns_only_shows_the_named_columns_and_still_infers_joins_through_hidden_keys(tmp_path):
    from t2sql.prompt import placeholder_target

    ctx = PERFORMER_CTX
    opts = NUMBERED.replace(linked_tables_only=True, linked_columns_only=True)
    q = "What are the names of singers with a concert in 2014?"
    assert build_source(q, ctx, opts) == ("question: What are the names of singers with a concert in 2014? | "
                                          "t1 singer [E] : c1 name [E] | t2 concert [E] : c2 concert id [P]")
    gold = "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.id = T2.performer_id WHERE T2.year = 2014"
    # year is not named by the question: no target can point at it.
    assert placeholder_target(gold, q, ctx, opts) is None
    q2 = "What are the names of singers with a concert in the year 2014?"
    target = build_target(gold, q2, ctx, opts)
    assert target == "SELECT c1 FROM t1 JOIN t2 WHERE c3 = 2014"
    # The join goes through two hidden columns; it is given back on output.
    assert postprocess(target, q2, ctx, opts) == ("SELECT singer.name FROM singer JOIN concert ON "
                                                  "singer.id = concert.performer_id WHERE concert.year = 2014")
    # country is hidden, and no question word links to it.
    assert "country" not in build_source(q2, ctx, opts)
    assert "performer" not in build_source(q2, ctx, opts)
    # Nothing named: every column is shown.
    assert "country" in build_source("How big is it?", ctx, opts)
    with pytest.raises(ValidationError, match="linked_columns_only needs"):
        PromptOptions(format="linked", link_marks=True, linked_columns_only=True)

    from t2sql.modeling import train_tokenizer
    from t2sql.training import encode_file

    rows = [{"id": "a", "question": q2, "context": ctx, "answer": gold},
            {"id": "b", "question": q, "context": ctx, "answer": gold}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = train_tokenizer([build_source(q2, ctx, opts), target] * 5, 300)
    assert encode_file(path, tok, 128, 32, prompt=opts).ids == ["a"]


def test_fix_tables_reads_the_tables_the_chosen_columns_belong_to():
    ctx = PERFORMER_CTX + "; CREATE TABLE stadium (capacity NUMBER)"
    opts = NUMBERED.replace(repair=True, fix_tables=True)
    q = "What are the names of singers with a concert in the year 2014?"
    assert build_source(q, ctx, opts).endswith("| t1 singer [E] : c1 id , c2 name [E] , c3 country | t2 concert [E] : "
                                               "c4 concert id [P] , c5 performer id , c6 year [E] | t3 stadium : "
                                               "c7 capacity")
    cases = {
        # the right column, the wrong table: the table is swapped
        "SELECT c2 FROM t2": "SELECT name FROM singer",
        # a column of another table: it is joined, through the foreign key
        "SELECT c2 FROM t1 WHERE c6 = 2014": ("SELECT singer.name FROM singer JOIN concert ON singer.id = "
                                              "concert.performer_id WHERE concert.year = 2014"),
        # a join repeated until the token limit
        "SELECT c2 , COUNT(*) FROM t1 JOIN t2 JOIN t2 JOIN t2 JOIN t2 GROUP BY c2": (
            "SELECT singer.name, COUNT(*) FROM singer JOIN concert ON singer.id = concert.performer_id "
            "GROUP BY singer.name"),
        "SELECT c2 FROM t1 LEFT JOIN t1": "SELECT name FROM singer",
        # a self-join without aliases (every column ambiguous), in a query with a subquery
        "SELECT c2 FROM t1 JOIN t1 ON c1 = c1 WHERE c1 = (SELECT MAX( c1) FROM t1)": (
            "SELECT name FROM singer WHERE id = (SELECT MAX(id) FROM singer)"),
        # each SELECT on its own: the subquery reads concert
        "SELECT COUNT(*) FROM t1 WHERE c2 IN (SELECT c6 FROM t1)": (
            "SELECT COUNT(*) FROM singer WHERE singer.name IN (SELECT concert.year FROM concert)"),
        # no key between them: a plain join that runs
        "SELECT c2 , c7 FROM t1": "SELECT singer.name, stadium.capacity FROM singer JOIN stadium",
        # already consistent: unchanged
        "SELECT c2 FROM t1 WHERE c3 = 'UK'": "SELECT name FROM singer WHERE country = 'UK'",
    }
    conn = sqlite3.connect(":memory:")
    conn.executescript(ctx.replace("; ", ";\n") + ";")
    for text, want in cases.items():
        got = postprocess(text, q, ctx, opts)
        assert got == want, text
        conn.execute(got)
        unfixed = postprocess(text, q, ctx, opts.replace(fix_tables=False))
        assert (unfixed == want) == text.endswith("'UK'")
    with pytest.raises(ValidationError, match="fix_tables needs"):
        PromptOptions(fix_tables=True)


def test_expand_names_links_abbreviated_and_glued_names():
    from t2sql.linking import name_words, question_links
    from t2sql.prompt import placeholder_target
    from t2sql.prompts.linked import view

    assert name_words("dept_name", expand=True) == ["department", "name"]
    assert name_words("dormid", expand=True) == ["dormitory", "id"]
    assert name_words("StuID", expand=True) == ["student", "id"]
    assert name_words("forename", expand=True) == ["first", "name"]
    assert name_words("valid", expand=True) == ["valid"]  # an English word, not "val id"
    assert name_words("dept_name") == ["dept", "name"]

    ctx = ("CREATE TABLE department (dept_name TEXT PRIMARY KEY, building TEXT); "
           "CREATE TABLE student (StuID NUMBER PRIMARY KEY, Fname TEXT, surname TEXT, age NUMBER, dept_name TEXT, "
           "FOREIGN KEY (dept_name) REFERENCES department(dept_name))")
    q = "What are the first names and ages of students in the History department?"
    gold = "SELECT Fname, age FROM student WHERE dept_name = 'History'"
    opts = NUMBERED.replace(linked_tables_only=True, linked_columns_only=True, value_pointers=True, question_links=True)
    plain = build_source(q, ctx, opts)
    assert "fname" not in plain and "dept name" not in plain
    assert placeholder_target(gold, q, ctx, opts) is None
    expanded = opts.replace(expand_names=True)
    source = build_source(q, ctx, expanded)
    assert "fname [E]" in source and "dept name [P]" in source and "age [E]" in source
    assert "building" not in source
    assert "surname" not in source  # last name is not asked for
    lay = view(q, ctx, expanded.options)
    fname = lay.column_ids[("student", "fname")]
    words = q.split()
    assert fname in question_links(q, lay)[words.index("first")]
    target = placeholder_target(gold, q, ctx, expanded)
    assert target is not None
    assert postprocess(target, q, ctx, expanded) == gold
    # a name the question writes as it is keeps its own link
    assert "surname [E]" in build_source("List every surname.", ctx, expanded)


def test_key_columns_shows_the_keys_between_shown_tables():
    from t2sql.prompt import placeholder_target

    q = "How many singers have no concert?"
    gold = "SELECT count(*) FROM singer WHERE id NOT IN (SELECT performer_id FROM concert)"
    opts = NUMBERED.replace(linked_tables_only=True, linked_columns_only=True)
    # concert_id is the only column named: the keys stay hidden, and the target cannot be written
    assert "performer" not in build_source(q, PERFORMER_CTX, opts)
    assert placeholder_target(gold, q, PERFORMER_CTX, opts) is None
    keyed = opts.replace(key_columns=True)
    source = build_source(q, PERFORMER_CTX, keyed)
    assert source.endswith("| t1 singer [E] : c1 id | t2 concert [E] : c2 concert id [P] , c3 performer id")
    target = placeholder_target(gold, q, PERFORMER_CTX, keyed)
    assert target == "SELECT COUNT(*) FROM t1 WHERE NOT c1 IN (SELECT c3 FROM t2)"
    assert postprocess(target, q, PERFORMER_CTX, keyed) == ("SELECT COUNT(*) FROM singer WHERE NOT singer.id IN "
                                                              "(SELECT concert.performer_id FROM concert)")
    # a key to a table that is not shown stays hidden
    assert "performer" not in build_source("How many concerts are there?", PERFORMER_CTX, keyed)
    with pytest.raises(ValidationError, match="key_columns needs"):
        PromptOptions(format="linked", placeholders=True, link_marks=True, key_columns=True)


def test_rank_tables_numbers_the_named_table_first():
    ctx = ("CREATE TABLE climber (climber_id NUMBER, name TEXT, country TEXT); "
           "CREATE TABLE mountain_range (range_id NUMBER, name TEXT); "
           "CREATE TABLE ranges_visited (range_id NUMBER, climber_id NUMBER)")
    opts = NUMBERED.replace(linked_tables_only=True, linked_columns_only=True)
    q = "What is the name of each mountain range?"
    # declaration order: climber (linked only through its name column) comes first
    assert build_source(q, ctx, opts).endswith(
        "| t1 climber : c1 name [E] | t2 mountain range [E] : c2 range id [P] , c3 name [E] | t3 ranges visited [P] "
        ": c4 range id [P]")
    ranked = opts.replace(rank_tables=True)
    assert build_source(q, ctx, ranked).endswith(
        "| t1 mountain range [E] : c1 range id [P] , c2 name [E] | t2 ranges visited [P] : c3 range id [P] "
        "| t3 climber : c4 name [E]")
    gold = "SELECT name FROM mountain_range"
    assert build_target(gold, q, ctx, ranked) == "SELECT c2 FROM t1"
    assert postprocess("SELECT c2 FROM t1", q, ctx, ranked) == gold


def test_shipped_configs_write_and_read_as_recorded():
    """Inputs, targets and decoded SQL of the shipped configs' formats on sample questions, recorded
    from the code before prompt formats became plug-ins: a change to a format shows up here."""
    from t2sql.config import load_config
    from t2sql.prompt import placeholder_target, question_context

    os.environ.setdefault("T2SQL_DATA_DIR", str(ROOT / "data"))
    recorded = json.loads((ROOT / "tests" / "fixtures" / "prompt" / "shipped_formats.json").read_text())
    records = {r["id"]: r for r in load_spider(str(ROOT / "data" / "spider_sample"))[0]}
    for name, expected in recorded.items():
        opts = load_config(ROOT / "configs" / f"{name}.yaml").prompt
        for row in expected["rows"]:
            rec = records[row["id"]]
            ctx = question_context(rec["question"], rec["context"], rec.get("db_path"), opts)
            target = build_target(rec["answer"], rec["question"], ctx, opts)
            assert build_source(rec["question"], ctx, opts) == row["source"], (name, row["id"])
            assert target == row["target"], (name, row["id"])
            if opts.format == "linked":
                assert placeholder_target(rec["answer"], rec["question"], ctx, opts) == row["placeholder"]
            assert postprocess(target, rec["question"], ctx, opts) == row["decoded"], (name, row["id"])


def test_a_self_join_without_aliases_is_read_once():
    from t2sql.linking.repair import _drop_self_joins

    cases = {
        "SELECT c1 FROM t1 JOIN t2 JOIN t1": (True, "SELECT c1 FROM t1 JOIN t2"),
        "SELECT c1 FROM t1 WHERE c2 IN (SELECT c2 FROM t2 JOIN t2)": (
            True, "SELECT c1 FROM t1 WHERE c2 IN (SELECT c2 FROM t2)"),
        # aliases tell the two apart
        "SELECT a.c1 FROM t1 AS a JOIN t1 AS b": (False, "SELECT a.c1 FROM t1 AS a JOIN t1 AS b"),
        "SELECT c1 FROM (SELECT c1 FROM t1) JOIN t1": (False, "SELECT c1 FROM (SELECT c1 FROM t1) JOIN t1"),
    }
    for text, (changed, want) in cases.items():
        tree = sqlglot.parse_one(text, read="sqlite")
        assert _drop_self_joins(tree) is changed, text
        assert tree.sql(dialect="sqlite").replace(" ON TRUE", "") == want
