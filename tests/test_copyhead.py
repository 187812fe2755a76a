"""The copy head: a valid distribution, faster learning to copy, save/load, generation paths."""

from __future__ import annotations

import random

import pytest
import torch

from t2sql.config import ModelConfig
from t2sql.copyhead import T5CopyForConditionalGeneration
from t2sql.modeling import build_t5, load_model, train_tokenizer

from conftest import TINY_MODEL

SYMBOLS = [f"c{i}" for i in range(1, 121)]


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    texts = ["symbols: " + " ".join(rng.sample(SYMBOLS, 6)) for _ in range(400)] + ["pick c1"] * 20
    return train_tokenizer(texts, 600, extra_tokens=[f" {s}" for s in SYMBOLS])


def _model(tokenizer, copy_head: bool, seed: int = 0):
    torch.manual_seed(seed)
    return build_t5(ModelConfig(**{**TINY_MODEL, "copy_head": copy_head}), tokenizer)


def _copy_batch(tokenizer, rng: random.Random, n: int = 16):
    """Source: six random symbols; target: the third of them (a pointer a vocabulary must learn per symbol).

    Symbols are written after a word, as placeholders are in prompts, so each is one token.
    """
    sources, targets = [], []
    for _ in range(n):
        picked = rng.sample(SYMBOLS, 6)
        sources.append("symbols: " + " ".join(picked))
        targets.append("pick " + picked[2])
    enc = tokenizer(sources, return_tensors="pt", padding=True)
    labels = tokenizer(targets, return_tensors="pt", padding=True).input_ids
    labels[labels == tokenizer.pad_token_id] = -100
    return enc.input_ids, enc.attention_mask, labels


def test_copy_head_returns_log_probabilities(tokenizer):
    model = _model(tokenizer, True).eval()
    ids, mask, labels = _copy_batch(tokenizer, random.Random(1), 4)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    total = out.logits.exp().sum(-1)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-4)
    assert out.loss.item() > 0
    assert isinstance(model, T5CopyForConditionalGeneration)


def _train_accuracy(model, tokenizer, steps: int) -> float:
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(2)
    model.train()
    for _ in range(steps):
        ids, mask, labels = _copy_batch(tokenizer, rng)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ids, mask, labels = _copy_batch(tokenizer, random.Random(99), 64)
    with torch.no_grad():
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4)
    got = tokenizer.batch_decode(gen, skip_special_tokens=True)
    want = tokenizer.batch_decode(torch.where(labels == -100, tokenizer.pad_token_id, labels), skip_special_tokens=True)
    return sum(g.strip() == w.strip() for g, w in zip(got, want)) / len(want)


def test_copy_head_learns_to_point_where_the_vocabulary_cannot_yet(tokenizer):
    plain = _train_accuracy(_model(tokenizer, False), tokenizer, 150)
    copy = _train_accuracy(_model(tokenizer, True), tokenizer, 150)
    assert copy >= 0.8, (plain, copy)
    assert copy >= plain + 0.4, (plain, copy)


def test_saved_copy_model_loads_and_generates_alike_with_precomputed_encoder(tokenizer, tmp_path):
    model = _model(tokenizer, True).eval()
    with torch.no_grad():
        model.copy_gate.bias.fill_(-2.0)  # lean on copying so that a lost head would show
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = load_model(tmp_path)
    assert isinstance(loaded, T5CopyForConditionalGeneration)
    ids, mask, labels = _copy_batch(tokenizer, random.Random(3), 4)
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask, labels=labels).logits
        b = loaded(input_ids=ids, attention_mask=mask, labels=labels).logits
        assert torch.allclose(a, b, atol=1e-5)
        plain = loaded.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5)
        enc = loaded.get_encoder()(input_ids=ids, attention_mask=mask)
        given = loaded.generate(input_ids=ids, attention_mask=mask, encoder_outputs=enc, max_new_tokens=5)
        beams = loaded.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, num_beams=3)
    assert torch.equal(plain, given)
    assert beams.shape[0] == ids.shape[0]


def test_copy_model_serves_through_the_torch_backends(tokenizer, tmp_path):
    from t2sql.inference.backends import BackendOptions, GenerationSettings
    from t2sql.inference.backends.torch_backend import load

    model = _model(tokenizer, True).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    ids, mask, _ = _copy_batch(tokenizer, random.Random(4), 4)
    settings = GenerationSettings(max_new_tokens=5)
    outs = {}
    for precision in ("fp32", "int8"):
        backend, _ = load(tmp_path, precision=precision, options=BackendOptions(device="cpu", num_threads=1))
        outs[precision] = backend.generate(ids, mask, settings)
    with torch.no_grad():
        ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5)[:, 1:]
    assert torch.equal(outs["fp32"], ref)
    assert outs["int8"].shape[0] == ids.shape[0]


def test_onnx_export_refuses_a_copy_model_with_a_clear_error(tokenizer, tmp_path):
    pytest.importorskip("optimum.exporters.onnx")
    from t2sql.compression.onnx_export import export_onnx

    model = _model(tokenizer, True)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match="copy head"):
        export_onnx(tmp_path / "model", tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
