"""PyTorch backends: fp32, mixed precision (autocast), dynamic INT8, and BitNet exports.

Generation is Hugging Face ``generate`` with the key/value cache on, under ``torch.inference_mode``.
The encoder runs first in groups of similar input length (:func:`encoder_chunks`) and ``generate``
receives its outputs, so a batch of mixed lengths does not pay for padding in the encoder.

Mixed precision runs the whole ``generate`` call in one autocast region. On a CPU the weights are
also stored in bf16: autocast would otherwise cast every fp32 weight again at each decoding step,
which doubled batch-1 latency here; ops autocast keeps in fp32 (softmax, norms) still run in fp32.
On a GPU the weights stay fp32 and autocast runs matrix products in fp16.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from t2sql.hardware import amp_dtype, cpu_supports_bf16
from t2sql.inference.backends import BackendOptions, GenerationSettings, encoder_chunks
from t2sql.model_dir import FORMAT_FILE, format_name
from t2sql.model_dir import load as load_model_dir

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "amp", "bf16", "int8", "bitnet")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin"))


class TorchBackend:
    """A PyTorch seq2seq model generating under a fixed precision.

    Args:
        model: the loaded model (eval mode, on ``device``).
        tokenizer: its tokenizer.
        device: where it runs.
        autocast: dtype of the autocast region, or None for none.
        size_bytes: bytes of the weights as served.
        info: facts for reports (precision, threads, ...).
        in_training: the model is being trained (validation decoding): generate under ``no_grad``
            rather than ``inference_mode``, whose tensors modules that cache state (BitNet, AdaLoRA)
            could not use in the next backward pass.
    """

    def __init__(self, model, tokenizer, device: torch.device, autocast: torch.dtype | None, size_bytes: int,
                 info: dict[str, Any], in_training: bool = False):
        self.model = model
        self.in_training = in_training
        self.device = device
        self.autocast = autocast
        self._size = size_bytes
        self.info = info
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id

    def _context(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast)

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        from transformers.modeling_outputs import BaseModelOutput

        encoder = self.model.get_encoder()
        lengths = attention_mask.sum(dim=1).tolist()
        groups = encoder_chunks(lengths)
        if len(groups) == 1:
            hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return BaseModelOutput(last_hidden_state=hidden)
        hidden = None
        for rows in groups:
            index = torch.tensor(rows, device=input_ids.device)
            width = max(lengths[i] for i in rows)
            part = encoder(input_ids=input_ids[index, :width], attention_mask=attention_mask[index, :width])
            part = part.last_hidden_state
            if hidden is None:
                hidden = part.new_zeros((input_ids.shape[0], input_ids.shape[1], part.shape[-1]))
            hidden[index, :width] = part
        return BaseModelOutput(last_hidden_state=hidden)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 settings: GenerationSettings) -> torch.Tensor:
        """New tokens for a padded batch: (batch * num_return_sequences, new_len), start token dropped."""
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        extra = {}
        if settings.constraint is not None:
            from transformers import LogitsProcessorList

            extra["logits_processor"] = LogitsProcessorList([settings.constraint.logits_processor(settings.num_beams)])
        grad_off = torch.no_grad() if self.in_training else torch.inference_mode()
        with grad_off, self._context():
            out = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask,
                encoder_outputs=self._encode(input_ids, attention_mask),
                max_new_tokens=settings.max_new_tokens, min_new_tokens=settings.min_new_tokens or None,
                num_beams=settings.num_beams, num_return_sequences=settings.num_return_sequences,
                do_sample=False, use_cache=True, early_stopping=settings.num_beams > 1, **extra,
            )
        return out[:, 1:].cpu()

    def size_bytes(self) -> int:
        return self._size


def load(model_dir: str | os.PathLike[str], *, precision: str, options: BackendOptions):
    """Load a model directory for PyTorch inference.

    Args:
        model_dir: a Hugging Face directory, a compression output, or (``bitnet``) a BitNet export.
        precision: ``fp32``, ``amp`` (bf16 autocast on CPUs with native bf16, fp16 autocast on a GPU, else
            fp32), ``bf16`` (bf16 autocast), ``int8`` (dynamic INT8 Linear layers, CPU only) or ``bitnet``.
            Under autocast on a CPU the weights are stored in bf16 too (see the module docstring).
        options: device and threads.

    Returns:
        (TorchBackend, tokenizer).

    Raises:
        ValueError: unknown precision, or ``bitnet`` asked of a directory that is not a BitNet export.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown PyTorch precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    model_dir = Path(model_dir)
    device = torch.device(options.device)
    if precision == "int8" and device.type != "cpu":
        log.warning("torch-int8 runs on the CPU only; ignoring device %s", device)
        device = torch.device("cpu")
    if precision == "bitnet":
        technique = format_name(model_dir)
        if technique != "bitnet":
            raise ValueError(f"backend 'bitnet' serves BitNet exports (a {model_dir}/{FORMAT_FILE} naming "
                             f"bitnet); {model_dir} holds {technique or 'a plain model'}")
    torch.set_num_threads(options.num_threads)
    model, tokenizer = load_model_dir(model_dir, device)
    autocast = None
    size = _dir_bytes(model_dir)
    if precision == "amp":
        dtype = amp_dtype(device)
        autocast = None if dtype == torch.float32 else dtype
    elif precision == "bf16":
        if device.type == "cpu" and not cpu_supports_bf16():
            log.warning("this CPU has no native bf16 (avx512_bf16/amx_bf16): torch-bf16 will be slow")
        autocast = torch.bfloat16
    if autocast is not None and device.type == "cpu":
        from t2sql.compression.quantization import state_dict_bytes

        model = model.to(autocast)
        size = state_dict_bytes(model)
    elif precision == "int8":
        from t2sql.compression.quantization import quantize_torch_dynamic, state_dict_bytes

        model = quantize_torch_dynamic(model)
        size = state_dict_bytes(model)
    info = {"engine": "torch", "precision": precision if precision != "amp" else
            {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast],
            "device": str(device), "threads": torch.get_num_threads()}
    return TorchBackend(model, tokenizer, device, autocast, size, info), tokenizer
