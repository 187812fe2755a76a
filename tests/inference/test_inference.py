"""Translator backends: ONNX equals PyTorch, INT8 agrees, names are checked, execution guidance works.

    .venv/bin/pytest tests/inference/test_inference.py -q
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from t2sql.inference import Translator, available_backends, canonical_backend
from t2sql import hardware
from t2sql.prompt import build_source

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "spider_sample"
DBS = ("musical", "climbing")


def _context(db_id: str) -> str:
    conn = sqlite3.connect(SAMPLE / "database" / db_id / f"{db_id}.sqlite")
    try:
        return "; ".join(r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND sql IS NOT NULL"))
    finally:
        conn.close()


def _examples(n: int = 16) -> list[dict]:
    rows = json.loads((SAMPLE / "train_spider.json").read_text())
    contexts = {db: _context(db) for db in DBS}
    picked = [r for r in rows if r["db_id"] in DBS][:n]
    return [{"question": r["question"], "context": contexts[r["db_id"]], "answer": r["query"],
             "db_path": str(SAMPLE / "database" / r["db_id"] / f"{r['db_id']}.sqlite")} for r in picked]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny T5 trained until it reproduces its 16 training queries: outputs are real SQL, not noise."""
    from transformers import T5Config, T5ForConditionalGeneration

    from t2sql.modeling import train_tokenizer

    torch.manual_seed(0)
    torch.set_num_threads(1)  # the machine is shared: one thread per test process avoids spin-wait stalls
    examples = _examples()
    sources = [build_source(e["question"], e["context"]) for e in examples]
    golds = [e["answer"] for e in examples]
    tok = train_tokenizer(sources + golds, 400)
    cfg = T5Config(vocab_size=len(tok), d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2,
                   num_heads=4, feed_forward_proj="relu", dropout_rate=0.0, pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)
    model = T5ForConditionalGeneration(cfg)
    enc = tok(sources, return_tensors="pt", padding=True, truncation=True, max_length=64)
    labels = tok(golds, return_tensors="pt", padding=True).input_ids
    labels[labels == tok.pad_token_id] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for step in range(400):  # until the training queries are reproduced; kernels differ across CPUs
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step >= 119 and loss.item() < 0.02:
            break
    out = tmp_path_factory.mktemp("trained") / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out, examples


def _pairs(examples):
    return [(e["question"], e["context"]) for e in examples]


def _token_agreement(a: list[list[list[int]]], b: list[list[list[int]]]) -> float:
    same = total = 0
    for x, y in zip(a, b):
        x, y = x[0], y[0]
        n = max(len(x), len(y))
        x, y = x + [-1] * (n - len(x)), y + [-1] * (n - len(y))
        same += sum(i == j for i, j in zip(x, y))
        total += n
    return same / total


def test_backend_names_are_checked(trained):
    model_dir, _ = trained
    assert canonical_backend("torch") == "torch-fp32" and canonical_backend("ONNX") == "onnx-fp32"
    with pytest.raises(ValueError) as err:
        Translator(model_dir, backend="tensorrt", num_threads=1)
    for name in ("torch-fp32", "torch-bf16", "torch-int8", "onnx-fp32", "onnx-int8", "bitnet", "torch"):
        assert name in str(err.value)
    assert set(available_backends()) >= {"torch-fp32", "torch-amp", "onnx-int8", "bitnet"}
    with pytest.raises(ValueError, match="BitNet"):
        Translator(model_dir, backend="bitnet", num_threads=1)


def test_onnx_fp32_greedy_tokens_equal_pytorch(trained):
    model_dir, examples = trained
    kw = dict(num_threads=1, max_new_tokens=40, max_source_length=64, batch_size=5)
    sources = [build_source(q, c) for q, c in _pairs(examples)]
    sources += [build_source("How many climbers are from each country?", examples[-1]["context"])]
    ref = Translator(model_dir, "torch", **kw).generate_ids(sources)
    got = Translator(model_dir, "onnx-fp32", **kw).generate_ids(sources)
    assert got == ref
    # One batch of 17 whose queries end between 13 and 40 tokens: finished rows leave the batch.
    assert Translator(model_dir, "onnx-fp32", **{**kw, "batch_size": 17}).generate_ids(sources) == ref
    gold_hits = sum(Translator(model_dir, "torch", **kw).translate(_pairs(examples))[i] == e["answer"]
                    for i, e in enumerate(examples))
    assert gold_hits >= 12  # the model really learnt its queries: the comparison is not between noise


