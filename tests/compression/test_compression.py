"""Pruning hits its targets, structured pruning shrinks and reloads, variants evaluate like their source.

    .venv/bin/pytest tests/compression/test_compression.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from t2sql.compression import pruning
from t2sql.compression.config import CompressionConfig
from t2sql.model_dir import load as load_model
from t2sql.compression.variants import evaluate_variant, prune_model
from t2sql.model_dir import FORMAT_FILE
from t2sql.modeling import count_parameters
from t2sql.prompt import PROMPT_FILE, PromptOptions, save_prompt_options

TEXTS = [f"question: how many rows in table_{i} where col_{i % 7} = {i} schema: CREATE TABLE table_{i} (col_{i % 7} int)"
         for i in range(200)] + [f"SELECT count(*) FROM table_{i} WHERE col_{i % 7} = {i}" for i in range(200)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny T5 (2+2 layers, d_ff 64) saved as a Hugging Face directory."""
    from transformers import T5Config, T5ForConditionalGeneration

    from t2sql.modeling import train_tokenizer

    torch.manual_seed(0)
    torch.set_num_threads(1)
    tok = train_tokenizer(TEXTS, 300)
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=2,
                   feed_forward_proj="relu", pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id)
    model = T5ForConditionalGeneration(cfg)
    out = tmp_path_factory.mktemp("tiny") / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    save_prompt_options(PromptOptions(), out)
    return out


def _logits(model, tok) -> torch.Tensor:
    enc = tok(TEXTS[:3], return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**enc, decoder_input_ids=torch.zeros((3, 4), dtype=torch.long)).logits


@pytest.mark.parametrize("target", [0.3, 0.5, 0.9])
def test_global_magnitude_pruning_hits_target(tiny, target):
    model, _ = load_model(tiny)
    embedding = model.shared.weight.detach().clone()
    achieved = pruning.global_magnitude_prune(model, target)
    assert abs(achieved - target) <= 0.005
    zeros, total = pruning.linear_sparsity(model)
    assert abs(zeros / total - target) <= 0.005
    assert torch.equal(model.shared.weight, embedding)  # embeddings / tied head untouched
    assert not any(hasattr(m, "weight_orig") for m in model.modules())
    # Global: layers are pruned unevenly, the smallest weights overall go first.
    per_layer = [float((m.weight == 0).float().mean()) for m in pruning.prunable_linears(model).values()]
    assert max(per_layer) - min(per_layer) > 0.01


def test_masks_kept_for_recovery_then_removed(tiny):
    model, _ = load_model(tiny)
    pruning.global_magnitude_prune(model, 0.5, keep_masks=True)
    assert any(hasattr(m, "weight_orig") for m in model.modules())
    layer = next(iter(pruning.prunable_linears(model).values()))
    with torch.no_grad():
        layer.weight_orig.add_(1.0)  # a training step moves every latent weight...
    pruning.remove_masks(model)
    zeros, total = pruning.linear_sparsity(model)
    assert abs(zeros / total - 0.5) <= 0.005  # ...but masked ones stay zero


def test_structured_uniform_shrinks_and_reloads_as_plain_model(tiny, tmp_path):
    from t2sql.inference import Translator

    model, tok = load_model(tiny)
    _, before = count_parameters(model)
    widths = pruning.prune_ffn(model, 0.5)
    assert set(widths.values()) == {32} and model.config.d_ff == 32
    _, after = count_parameters(model)
    # Each of the 4 feed-forward blocks loses 32 neurons x (d_model in + d_model out) weights.
    assert before - after == 4 * 32 * 2 * 32
    expected = _logits(model, tok)
    pruning.save_pruned(model, tok, tmp_path / "pruned")
    assert not (tmp_path / "pruned" / FORMAT_FILE).exists()
    reloaded, _ = load_model(tmp_path / "pruned")
    assert count_parameters(reloaded)[1] == after
    assert torch.allclose(_logits(reloaded, tok), expected, atol=1e-5)
    out = Translator(tmp_path / "pruned", "torch", num_threads=1, max_new_tokens=5).translate([("how many", "")])
    assert isinstance(out[0], str)


