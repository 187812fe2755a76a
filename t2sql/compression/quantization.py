"""PyTorch dynamic INT8: Linear weights stored as int8, activations quantized per batch.

``torch.ao.quantization.quantize_dynamic`` works on CPU (kernels chosen by the ``x86`` engine on
Intel/AMD, ``qnnpack`` on ARM) but its result cannot be written with ``save_pretrained``: the
quantized model is rebuilt from the fp32 directory at load time, which takes about a second.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from t2sql.hardware import is_arm64


def quantize_torch_dynamic(model: nn.Module) -> nn.Module:
    """Quantize every ``nn.Linear`` of a CPU model to dynamic INT8, in place.

    Args:
        model: a float model on the CPU.

    Returns:
        The quantized model (the same object), in eval mode.

    Raises:
        ValueError: the model is not on the CPU.
    """
    from torch.ao.quantization import quantize_dynamic

    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"PyTorch dynamic INT8 runs on the CPU only; the model is on {device}")
    engines = torch.backends.quantized.supported_engines
    preferred = "qnnpack" if is_arm64() else "x86"
    if preferred in engines:
        torch.backends.quantized.engine = preferred
    model.float().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the in-memory weight size of any model, quantized or not."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()
