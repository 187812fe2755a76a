"""Inference backends, found by name.

| name | what runs | weights |
| --- | --- | --- |
| ``torch-fp32`` (alias ``torch``) | PyTorch, Hugging Face ``generate`` | fp32 |
| ``torch-amp`` | PyTorch under autocast: bf16 on CPUs with ``avx512_bf16``/``amx_bf16``, fp16 on a GPU, else fp32 | fp32 |
| ``torch-bf16`` | PyTorch under bf16 autocast whatever the hardware | fp32 |
| ``torch-int8`` | PyTorch dynamic INT8 (``torch.ao.quantization.quantize_dynamic``) of every Linear, CPU | int8 |
| ``onnx-fp32`` (alias ``onnx``) | ONNX Runtime: encoder, decoder, decoder-with-past | fp32 |
| ``onnx-int8`` | ONNX Runtime dynamic INT8, quantized for the CPU's instruction set | int8 |
| ``bitnet`` | a BitNet b1.58 export, served from its packed ternary weights | 2-bit |

Each backend module has the same shape: ``load(model_dir, *, precision, options) -> Backend``, where a
``Backend`` has ``generate(input_ids, attention_mask, settings) -> LongTensor`` (new tokens only, one
row per returned sequence), ``size_bytes()``, ``device`` and an ``info`` dict. Adding a backend is
adding a module (or a precision) and a line in ``BACKENDS``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # torch is imported by the backends themselves, not by name look-ups
    import torch

#: name -> (module, precision)
BACKENDS: dict[str, tuple[str, str]] = {
    "torch-fp32": ("t2sql.inference.backends.torch_backend", "fp32"),
    "torch-amp": ("t2sql.inference.backends.torch_backend", "amp"),
    "torch-bf16": ("t2sql.inference.backends.torch_backend", "bf16"),
    "torch-int8": ("t2sql.inference.backends.torch_backend", "int8"),
    "onnx-fp32": ("t2sql.inference.backends.onnx_backend", "fp32"),
    "onnx-int8": ("t2sql.inference.backends.onnx_backend", "int8"),
    "bitnet": ("t2sql.inference.backends.torch_backend", "bitnet"),
}
ALIASES: dict[str, str] = {"torch": "torch-fp32", "onnx": "onnx-fp32"}


def available_backends() -> list[str]:
    """Every valid backend name: the canonical ones, then the aliases."""
    return list(BACKENDS) + list(ALIASES)


def canonical_backend(name: str) -> str:
    """The canonical name of a backend (``torch`` -> ``torch-fp32``).

    Raises:
        ValueError: the name is unknown; the message lists the valid names.
    """
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in BACKENDS:
        raise ValueError(f"unknown inference backend {name!r}; valid: {', '.join(available_backends())}")
    return key


@dataclass
class GenerationSettings:
    """How tokens are chosen; the same for every backend.

    ``constraint`` (a :class:`t2sql.inference.constrained.SQLConstraint` for the batch's rows, or
    None) restricts each step to tokens that keep the output a valid query prefix.
    """

    num_beams: int = 1
    num_return_sequences: int = 1
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    constraint: Any = None


@dataclass
class BackendOptions:
    """Backend-independent loading options.

    Args:
        device: where the model runs (ONNX Runtime uses CUDA only when its CUDA provider is installed).
        num_threads: intra-op threads.
        onnx_dir: cache root for ONNX artefacts (default: ``<model_dir>/../onnx/<model_dir name>``).
        int8_isa: instruction set for ONNX INT8 (``auto`` reads the CPU flags).
        per_channel: ONNX INT8 per-channel weight scales.
        spinning: ONNX Runtime pool threads spin while idle (faster alone, much slower on shared cores).
    """

    device: "torch.device | str" = "cpu"
    num_threads: int = 1
    onnx_dir: str | os.PathLike[str] | None = None
    int8_isa: str = "auto"
    per_channel: bool = True
    spinning: bool = False


class Backend(Protocol):
    device: torch.device
    info: dict[str, Any]
    eos_token_id: int
    pad_token_id: int

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 settings: GenerationSettings) -> torch.Tensor: ...

    def size_bytes(self) -> int: ...


def load_backend(name: str, model_dir: str | os.PathLike[str], options: BackendOptions) -> tuple[Backend, Any]:
    """Load ``model_dir`` for the backend ``name``.

    Returns:
        (backend, tokenizer).

    Raises:
        ValueError: unknown backend name (valid ones listed), or a model the backend cannot serve.
    """
    canonical = canonical_backend(name)
    module_name, precision = BACKENDS[canonical]
    backend, tokenizer = importlib.import_module(module_name).load(model_dir, precision=precision, options=options)
    backend.info.setdefault("backend", canonical)
    return backend, tokenizer


def encoder_chunks(lengths: list[int], slack: float = 0.25) -> list[list[int]]:
    """Split a batch into groups of similar length for the encoder.

    The encoder's cost grows with padded length, so a batch whose inputs run from 90 to 430 tokens
    wastes most of its work on padding. Rows are taken shortest first and a group grows while its
    padded size stays within ``1 + slack`` of its real tokens; each group is encoded on its own,
    padded to its own longest row, and the outputs are laid back into one batch for the decoder
    (whose cross-attention masks the padding).

    Args:
        lengths: real tokens per row.
        slack: tolerated padding as a share of real tokens.

    Returns:
        Groups of row indices; together they hold every row once.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        n = lengths[i]
        if current and n * (len(current) + 1) > (1.0 + slack) * (real + n):
            groups.append(current)
            current, real = [], 0
        current.append(i)
        real += n
    if current:
        groups.append(current)
    return groups
