"""Constrained decoding: only the prompt's own schema items and question words, valid query prefixes,
and an end-of-sequence only on a query that parses.

    .venv/bin/pytest tests/inference/test_constrained.py -q
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest
import sqlglot
import torch

from t2sql.inference import Translator
from t2sql.inference import constrained
from t2sql.inference.constrained import PrefixChecker, RowSchema, SQLConstraint, piece_texts
from t2sql.prompt import PromptOptions, build_source, build_target, save_prompt_options

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "spider_sample"
DBS = ("musical", "climbing")
LINKED = PromptOptions(format="linked", placeholders=True, link_marks=True, value_pointers=True)
SOURCE = ("question: w1 How w2 many w3 actors t1 c1 w4 are w5 in w6 Chicago | t1 actor [E] : c1 actor id [P] , "
          "c2 name [E] | t2 musical : c3 musical id , c4 title")


def _context(db_id: str) -> str:
    conn = sqlite3.connect(SAMPLE / "database" / db_id / f"{db_id}.sqlite")
    try:
        return "; ".join(r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND sql IS NOT NULL"))
    finally:
        conn.close()


def _examples(n: int = 16) -> list[dict]:
    rows = json.loads((SAMPLE / "train_spider.json").read_text())
    contexts = {db: _context(db) for db in DBS}
    return [{"question": r["question"], "context": contexts[r["db_id"]], "answer": r["query"]}
            for r in rows if r["db_id"] in DBS][:n]


def _model(out: Path, examples: list[dict], steps: int):
    """A tiny T5 of the linked format, trained ``steps`` steps (0: random weights)."""
    from transformers import T5Config, T5ForConditionalGeneration

    from t2sql.modeling import train_tokenizer

    torch.manual_seed(0)
    torch.set_num_threads(1)
    sources = [build_source(e["question"], e["context"], LINKED) for e in examples]
    targets = [build_target(e["answer"], e["question"], e["context"], LINKED) for e in examples]
    tok = train_tokenizer(sources + targets, 400, extra_tokens=LINKED.extra_tokens())
    cfg = T5Config(vocab_size=len(tok), d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2,
                   num_heads=4, feed_forward_proj="relu", dropout_rate=0.0, pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)
    model = T5ForConditionalGeneration(cfg)
    if steps:
        enc = tok(sources, return_tensors="pt", padding=True, truncation=True, max_length=160)
        labels = tok(targets, return_tensors="pt", padding=True).input_ids
        labels[labels == tok.pad_token_id] = -100
        opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
        for _ in range(steps):
            model(**enc, labels=labels).loss.backward()
            opt.step()
            opt.zero_grad()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    save_prompt_options(LINKED, out)
    return out


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("random") / "model", _examples(), 0)


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("trained") / "model", _examples(), 100)


def _pairs(n: int = 8) -> list[tuple[str, str]]:
    examples = _examples(16)
    extra = [("How many climbers are from each country?", examples[-1]["context"]),
             ("Which musicals have the title Cats and run after 1990?", examples[0]["context"])]
    return [(e["question"], e["context"]) for e in examples[:n]] + extra


def _shown(source: str) -> tuple[set[str], set[str], int]:
    """Table and column numbers shown in a linked input's schema part, and its question's word count."""
    question, schema = source.split(" | ", 1)
    return (set(re.findall(r"(?:^|\| )(t\d+)\b", schema)), set(re.findall(r"(?:: |, )(c\d+)\b", schema)),
            len(re.findall(r"\bw\d+\b", question)))


def _code(text: str) -> str:
    """The text outside string literals (an unterminated one included)."""
    return re.sub(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?", "''", text)


def _pointers(text: str) -> list[int]:
    """Question-word numbers in code and in pointer values (``' w9 w13 '``)."""
    found = re.findall(r"\bw(\d+)\b", _code(text))
    for lit in re.findall(r"'\s+%?\s*(?:w\d+\s*)+%?\s*'?", text):
        found += re.findall(r"w(\d+)", lit)
    return [int(n) for n in found]


# -- the checker on text ---------------------------------------------------------------------------

def test_rows_read_what_the_input_shows():
    row = RowSchema.from_source(SOURCE, LINKED)
    assert row.tables == {"t1", "t2"} and row.columns == {"c1", "c2", "c3", "c4"} and row.n_words == 6
    assert row.owners["c3"] == {"t2"}
    plain = RowSchema.from_source("question: How many? schema: CREATE TABLE singer (singer_id number, name text)")
    assert plain.table_names == {"singer"} and plain.column_names == {"singer_id", "name"}


@pytest.mark.parametrize("text", [
    "SELECT c5",                                     # a column the input does not show
    "SELECT c4 FROM t3",                             # a table the input does not show
    "SELECT COUNT(*) FROM t1 WHERE c2 = w7",         # a question word beyond the question (6 words)
    "SELECT c1 FROM t1 WHERE c2 = ' w9 '",           # the same, inside a pointer value
    "SELECT c1 FROM t1 WHERE c2 = ' w7",             # ... even before the value is closed
    "SELECT c1 FROM t1 GROUP BY c1 WHERE",           # clause order
    "SELECT c1 FROM t1 ORDER c1",                    # ORDER without BY
    "SELECT c1 FROM t1 )",                           # unbalanced parenthesis
    "SELECT c1 c2",                                  # two operands in a row
    "SELECT FROM",                                   # a clause without its operand
    "FROM t1",                                       # a query starts with SELECT
    "SELECT c1 FROM t1 WHERE c2 == = 3",             # two operators in a row
    "SELECT c1 FROM t1 WHERE c2 = 3 ?",              # not SQL
    "SELECT c1 FROM t1 WHERE c2 = 'a' ; SELECT",     # a second statement
    "SELECT c1 FROM t2 c9",                          # an item number as an alias
    "SELECT COUNT(*) AS c7 FROM t1",                 # ... even after AS
    "SELECT c1 FROM t1 WHERE c2 = 1  AND",           # runs of blanks
    "SELECT c1 FROM t1 WHERE c2 = 1\x1f",            # control characters
    "SELECT c1 FROM t1 WHERE THEN",                  # THEN outside CASE
    "SELECT c1 ORDER BY c1",                         # ORDER BY before FROM
])
def test_invalid_prefixes_are_rejected(text):
    assert not PrefixChecker(RowSchema.from_source(SOURCE, LINKED)).valid_prefix(text)


@pytest.mark.parametrize("text,complete", [
    ("SELECT c", False),                             # c1..c4 still possible
    ("SELECT COUNT(", False),
    ("SELECT c1 FROM t1 WHERE c2 = 'abc", False),    # an open value
    ("SELECT c1 FROM t1 WHERE c2 = ' w6 '", True),
    ("SELECT COUNT(DISTINCT c1) FROM t1", True),
    ("SELECT T1. c1 FROM t1 AS T1 JOIN t1 AS T2", True),
    ("SELECT c4 FROM t1 JOIN t2 WHERE c1 > 5 ORDER BY c4 DESC LIMIT 1", True),
    ("SELECT c2 FROM t1 WHERE NOT c1 IN (SELECT c3 FROM t2)", True),
    ("SELECT c2 FROM t1 WHERE c1 IN (SELECT c3 FROM t2", False),
    ("SELECT c2, COUNT(*) FROM t1 GROUP BY c2 HAVING COUNT(*) >= 3", True),
    ("SELECT COUNT(*) AS total FROM t1 ORDER BY total", True),
])
def test_valid_prefixes_are_accepted(text, complete):
    checker = PrefixChecker(RowSchema.from_source(SOURCE, LINKED))
    assert checker.valid_prefix(text)
    assert checker.valid_complete(text) is complete


def test_an_order_comparison_points_only_at_a_number_of_the_question():
    source = ("question: w1 Singers w2 older w3 than w4 30 w5 or w6 more w7 ? | t1 singer [E] : c1 name , c2 age")
    checker = PrefixChecker(RowSchema.from_source(source, LINKED))
    assert checker.valid_complete("SELECT c1 FROM t1 WHERE c2 > w4")
    assert not checker.valid_prefix("SELECT c1 FROM t1 WHERE c2 > w6 ")  # "more" is not a value to compare
    assert not checker.valid_prefix("SELECT c1 FROM t1 WHERE c2 >= w1 ")
    assert checker.valid_complete("SELECT c1 FROM t1 WHERE c1 = ' w6 '")  # equality: any word (no stored values shown)
    assert checker.valid_complete("SELECT c1 FROM t1 ORDER BY c2 LIMIT w4")
    assert not checker.valid_prefix("SELECT c1 FROM t1 ORDER BY c2 LIMIT w2 ")


def test_a_degenerate_join_chain_is_refused_before_it_is_parsed():
    checker = PrefixChecker(RowSchema.from_source(SOURCE, LINKED))
    chain = "SELECT c2 FROM t1" + " JOIN t2" * 12
    assert checker.valid_complete(chain)
    started = time.perf_counter()
    assert not checker.valid_prefix(chain + " JOIN t2") and not checker.valid_complete(chain + " JOIN t2" * 40)
    assert time.perf_counter() - started < 1.0  # sqlglot is never handed the chain


def test_end_needs_columns_of_the_tables_read():
    checker = PrefixChecker(RowSchema.from_source(SOURCE, LINKED))
    assert checker.valid_prefix("SELECT c4 FROM t1")  # t2 could still be joined
    assert not checker.valid_complete("SELECT c4 FROM t1")  # c4 belongs to t2, which is not read
    assert checker.valid_complete("SELECT c4 FROM t1 JOIN t2")
    assert checker.valid_complete("SELECT c1 FROM t1 WHERE c1 IN (SELECT c3 FROM t2)")
    assert not checker.valid_complete("SELECT c1 FROM t2 WHERE c1 IN (SELECT c3 FROM t2)")
    # A format that reads each column's table on output (fix_tables) writes a column without its table.
    fixed = PrefixChecker(RowSchema.from_source(SOURCE, LINKED.replace(fix_tables=True)))
    assert fixed.valid_complete("SELECT c4 FROM t1") and fixed.valid_complete("SELECT c2 FROM t1 ORDER BY c3 DESC")
    assert not fixed.valid_complete("SELECT c4 FROM t1 WHERE")  # the rest of the grammar still holds


def _recorded():
    from t2sql.config import load_config
    from t2sql.data.sources import load_spider
    from t2sql.prompt import question_context

    os.environ.setdefault("T2SQL_DATA_DIR", str(ROOT / "data"))
    recorded = json.loads((ROOT / "tests" / "fixtures" / "prompt" / "shipped_formats.json").read_text())
    records = {r["id"]: r for r in load_spider(str(SAMPLE))[0]}
    for name, expected in recorded.items():
        opts = load_config(ROOT / "configs" / f"{name}.yaml").prompt
        for row in expected["rows"]:
            rec = records[row["id"]]
            ctx = question_context(rec["question"], rec["context"], rec.get("db_path"), opts)
            yield name, row, RowSchema.for_pair(rec["question"], ctx, row["source"], opts)


def test_every_recorded_gold_target_is_accepted_character_by_character():
    """Whatever pieces a tokenizer cuts a target into, no prefix of a gold target is refused."""
    n = 0
    for name, row, schema in _recorded():
        checker, target = PrefixChecker(schema), row["target"]
        refused = [target[:i] for i in range(1, len(target) + 1) if not checker.valid_prefix(target[:i])]
        assert not refused, (name, row["id"], refused[:1])
        assert checker.valid_complete(target), (name, row["id"], target)
        n += 1
    assert n == 64


def test_every_recorded_gold_target_is_accepted_token_by_token(random_model):
    """The decoder's own path: each gold token is among the allowed ones after the tokens before it,
    and end-of-sequence is allowed after the last."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(random_model)
    pieces, _ = piece_texts(tok)
    for name, row, schema in _recorded():
        ids = tok(row["target"], add_special_tokens=False)["input_ids"]
        assert "".join(pieces[i] for i in ids).strip() == tok.decode(ids).strip()
        c = SQLConstraint(tok, [schema])
        for k, nxt in enumerate(ids + [tok.eos_token_id]):
            # The gold token ranked last among three wrong ones: it is found and kept.
            wrong = [tok.pad_token_id, tok.unk_token_id]
            assert c.allowed(0, ids[:k], wrong + [nxt], 1) == [nxt], (name, row["id"], k, tok.decode(ids[:k + 1]))