def test_mixed_lengths_batched_equal_one_at_a_time(trained):
    """Length bucketing and grouped encoding change the work done, never the tokens."""
    from t2sql.inference.backends import encoder_chunks

    model_dir, examples = trained
    sources = [build_source(e["question"], e["context"][:n]) for e, n in zip(examples[:8], (0, 20, 40, 80, 160, 320,
                                                                                           640, 10_000))]
    kw = dict(num_threads=1, max_new_tokens=24, max_source_length=256)
    one = Translator(model_dir, "torch", batch_size=1, **kw).generate_ids(sources)
    lengths = [len(x) for x in Translator(model_dir, "torch", **kw).encode(sources)]
    assert len(encoder_chunks(lengths)) > 1  # the batch really is encoded in several groups
    for backend in ("torch", "onnx-fp32"):
        assert Translator(model_dir, backend, batch_size=8, **kw).generate_ids(sources) == one


def test_onnx_beam_search_equals_pytorch(trained):
    model_dir, examples = trained
    kw = dict(num_threads=1, max_new_tokens=40, max_source_length=64, num_beams=3)
    pairs = _pairs(examples[:4])
    assert Translator(model_dir, "onnx-fp32", **kw).translate(pairs, num_candidates=3) == \
        Translator(model_dir, "torch-fp32", **kw).translate(pairs, num_candidates=3)


def test_int8_backends_agree_with_fp32(trained):
    model_dir, examples = trained
    kw = dict(num_threads=1, max_new_tokens=40, max_source_length=64)
    sources = [build_source(q, c) for q, c in _pairs(examples)]
    fp32 = Translator(model_dir, "torch-fp32", **kw)
    ref = fp32.generate_ids(sources)
    onnx_int8 = Translator(model_dir, "onnx-int8", **kw)
    assert onnx_int8.info["isa"] == hardware.int8_isa()
    assert _token_agreement(ref, onnx_int8.generate_ids(sources)) >= 0.95
    torch_int8 = Translator(model_dir, "torch-int8", **kw)
    assert _token_agreement(ref, torch_int8.generate_ids(sources)) >= 0.95
    assert torch_int8.size_bytes() < fp32.size_bytes()
    assert onnx_int8.size_bytes() < Translator(model_dir, "onnx-fp32", **kw).size_bytes()


def test_int8_graphs_quantize_weights_not_attention(trained):
    import onnx

    from t2sql.compression.onnx_export import activation_matmuls, ensure_onnx

    model_dir, _ = trained
    fp32, int8 = ensure_onnx(model_dir, "fp32"), ensure_onnx(model_dir, "int8")
    name = "decoder_with_past_model.onnx"
    attention = activation_matmuls(fp32 / name)
    assert len(attention) == 2 * 2 * 2  # 2 layers x (self, cross) x (scores, values)
    ops = [n.op_type for n in onnx.load(str(int8 / name)).graph.node]
    assert ops.count("MatMul") == len(attention)  # attention stays fp32: no re-quantized cache per token
    # 2 layers x (q, k, v, o, cross q, cross o, wi, wo) + the output head, all int8.
    assert ops.count("MatMulInteger") == 2 * 8 + 1


def test_mixed_precision_backend_generates(trained):
    model_dir, examples = trained
    amp = Translator(model_dir, "torch-amp", num_threads=1, max_new_tokens=40, max_source_length=64)
    expected = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[hardware.amp_dtype(amp.device)]
    assert amp.info["precision"] == expected
    sqls = amp.translate(_pairs(examples[:4]))
    assert all(s.upper().startswith("SELECT") for s in sqls)


def test_onnx_artefacts_are_cached(trained):
    from t2sql.compression.onnx_export import MANIFEST, ensure_onnx

    model_dir, _ = trained
    first = ensure_onnx(model_dir, "fp32")
    stamp = (first / MANIFEST).stat().st_mtime_ns
    again = ensure_onnx(model_dir, "fp32")
    assert again == first and (again / MANIFEST).stat().st_mtime_ns == stamp


def _ids(tok, sql: str) -> list[int]:
    return tok(sql)["input_ids"]


def test_execution_guided_picks_first_runnable_candidate(trained, monkeypatch):
    model_dir, examples = trained
    tr = Translator(model_dir, "torch", num_threads=1, execution_guided=True, num_beams=3, max_new_tokens=8, max_source_length=64)
    bad_syntax, bad_column, good = "SELECT FROM WHERE", "SELECT nickname FROM actor", "SELECT count(*) FROM actor"
    monkeypatch.setattr(tr, "generate_ids", lambda sources, n, beams: [
        [_ids(tr.tokenizer, s) for s in (bad_syntax, bad_column, good)] for _ in sources])
    db_path = examples[0]["db_path"]
    context = examples[0]["context"]
    assert tr.translate([("How many actors are there?", context, db_path)]) == [good]
    # Without a database, an empty one built from the schema still rejects the unknown column.
    assert tr.translate([("How many actors are there?", context)]) == [good]
    assert tr.last_guided_stats["later_ran"] == 1 and tr.last_guided_stats["executions"] == 3
    assert tr.translate([("q", context)], num_candidates=3) == [[good, bad_syntax, bad_column]]
    # Nothing runs: the best beam is kept.
    monkeypatch.setattr(tr, "generate_ids", lambda sources, n, beams: [[_ids(tr.tokenizer, bad_syntax)] * 3
                                                                       for _ in sources])
    assert tr.translate([("q", context, db_path)]) == [bad_syntax]
    assert tr.last_guided_stats["none_ran"] == 1