def test_structured_per_layer_widths_round_trip(tiny, tmp_path):
    from t2sql.inference import Translator

    model, tok = load_model(tiny)
    with torch.no_grad():  # make one layer clearly more important so widths differ
        model.encoder.block[0].layer[1].DenseReluDense.wi.weight.mul_(4.0)
    _, before = count_parameters(model)
    widths = pruning.prune_ffn(model, 0.5, mode="per_layer")
    assert len(set(widths.values())) > 1
    assert abs(sum(widths.values()) - 0.5 * 4 * 64) <= 4
    expected = _logits(model, tok)
    pruning.save_pruned(model, tok, tmp_path / "pruned")
    marker = json.loads((tmp_path / "pruned" / FORMAT_FILE).read_text())
    assert marker["technique"] == pruning.NAME and marker["d_ff"] == widths
    reloaded, _ = load_model(tmp_path / "pruned")
    assert pruning.ffn_widths(reloaded) == widths
    assert count_parameters(reloaded)[1] < before
    assert torch.allclose(_logits(reloaded, tok), expected, atol=1e-5)
    # ONNX export starts from the loaded model, so per-layer shapes export too.
    sources = [("how many rows in table_3", "CREATE TABLE table_3 (col_3 int)")]
    kw = dict(num_threads=1, max_new_tokens=6, min_new_tokens=6)
    assert Translator(tmp_path / "pruned", "onnx-fp32", **kw).generate_ids(["question: how many"]) == \
        Translator(tmp_path / "pruned", "torch-fp32", **kw).generate_ids(["question: how many"])
    assert len(Translator(tmp_path / "pruned", "torch", **kw).translate(sources)) == 1


def test_prune_model_step_records_and_reuses(tiny, tmp_path):
    first = prune_model(tiny, "magnitude", 0.4, tmp_path / "m40")
    assert abs(first["sparsity"] - 0.4) <= 0.005 and first["recovery"] is None
    assert json.loads((tmp_path / "m40" / "pruning.json").read_text())["sparsity"] == first["sparsity"]
    assert (tmp_path / "m40" / PROMPT_FILE).read_text() == (tiny / PROMPT_FILE).read_text()  # same input format
    stamp = (tmp_path / "m40" / "model.safetensors").stat().st_mtime_ns
    assert prune_model(tiny, "magnitude", 0.4, tmp_path / "m40") == first
    assert (tmp_path / "m40" / "model.safetensors").stat().st_mtime_ns == stamp  # not pruned again
    ffn = prune_model(tiny, "ffn", 0.25, tmp_path / "f25")
    assert ffn["params"] < ffn["source_params"] and ffn["ffn_widths"] == [16]
    # 3/4 of the feed-forward weights (40% of all block Linear weights here) are gone.
    assert ffn["sparsity"] == pytest.approx(0.75 * 4 * 2 * 64 * 32 / (4 * 2 * 64 * 32 + 6 * 4 * 32 * 32), abs=1e-4)
    with pytest.raises(ValueError, match="unknown pruning method"):
        prune_model(tiny, "random", 0.5, tmp_path / "x")


def test_recovery_fine_tune_trains_and_keeps_sparsity(tiny, tmp_path):
    from safetensors.torch import load_file

    records = [{"id": str(i), "question": f"how many rows in table_{i}", "context": f"CREATE TABLE table_{i} (a int)",
                "answer": f"SELECT count(*) FROM table_{i}", "db_id": None, "db_path": None, "source": "create_context"}
               for i in range(12)]
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in records))
    val.write_text("".join(json.dumps(r) + "\n" for r in records[:4]))
    plain = prune_model(tiny, "magnitude", 0.5, tmp_path / "plain")
    tuned = prune_model(tiny, "magnitude", 0.5, tmp_path / "tuned", train_path=str(train), val_path=str(val),
                        train_cfg={"batch_size": 4, "num_threads": 1}, recovery_epochs=1.0, recovery_max_minutes=1)
    assert tuned["recovery"]["global_step"] == 3
    assert abs(tuned["sparsity"] - 0.5) <= 0.005  # the masks held during training
    a, b = (load_file(str(d / "model.safetensors")) for d in (tmp_path / "plain", tmp_path / "tuned"))
    name = "encoder.block.0.layer.1.DenseReluDense.wi.weight"
    assert torch.equal(a[name] == 0, b[name] == 0) and not torch.equal(a[name], b[name])
    assert plain["recovery"] is None