# -- decoding with a model -------------------------------------------------------------------------

def _check_outputs(translator, sources, ids_per_source, ended_must_parse=True):
    """Every output names only shown items and existing question words; each that ended parses."""
    tok = translator.tokenizer
    ended = 0
    for source, cands in zip(sources, ids_per_source):
        tables, columns, n_words = _shown(source)
        checker = PrefixChecker(RowSchema.from_source(source, translator.prompt))
        for ids in cands:
            text = tok.decode(ids, skip_special_tokens=True)
            code = _code(text)
            assert set(re.findall(r"\bt\d+\b", code)) <= tables, (text, tables)
            assert set(re.findall(r"\bc\d+\b", code)) <= columns, (text, columns)
            assert all(1 <= w <= n_words for w in _pointers(text)), (text, n_words)
            assert checker.valid_prefix(text), text
            if ids and ids[-1] == tok.eos_token_id:
                ended += 1
                assert checker.valid_complete(text), text
                assert sqlglot.parse_one(text, read="sqlite") is not None
    return ended


def test_random_model_emits_only_shown_items_greedy_and_beam(random_model, monkeypatch):
    """An untrained model says nothing sensible: whatever it outputs under the constraint is a valid
    prefix over its input's schema, and every output it ends is a whole query."""
    monkeypatch.setattr(constrained, "TOP_K", 10_000)  # check every token: no fallback to the raw best
    pairs = _pairs()
    kw = dict(num_threads=1, max_new_tokens=48, max_source_length=256, batch_size=4)
    free = Translator(random_model, "torch", **kw)
    tr = Translator(random_model, "torch", constrained=True, **kw)
    sources = tr.sources(pairs)
    raw = free.generate_ids(sources)
    assert any(re.search(r"\b[tc]\d+\b", free.tokenizer.decode(c[0])) is None
               or not PrefixChecker(RowSchema.from_source(s, LINKED)).valid_prefix(free.tokenizer.decode(c[0],
                                                                                   skip_special_tokens=True))
               for s, c in zip(sources, raw))  # unconstrained, the same model writes invalid text
    _check_outputs(tr, sources, tr.generate_ids(sources))
    _check_outputs(tr, sources, tr.generate_ids(sources, num_return_sequences=3, num_beams=3))


