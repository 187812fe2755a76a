"""Loading and building seq2seq models and tokenizers.

``base_model`` may be a hub id (``t5-small``), a local directory, or a registered run
(``run:<id>`` / ``champion``). When the hub cannot be reached, a small T5 is built from a
``T5Config`` and its tokenizer is trained on the training data; from there on the code path is the
same as with a pretrained model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from t2sql import model_dir
from t2sql.model_dir import MODEL_LOCK

log = logging.getLogger(__name__)

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike[str] | None = None,
                    extra_tokens: Sequence[str] = ()):
    """Train a byte-level BPE tokenizer on ``texts``.

    Byte-level pre-tokenization splits punctuation and SQL operators from words and decodes back
    to the exact text (spaces included), and nothing is ever out of vocabulary; frequent keywords
    and identifiers (``SELECT``, ``count``, table names) become single tokens.

    Args:
        texts: training texts.
        vocab_size: size of the learnt vocabulary.
        out_dir: where to save the tokenizer (not saved when None).
        extra_tokens: strings always kept as one token, appended after the learnt vocabulary
            (e.g. the placeholders `` t1``, `` c7`` of :mod:`t2sql.linking`, leading space included).

    Returns:
        A ``PreTrainedTokenizerFast`` with ``<pad>``=0, ``</s>``=1, ``<unk>``=2 and an EOS appended.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK], min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if extra_tokens:
        from tokenizers import AddedToken

        tok.add_tokens([AddedToken(t, normalized=False) for t in extra_tokens])
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK,
        model_input_names=["input_ids", "attention_mask"], clean_up_tokenization_spaces=False, add_prefix_space=True,
    )
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers (honours ``HF_HUB_OFFLINE``)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def build_t5(cfg, tokenizer):
    """A randomly initialised T5 shaped by a ``ModelConfig``."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=cfg.d_model,
        d_ff=cfg.d_ff,
        d_kv=cfg.d_kv,
        num_layers=cfg.num_layers,
        num_decoder_layers=cfg.num_decoder_layers,
        num_heads=cfg.num_heads,
        dropout_rate=cfg.dropout_rate,
        feed_forward_proj="relu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with MODEL_LOCK:
        return T5ForConditionalGeneration(config)


def load_base(model_cfg, training_texts: Iterable[str] | None, registry_root: str | os.PathLike[str] | None = None,
              tokenizer_dir: str | os.PathLike[str] | None = None, extra_tokens: Sequence[str] = ()):
    """Load the configured base model, building a small T5 when the hub is unreachable.

    Args:
        model_cfg: the ``model`` section of the config.
        training_texts: texts to train a tokenizer on when a model must be built from scratch.
        registry_root: where ``run:<id>`` / ``champion`` references are looked up.
        tokenizer_dir: where a freshly trained tokenizer is saved.
        extra_tokens: strings a freshly trained tokenizer keeps whole (see :func:`train_tokenizer`).

    Returns:
        (model, tokenizer, origin) with origin one of ``local``, ``registry``, ``hub``, ``built``.

    Raises:
        RuntimeError: the model cannot be loaded and offline fallback is disabled.
    """
    ref = model_cfg.base_model
    if ref.startswith("run:") or ref == "champion":
        from t2sql.registry import Registry

        path = Registry(registry_root or "runs").resolve(ref)
        model, tok = model_dir.load(path)
        model.train()
        return model, tok, "registry"
    if Path(ref).expanduser().is_dir():
        model, tok = model_dir.load(Path(ref).expanduser())
        model.train()
        return model, tok, "local"
    try:
        model, tok = _load_from_hub(ref)
        model.train()
        return model, tok, "hub"
    except Exception as exc:  # no network, no cache, or an unknown id
        if not model_cfg.offline_fallback:
            raise RuntimeError(f"model.base_model {ref!r} could not be loaded: {exc}") from exc
        log.warning("model.base_model %r unavailable (%s); building a model from the model settings",
                    ref, type(exc).__name__)
    if training_texts is None:
        raise RuntimeError("a tokenizer must be trained but no training texts were given")
    tok = train_tokenizer(training_texts, model_cfg.vocab_size, tokenizer_dir, extra_tokens=extra_tokens)
    model = build_t5(model_cfg, tok)
    return model, tok, "built"


def _load_from_hub(ref: str):
    """A hub model from the local cache, else downloaded when the hub is reachable."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    if not hub_reachable():
        # Keep transformers and peft from retrying the network for every file they probe.
        import huggingface_hub.constants

        os.environ["HF_HUB_OFFLINE"] = "1"
        huggingface_hub.constants.HF_HUB_OFFLINE = True
        try:
            with MODEL_LOCK:
                return (AutoModelForSeq2SeqLM.from_pretrained(ref, local_files_only=True),
                        AutoTokenizer.from_pretrained(ref, local_files_only=True))
        except OSError:
            raise OSError(f"{ref!r} is not in the local cache and the hub cannot be reached") from None
    with MODEL_LOCK:
        return AutoModelForSeq2SeqLM.from_pretrained(ref), AutoTokenizer.from_pretrained(ref)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