def test_evaluate_variant_returns_report_row(tiny, tmp_path):
    test = tmp_path / "test.jsonl"
    records = [{"id": str(i), "question": f"how many rows in table_{i}", "context": f"CREATE TABLE table_{i} (col_{i} int)",
                "answer": f"SELECT count(*) FROM table_{i}", "db_id": None, "db_path": None, "source": "create_context"}
               for i in range(3)]
    test.write_text("".join(json.dumps(r) + "\n" for r in records))
    row = evaluate_variant(tiny, "torch-int8", test, {"batch_size": 2, "max_new_tokens": 8}, tmp_path / "eval",
                           variant="source/torch-int8", num_threads=1)
    for key in ("variant", "size_mb", "latency_ms_p50", "exact_match", "execution_accuracy", "sparsity"):
        assert key in row
    assert row["backend"] == "torch-int8" and row["n_examples"] == 3 and row["size_mb"] > 0
    assert (tmp_path / "eval" / "variant.json").is_file()


def test_compression_config_is_checked():
    cfg = CompressionConfig(backends=["torch", "onnx-int8"], sparsities=[0.5, 0.3, 0.5])
    assert cfg.backends == ["torch-fp32", "onnx-int8"] and cfg.sparsities == [0.3, 0.5]
    with pytest.raises(ValidationError, match="valid: torch-fp32"):
        CompressionConfig(pruned_backends=["tensorrt"])
    with pytest.raises(ValidationError, match="sparsity"):
        CompressionConfig(sparsities=[1.2])
    with pytest.raises(ValidationError):
        CompressionConfig(unknown_key=1)


def test_shipped_configs_compression_sections_load():
    root = Path(__file__).resolve().parents[2] / "configs"
    import yaml

    for path in sorted(root.glob("*.yaml")) if root.is_dir() else []:
        raw = yaml.safe_load(path.read_text()) or {}
        if "compression" in raw:
            CompressionConfig.model_validate(raw["compression"])


def test_torch_dynamic_int8_shrinks_weights(tiny):
    from t2sql.compression.quantization import quantize_torch_dynamic, state_dict_bytes

    model, tok = load_model(tiny)
    fp32 = state_dict_bytes(model)
    reference = _logits(model, tok)
    quantize_torch_dynamic(model)
    assert state_dict_bytes(model) < fp32
    assert torch.nn.functional.cosine_similarity(_logits(model, tok).flatten(), reference.flatten(), dim=0) > 0.99


@pytest.mark.slow
def test_compress_flow_produces_rows(tiny, tmp_path):
    from flows.compress import compress_model

    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"id": "0", "question": "how many rows in table_1", "context": "CREATE TABLE table_1 (a int)",
                                "answer": "SELECT count(*) FROM table_1", "db_id": None, "db_path": None,
                                "source": "create_context"}) + "\n")
    rows = compress_model(str(tiny), {"compression": {"enabled": True, "sparsities": [0.5], "structured_keep": [0.5],
                                                      "backends": ["torch", "onnx-int8"], "pruned_backends": ["onnx-int8"],
                                                      "execution_guided_beams": 2, "num_threads": 1}},
                          str(test), str(tmp_path / "out"))
    assert [r["variant"] for r in rows] == ["source/torch-fp32", "source/onnx-int8", "source/torch-fp32+guided2",
                                            "magnitude-0.50/onnx-int8", "ffn-keep-0.50/onnx-int8"]
    assert json.loads((tmp_path / "out" / "variants.json").read_text())[0]["variant"] == "source/torch-fp32"