def test_trained_model_outputs_all_parse_greedy_and_beam(trained_model):
    pairs = _pairs()
    kw = dict(num_threads=1, max_new_tokens=64, max_source_length=256, batch_size=8)
    tr = Translator(trained_model, "torch", constrained=True, **kw)
    assert tr.info["constrained"] is True
    sources = tr.sources(pairs)
    greedy = tr.generate_ids(sources)
    assert _check_outputs(tr, sources, greedy) == len(pairs)  # every output ended, as a query that parses
    assert tr.constraint_totals["fallbacks"] == 0 and tr.constraint_totals["steps"] > 0
    beams = tr.generate_ids(sources, num_return_sequences=2, num_beams=3)
    assert _check_outputs(tr, sources, [b[:1] for b in beams]) == len(pairs)  # the best beam of each ended
    if tr.constraint_totals["fallbacks"] == 0:  # no beam had to leave the grammar: every one is valid
        _check_outputs(tr, sources, beams)
    for sql in tr.translate(pairs):  # real names back: SQL that parses
        assert sqlglot.parse_one(sql, read="sqlite") is not None
    guided = Translator(trained_model, "torch", constrained=True, execution_guided=True, num_beams=2, **kw)
    for sql in guided.translate(pairs[:3]):  # execution-guided decoding over constrained beams
        assert sqlglot.parse_one(sql, read="sqlite") is not None
    assert guided.constraint_totals["steps"] > 0
    # On its own training questions the constraint leaves the (valid) gold answers alone.
    free = Translator(trained_model, "torch", **kw)
    same = sum(a == b for a, b in zip(free.translate(pairs[:8]), tr.translate(pairs[:8])))
    assert same >= 6