def test_execution_guided_on_real_beams(trained):
    model_dir, examples = trained
    tr = Translator(model_dir, "torch", num_threads=1, execution_guided=True, num_beams=3, max_new_tokens=40, max_source_length=64)
    out = tr.translate([(e["question"], e["context"], e["db_path"]) for e in examples[:4]])
    assert len(out) == 4 and tr.last_guided_stats["questions"] == 4
    assert tr.last_guided_stats["first_ran"] + tr.last_guided_stats["later_ran"] >= 3


def test_load_by_run_id_and_translate_one(trained, tmp_path):
    from t2sql.registry import Registry

    model_dir, examples = trained
    reg = Registry(tmp_path / "runs")
    shutil.copytree(model_dir, reg.new_run_dir("run-1") / "model")
    reg.register("run-1", metrics={})
    tr = Translator.load("run:run-1", registry_root=reg.root, max_new_tokens=40, max_source_length=64, num_threads=1)
    assert tr.threads == 1 and torch.get_num_threads() == 1
    sql, ms = tr.translate_one(examples[0]["question"], examples[0]["context"])
    assert sql == examples[0]["answer"] and ms > 0


def test_bitnet_backend_serves_packed_export(trained, tmp_path):
    from t2sql.model_dir import load as load_model
    from t2sql.techniques import get_technique

    try:
        bitnet = get_technique("bitnet")
    except KeyError:
        pytest.skip("the bitnet technique is not registered")
    model_dir, examples = trained
    model, tok = load_model(model_dir)
    config = bitnet.Config(warmup_steps=0)
    model = bitnet.prepare(model, config)
    bitnet.export(model, config, tmp_path / "bitnet", tok)
    tr = Translator(tmp_path / "bitnet", "bitnet", num_threads=1, max_new_tokens=16, max_source_length=64)
    assert tr.info["precision"] == "bitnet"
    assert tr.size_bytes() < Translator(model_dir, "torch", num_threads=1, max_source_length=64).size_bytes()
    assert len(tr.translate(_pairs(examples[:2]))) == 2


def test_int8_isa_follows_cpu_flags():
    assert hardware.int8_isa(frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni"})) == "avx512_vnni"
    assert hardware.int8_isa(frozenset({"avx2", "avx512f", "avx512bw"})) == "avx512"
    assert hardware.int8_isa(frozenset({"avx2", "fma"})) == "avx2"
    assert hardware.int8_isa(frozenset({"fp", "asimd", "asimddp"})) == "arm64"
    assert hardware.cpu_supports_bf16(frozenset({"amx_bf16"})) and not hardware.cpu_supports_bf16(frozenset({"avx2"}))
    assert hardware.amp_dtype("cuda") == torch.float16


def test_execution_guided_prefers_a_candidate_that_answers(tmp_path):
    """On a real database a candidate returning rows beats an earlier one that runs but returns nothing."""
    from t2sql.inference.execution_guided import ExecutionChecker, GuidedStats, pick_runnable

    db = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE item (name text, price int); INSERT INTO item VALUES ('pen', 2), ('ink', 5);")
    conn.close()
    context = "CREATE TABLE item (name text, price int)"
    empty, null_row, answers = ("SELECT name FROM item WHERE price > 9", "SELECT max(price) FROM item WHERE price > 9",
                                "SELECT name FROM item WHERE price > 3")
    checker, stats = ExecutionChecker(), GuidedStats()
    try:
        assert pick_runnable(["SELECT nope FROM item", empty, null_row, answers], str(db), context, checker, stats) == 3
        assert stats.later_ran == 1 and stats.executions == 4
        # Nothing answers: the first candidate that runs.
        assert pick_runnable(["SELECT nope FROM item", empty, null_row], str(db), context, checker, stats) == 1
        # No database, only the schema (every table empty): the first that runs, no further execution.
        before = stats.executions
        assert pick_runnable([empty, answers], None, context, checker, stats) == 0
        assert stats.executions == before + 1
    finally:
        checker.close()
