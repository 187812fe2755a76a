import pytest
import torch

from t2sql.config import ModelConfig, TrainConfig
from t2sql.io import read_jsonl
from t2sql.modeling import build_t5, train_tokenizer
from t2sql.prompt import build_source
from t2sql.training import (BEST_FILE, CKPT_DIR, RESULT_FILE, collate, encode_file, latest_checkpoint,
                            length_grouped_batches, lr_factor, param_groups, train_model,
                            validation_loss)

from conftest import TINY_MODEL


@pytest.fixture(scope="module")
def data(sample_splits):
    return sample_splits


@pytest.fixture(scope="module")
def tokenizer(data):
    texts = []
    for r in read_jsonl(data["train"]):
        texts += [build_source(r["question"], r["context"]), r["answer"]]
    return train_tokenizer(texts, 600)


def fresh_model(tok):
    torch.manual_seed(0)
    return build_t5(ModelConfig(**TINY_MODEL), tok)


def cfg(**kw):
    base = dict(epochs=1, batch_size=8, learning_rate=3e-3, max_source_length=96, max_target_length=48,
                checkpoint_every_steps=4, val_max_examples=16, num_threads=1, early_stopping_patience=0,
                eval_every_steps=5, warmup_ratio=0.0)
    base.update(kw)
    return TrainConfig(**base)


def test_tokenizer_keeps_sql_and_round_trips(tokenizer):
    sql = "SELECT count(*) FROM club WHERE age > 56"
    ids = tokenizer(sql)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == sql
    assert "ĠFROM" in tokenizer.tokenize(sql) and "ĠSELECT" in tokenizer.tokenize(sql)
    assert "token_type_ids" not in tokenizer(sql)


def test_length_grouping_cuts_padding(data, tokenizer):
    enc = encode_file(data["train"], tokenizer, 1024, 128)
    lengths = [len(s) for s in enc.sources]
    grouped = length_grouped_batches(lengths, 8, seed=0)
    assert sorted(i for b in grouped for i in b) == list(range(len(lengths)))
    pad = lambda batches: sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    import random

    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)
    naive = [order[i:i + 8] for i in range(0, len(order), 8)]
    assert pad(grouped) < 0.5 * pad(naive)
    budget = length_grouped_batches(lengths, 8, seed=0, max_tokens=3000)
    assert all(len(b) * max(lengths[i] for i in b) <= 3000 or len(b) == 1 for b in budget)
    batch = collate(enc, grouped[0], tokenizer.pad_token_id, torch.device("cpu"))
    assert batch["input_ids"].shape[1] == max(lengths[i] for i in grouped[0])
    assert (batch["labels"] == -100).any() or batch["labels"].shape[0] == 1


def test_lr_schedule_shapes():
    assert lr_factor(0.0, "cosine", 0.1) == pytest.approx(0.01)
    assert lr_factor(0.1, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(1.0, "cosine", 0.1) == pytest.approx(0.0, abs=1e-9)
    assert lr_factor(0.55, "linear", 0.1) == pytest.approx(0.5)
    assert lr_factor(0.9, "constant", 0.0) == 1.0


def test_training_lowers_validation_loss_and_keeps_best(data, tokenizer, tmp_path):
    model = fresh_model(tokenizer)
    val = encode_file(data["validation"], tokenizer, 96, 48, limit=16)
    initial = validation_loss(model, val, 16, tokenizer.pad_token_id, torch.device("cpu"), "fp32")
    result = train_model(model, tokenizer, data["train"], data["validation"], cfg(epochs=3, learning_rate=1e-2), tmp_path,
                         progress=False)
    losses = [h["val_loss"] for h in result.history]
    assert min(losses) < initial - 0.3
    assert result.history[-1]["train_loss"] < initial - 1.5
    assert result.best_val_loss == pytest.approx(min(losses))
    assert result.tokens_per_s > 0 and result.trainable_params == result.total_params > 0
    assert (tmp_path / BEST_FILE).is_file() and (tmp_path / RESULT_FILE).is_file()
    # A finished run is returned as is, with the best weights loaded.
    again = train_model(fresh_model(tokenizer), tokenizer, data["train"], data["validation"],
                        cfg(epochs=3, learning_rate=1e-2), tmp_path, progress=False)
    assert again.global_step == result.global_step


def test_early_stopping_stops_on_flat_validation(data, tokenizer, tmp_path):
    model = fresh_model(tokenizer)
    result = train_model(model, tokenizer, data["train"], data["validation"],
                         cfg(epochs=50, learning_rate=1e-9, early_stopping_patience=2, eval_every_steps=2,
                             warmup_ratio=0.0, lr_schedule="constant"), tmp_path, progress=False)
    assert result.stopped == "early stopping"
    assert result.global_step < 20


def test_resume_matches_uninterrupted_run(data, tokenizer, tmp_path):
    c = cfg(epochs=2)
    full = fresh_model(tokenizer)
    r_full = train_model(full, tokenizer, data["train"], data["validation"], c, tmp_path / "a", progress=False)

    part = fresh_model(tokenizer)
    with pytest.raises(InterruptedError):
        train_model(part, tokenizer, data["train"], data["validation"], c, tmp_path / "b", progress=False,
                    stop_after_steps=6)
    resumed = fresh_model(tokenizer)
    r_res = train_model(resumed, tokenizer, data["train"], data["validation"], c, tmp_path / "b", progress=False)
    assert r_res.resumed_from_step == 6
    assert r_res.global_step == r_full.global_step
    for (n, p), (_, q) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.allclose(p, q, atol=1e-5), n


def test_corrupted_checkpoint_is_skipped(data, tokenizer, tmp_path):
    c = cfg(epochs=2, checkpoint_every_steps=3)
    with pytest.raises(InterruptedError):
        train_model(fresh_model(tokenizer), tokenizer, data["train"], data["validation"], c, tmp_path,
                    progress=False, stop_after_steps=7)
    ckpts = sorted((tmp_path / CKPT_DIR).glob("step-*.pt"))
    assert [p.name for p in ckpts] == ["step-00000006.pt", "step-00000007.pt"]
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:100])  # torn write
    state, skipped = latest_checkpoint(tmp_path / CKPT_DIR)
    assert state["state"]["step"] == 6
    assert "checksum mismatch" in skipped[0]
    result = train_model(fresh_model(tokenizer), tokenizer, data["train"], data["validation"], c, tmp_path,
                         progress=False)
    assert result.resumed_from_step == 6


def test_example_weights_change_the_update(data, tokenizer, tmp_path):
    ids = [r["id"] for r in read_jsonl(data["train"])]
    c = cfg(epochs=1)
    a = fresh_model(tokenizer)
    train_model(a, tokenizer, data["train"], data["validation"], c, tmp_path / "a", progress=False)
    b = fresh_model(tokenizer)
    train_model(b, tokenizer, data["train"], data["validation"], c, tmp_path / "b", progress=False,
                example_weights={i: (5.0 if k % 2 else 0.2) for k, i in enumerate(ids)})
    diff = sum((p - q).abs().sum().item() for p, q in zip(a.parameters(), b.parameters()))
    assert diff > 1e-3


def test_weight_decay_applies_to_matrices_only(tokenizer):
    model = fresh_model(tokenizer)
    groups = param_groups(model, 0.01)
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim < 2 for p in groups[1]["params"])
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])
