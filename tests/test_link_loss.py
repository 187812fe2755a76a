"""The auxiliary schema-linking loss: its labels, and what training with it does."""
import pytest
import torch

from t2sql.config import ModelConfig, TrainConfig
from t2sql.io import read_jsonl
from t2sql.modeling import build_t5, train_tokenizer
from t2sql.prompt import PromptOptions, build_source, build_target, question_context
from t2sql.training import CKPT_DIR, LinkObjective, collate, encode_file, latest_checkpoint, train_model

from conftest import TINY_MODEL

LINKED = PromptOptions(format="linked", placeholders=True, link_marks=True, value_pointers=True, infer_joins=True)


@pytest.fixture(scope="module")
def tokenizer(sample_splits):
    texts = []
    for r in read_jsonl(sample_splits["train"]):
        context = question_context(r["question"], r["context"], r.get("db_path"), LINKED)
        texts += [build_source(r["question"], context, LINKED), build_target(r["answer"], r["question"], context, LINKED)]
    return train_tokenizer(texts, 600, extra_tokens=LINKED.extra_tokens())


def cfg(**kw):
    base = dict(epochs=4, batch_size=8, learning_rate=3e-3, max_source_length=160, max_target_length=64,
                checkpoint_every_steps=4, val_max_examples=16, num_threads=1, early_stopping_patience=0,
                eval_every_steps=5, warmup_ratio=0.0, link_loss_weight=1.0)
    base.update(kw)
    return TrainConfig(**base)


def test_labels_mark_the_placeholders_the_target_names(tokenizer):
    link = LinkObjective(tokenizer, 8, 1.0, torch.device("cpu"))
    src = tokenizer(["question: w1 How w2 many w3 climbers t1 ? | t1 climber [E] : c1 name [P] , c2 country"])["input_ids"]
    tgt = tokenizer(["SELECT COUNT( c2) FROM t1"])["input_ids"]
    batch = {"input_ids": torch.tensor(src), "attention_mask": torch.ones(1, len(src[0]), dtype=torch.long),
             "labels": torch.tensor(tgt)}
    is_ph, named = link.labels(batch)
    tokens = tokenizer.convert_ids_to_tokens(src[0])
    assert [t.strip() for t, p in zip(tokens, is_ph[0]) if p] == ["w1", "w2", "w3", "t1", "t1", "c1", "c2"]
    assert [t.strip() for t, n in zip(tokens, named[0]) if n] == ["t1", "t1", "c2"]
    # Padding is never a placeholder, whatever its id.
    batch["attention_mask"][0, -3:] = 0
    assert not link.labels(batch)[0][0, -3:].any()
    # A zero head gives every placeholder probability 1/2: the loss is ln 2.
    torch.nn.init.zeros_(link.head.weight)
    torch.nn.init.zeros_(link.head.bias)
    hidden = torch.randn(1, len(src[0]), 8)
    assert link.loss(hidden, batch).item() == pytest.approx(0.6931, abs=1e-4)


def test_a_tokenizer_without_placeholders_is_refused(sample_splits):
    plain = train_tokenizer([r["question"] for r in read_jsonl(sample_splits["train"])], 300)
    with pytest.raises(ValueError, match="link_loss_weight"):
        LinkObjective(plain, 8, 1.0, torch.device("cpu"))


def test_training_with_the_link_loss_learns_the_links_and_resumes(sample_splits, tokenizer, tmp_path):
    data = sample_splits
    torch.manual_seed(0)
    model = build_t5(ModelConfig(**TINY_MODEL), tokenizer)
    link = LinkObjective(tokenizer, model.config.d_model, 1.0, torch.device("cpu"))
    enc = encode_file(data["train"], tokenizer, 160, 64, prompt=LINKED)
    batch = collate(enc, list(range(min(16, len(enc)))), tokenizer.pad_token_id, torch.device("cpu"))
    is_ph, named = link.labels(batch)
    assert is_ph.sum() > named.sum() > 0

    with pytest.raises(InterruptedError):
        train_model(model, tokenizer, data["train"], data["validation"], cfg(), tmp_path, progress=False,
                    stop_after_steps=6, prompt=LINKED)
    ckpt, _ = latest_checkpoint(tmp_path / CKPT_DIR)
    head = ckpt["link_head"]
    assert set(head) == {"weight", "bias"} and head["weight"].shape == (1, model.config.d_model)
    assert head["weight"].abs().sum() > 0
    # Resumed, the head's weights come back from the checkpoint, and training finishes.
    result = train_model(build_t5(ModelConfig(**TINY_MODEL), tokenizer), tokenizer, data["train"], data["validation"],
                         cfg(), tmp_path, progress=False, prompt=LINKED)
    assert result.resumed_from_step == 6 and result.global_step > 6
    # The learning curve records the link loss beside the sequence loss; it falls from ln 2.
    link_losses = [h["train_link_loss"] for h in result.history]
    assert all(0 < x < 0.69 for x in link_losses) and link_losses[-1] < link_losses[0]
    # The model keeps no trace of the head.
    assert not any("link" in n for n in model.state_dict())


def test_the_link_loss_changes_the_encoder_update(sample_splits, tokenizer, tmp_path):
    data = sample_splits
    models = []
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        m = build_t5(ModelConfig(**TINY_MODEL), tokenizer)
        train_model(m, tokenizer, data["train"], data["validation"], cfg(epochs=1, link_loss_weight=weight),
                    tmp_path / str(weight), progress=False, prompt=LINKED)
        models.append(m)
    enc = [(n, p) for n, p in models[0].named_parameters() if n.startswith("encoder.")]
    diff = sum((p - q).abs().sum().item() for (n, p), q in zip(enc, (dict(models[1].named_parameters())[n] for n, _ in enc)))
    assert diff > 1e-3