def test_onnx_greedy_equals_torch_under_constraint(trained_model, random_model, monkeypatch):
    pairs = _pairs()
    kw = dict(num_threads=1, max_new_tokens=40, max_source_length=256, batch_size=5, constrained=True)
    for model in (trained_model, random_model):
        if model is random_model:
            monkeypatch.setattr(constrained, "TOP_K", 10_000)
        torch_tr = Translator(model, "torch", **kw)
        onnx_tr = Translator(model, "onnx-fp32", **kw)
        sources = torch_tr.sources(pairs)
        assert onnx_tr.generate_ids(sources) == torch_tr.generate_ids(sources)
    # Beam search on ONNX goes through Hugging Face generate with the same processor.
    beams = Translator(trained_model, "onnx-fp32", **{**kw, "num_beams": 2})
    _check_outputs(beams, beams.sources(pairs[:4]), beams.generate_ids(beams.sources(pairs[:4]), 2, 2))


def test_fallback_keeps_the_best_token_when_nothing_checked_is_valid(random_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(random_model)
    c = SQLConstraint(tok, [RowSchema.from_source(SOURCE, LINKED)], top_k=2)
    bad = [tok.pad_token_id, tok.unk_token_id, tok.eos_token_id]
    assert c.allowed(0, [], bad, 1) == [tok.pad_token_id]  # nothing valid among 2 checked: the raw best
    assert c.stats["fallbacks"] == 1
    select = tok(" SELECT", add_special_tokens=False)["input_ids"]
    assert c.allowed(0, [], [tok.eos_token_id] + select[:1], 1) == select[:1]


def test_end_of_sequence_only_after_a_whole_query(random_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(random_model)
    c = SQLConstraint(tok, [RowSchema.from_source(SOURCE, LINKED)])
    eos = tok.eos_token_id

    def ends(text: str) -> bool:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return c.allowed(0, ids, [eos, tok.pad_token_id], 1) == [eos] and not c.last_fallback

    assert not ends("SELECT c4 FROM")
    assert not ends("SELECT c4 FROM t1")  # c4 is a column of t2
    assert ends("SELECT c4 FROM t2")
    assert not ends("SELECT COUNT(*) FROM t1 WHERE c2 = ' w6")
    assert ends("SELECT COUNT(*) FROM t1 WHERE c2 = ' w6 '")
    assert not ends("SELECT c1 FROM t1 WHERE c1 IN (SELECT c3 FROM t2")
    assert ends("SELECT c1 FROM t1 WHERE c1 IN (SELECT c3 FROM t2)")


def test_sentencepiece_style_pieces_split_words_and_are_still_accepted():
    """A Unigram tokenizer with Metaspace pieces (as t5-small's) cuts keywords and placeholders into
    pieces ('▁', 'SE', 'LE', 'C', 'T'); every gold target is still accepted token by token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    recorded = list(_recorded())
    tk = Tokenizer(models.Unigram())
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    tk.train_from_iterator([r["source"] for _, r, _ in recorded] + [r["target"] for _, r, _ in recorded],
                           trainers.UnigramTrainer(vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"],
                                                   unk_token="<unk>"))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    pieces, _ = piece_texts(tok)
    split = 0
    for name, row, schema in recorded:
        ids = tok(row["target"], add_special_tokens=False)["input_ids"]
        assert "".join(pieces[i] for i in ids).strip() == tok.decode(ids).strip()
        split += "SE" in tok.convert_ids_to_tokens(ids)
        c = SQLConstraint(tok, [schema])
        for k, nxt in enumerate(ids + [tok.eos_token_id]):
            assert c.allowed(0, ids[:k], [tok.pad_token_id, nxt], 1) == [nxt] and not c.last_fallback, \
                (name, row["id"], "".join(pieces[i] for i in ids[:k + 1]))
    assert split > 0  # keywords really were cut into pieces
    c = SQLConstraint(tok, [RowSchema.from_source(SOURCE, LINKED)])
    prefix = tok("SELECT COUNT(*) FROM t1 WHERE c2 =", add_special_tokens=False)["input_ids"]
    bad = tok(" w9", add_special_tokens=False)["input_ids"]
    assert not c.checkers[0].valid_prefix(c.text(prefix + bad))  # a pointer past the 6 question words


PLAIN_CTX = ("CREATE TABLE singer (singer_id number, name text); "
             "CREATE TABLE concert (concert_id number, singer_id number)")


@pytest.mark.parametrize("text,prefix,complete", [
    ("SELECT s.name FROM singer AS s", True, True),      # a short alias used before its AS
    ("SELECT s.name FROM singer", True, False),          # ... must be declared by the end
    ("SELECT s.name FROM singer s", True, True),
    ("SELECT nme FROM singer", False, False),            # not a name of the context
    ("SELECT name FROM singers", False, False),
    ("SELECT a.name FROM singer AS a JOIN concert AS b ON a.singer_id = b.singer_id", True, True),
    ("SELECT x.concert_id FROM singer AS x", True, False),  # concert_id is not a column of singer
    ("SELECT count(*) FROM concert", True, True),
    ("SELECT count(*) AS total FROM singer ORDER BY tot", True, False),  # an output alias, being written
    ("SELECT count(*) AS total FROM singer ORDER BY total", True, True),
    ("SELECT count(*) AS total FROM singer ORDER BY tox", False, False),
])
def test_plain_format_allows_the_context_names(text, prefix, complete):
    checker = PrefixChecker(RowSchema.for_pair("q", PLAIN_CTX, build_source("q", PLAIN_CTX), None))
    assert checker.valid_prefix(text) is prefix
    assert checker.valid_complete(text) is complete


VALUES = PromptOptions(format="linked", placeholders=True, link_marks=True, value_pointers=True,
                       question_values=True)


def test_a_value_points_only_at_words_that_can_be_values():
    """With the stored values the question names in its input, a value's first and last words must be a
    number, quoted, capitalised (not the first word), a stored value's word, or punctuation ending one."""
    source = ('question: w1 Find w2 the w3 name c1 w4 of w5 the w6 " w7 Ph w8 . w9 D w10 . w11 " w12 singers '
              "w13 from w14 Cape w15 Verde w16 aged w17 thirty w18 in w19 rock | t1 singer [E] : c1 name [E] , "
              "c2 country , c3 age , c4 genre [V] ( 'Rock' ) , c5 degree")
    row = RowSchema.from_source(source, VALUES)
    assert row.value_words == {7, 8, 9, 10, 14, 15, 17, 19}
    checker = PrefixChecker(row)
    for ok in ("SELECT c1 FROM t1 WHERE c2 = ' w14 w15 '", "SELECT c1 FROM t1 WHERE c5 = ' w7 w10 '",
               "SELECT c1 FROM t1 WHERE c4 = ' w19 '", "SELECT c1 FROM t1 WHERE c3 = w17",
               "SELECT c1 FROM t1 WHERE c3 > w17", "SELECT c1 FROM t1 WHERE c1 LIKE ' % w3 % '"):
        assert checker.valid_complete(ok), ok
    for bad in ("SELECT c1 FROM t1 WHERE c2 = ' w13", "SELECT c1 FROM t1 WHERE c2 = ' w14 w16",
                "SELECT c1 FROM t1 WHERE c2 = ' w2 ", "SELECT c1 FROM t1 WHERE c3 = w16 ",
                "SELECT c1 FROM t1 WHERE c2 = ' w1 '"):
        assert not checker.valid_prefix(bad), bad
    assert checker.valid_prefix("SELECT c1 FROM t1 WHERE c2 = ' w1")  # w14, w15, w17 and w19 are still to come
    assert checker.valid_complete("SELECT c1 FROM t1 WHERE c4 = 'Rock'")  # a value written out
    assert not checker.valid_prefix("SELECT c1 FROM t1 WHERE c4 = 'INTERSECT SELECT c2")  # not a value
    assert not checker.valid_prefix("SELECT c1 FROM t1 WHERE c4 = ' w13 c")
    constrained.VALUE_RULE = False
    try:
        assert PrefixChecker(row).valid_complete("SELECT c1 FROM t1 WHERE c2 = ' w13 '")
    finally:
        constrained.VALUE_RULE = True
    assert RowSchema.from_source(source, LINKED).value_words is None  # no stored values shown: values stay free


def test_a_value_names_something():
    """Punctuation ends a value but does not begin one; a finished literal holds a pointer or a letter or
    digit; no arithmetic is done on a quoted string."""
    source = ("question: w1 Which w2 teachers w3 teach w4 OTHA w5 MOYER w6 ? w7 List w8 Ph w9 . w10 D w11 . "
              "w12 holders | t1 teacher [E] : c1 name [E] , c2 grade [V] ( 'A+' ) , c3 rank")
    row = RowSchema.from_source(source, VALUES)
    assert {4, 5, 6, 8, 9, 10, 11} <= row.value_words
    assert row.punctuation_words == {6, 9, 11}
    checker = PrefixChecker(row)
    for ok in ("SELECT c1 FROM t1 WHERE c1 = ' w4 w5 '", "SELECT c1 FROM t1 WHERE c3 = ' w8 w11 '",
               "SELECT c1 FROM t1 WHERE c2 = 'A+'", "SELECT c1 FROM t1 WHERE c1 LIKE '%O%'",
               "SELECT c1 FROM t1 WHERE c1 LIKE ' % w4 % '", "SELECT c1 FROM t1 WHERE c3 = w4",
               "SELECT c1 FROM t1 WHERE c3 = c3 % 2"):
        assert checker.valid_complete(ok), ok
    for bad in ("SELECT c1 FROM t1 WHERE c1 = ' w6 '", "SELECT c1 FROM t1 WHERE c3 = w6 ",
                "SELECT c1 FROM t1 WHERE c3 = ' w9 w11 '", "SELECT c1 FROM t1 WHERE c1 = '?'",
                "SELECT c1 FROM t1 WHERE c1 = '.' ", "SELECT c1 FROM t1 WHERE c1 LIKE '%' ",
                "SELECT c1 FROM t1 WHERE c1 LIKE ' % ' ", "SELECT c1 FROM t1 WHERE c1 LIKE '%O%' %",
                "SELECT c1 FROM t1 WHERE c1 = c3 + 'A+'", "SELECT c1 FROM t1 WHERE c1 = - '"):
        assert not checker.valid_prefix(bad), bad
    assert checker.valid_prefix("SELECT c1 FROM t1 WHERE c1 = '?")  # still being written: '?x' may follow
    constrained.VALUE_RULE = False
    try:
        assert PrefixChecker(row).valid_complete("SELECT c1 FROM t1 WHERE c1 = '?'")
        assert PrefixChecker(row).valid_complete("SELECT c1 FROM t1 WHERE c1 = ' w6 '")
    finally:
        constrained.VALUE_RULE = True


def test_both_sides_of_a_set_operation_have_as_many_columns():
    checker = PrefixChecker(RowSchema.from_source(SOURCE, LINKED))
    assert checker.valid_complete("SELECT c1, c2 FROM t1 INTERSECT SELECT c1, c2 FROM t1")
    assert checker.valid_complete("SELECT c1 FROM t1 EXCEPT SELECT c3 FROM t2 UNION SELECT c4 FROM t2")
    assert not checker.valid_prefix("SELECT c1, c2 FROM t1 INTERSECT SELECT c1 FROM")  # one column short
    assert not checker.valid_prefix("SELECT c1 FROM t1 UNION SELECT c3, ")  # one too many
    assert checker.valid_prefix("SELECT c1, c2 FROM t1 INTERSECT SELECT COUNT(c1, c2), ")  # a function's commas
    assert checker.valid_complete("SELECT * FROM t1 EXCEPT SELECT c1, c2 FROM t1")  # * is not counted
    assert checker.valid_complete("SELECT c1 FROM t1 WHERE c2 IN (SELECT c1 FROM t1 INTERSECT SELECT c3 FROM t2)")


def test_a_value_does_not_start_at_a_sentence_s_first_word():
    source = ('question: w1 Which w2 authors w3 are w4 in w5 Spain w6 ? w7 Show w8 their w9 names c1 w10 . '
              "w11 List w12 a w13 Ph w14 . w15 D w16 . w17 holder | t1 author [E] : c1 name [E] , c2 country [V] "
              "( 'Made in Spain' )")
    assert RowSchema.from_source(source, VALUES).value_words == {5, 6, 13, 14, 15, 16}


@pytest.mark.parametrize("config", ["quickstart", "spider_cpu", "create_context_cpu", "techniques"])
def test_every_training_target_of_the_spider_sample_is_accepted(config):
    """All 1,486 questions of the Spider sample under each shipped config: every target the format can
    write (those training learns from) is accepted character by character, and as a whole."""
    from t2sql.config import load_config
    from t2sql.data.sources import load_spider
    from t2sql.prompt import question_context, training_target

    os.environ.setdefault("T2SQL_DATA_DIR", str(ROOT / "data"))
    opts = load_config(ROOT / "configs" / f"{config}.yaml").prompt
    checked = 0
    for rec in load_spider(str(SAMPLE))[0]:
        ctx = question_context(rec["question"], rec["context"], rec.get("db_path"), opts)
        target = training_target(rec["answer"], rec["question"], ctx, opts)
        if target is None:
            continue
        checker = PrefixChecker(RowSchema.for_pair(rec["question"], ctx, build_source(rec["question"], ctx, opts), opts))
        refused = next((target[:i] for i in range(1, len(target) + 1)
                        if not checker.valid_prefix(target[:i], parent=target[:i - 1])), None)
        assert refused is None, (rec["id"], refused, target)
        assert checker.valid_complete(target), (rec["id"], target)
        checked += 1
    assert checked > 1000
