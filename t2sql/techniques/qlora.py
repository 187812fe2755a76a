"""QLoRA: LoRA adapters over a base model frozen in 4-bit nf4 (double quantization) or 8-bit.

    techniques:
      - name: qlora
        params: {r: 8, alpha: 16, target_modules: [q, v]}
    train:
      quantization: nf4   # or int8

The model arrives in full precision; :func:`prepare` saves it to a temporary directory and reloads
it through ``transformers``' bitsandbytes integration, which quantizes every Linear layer except the
output head and the layers the architecture keeps in fp32 (T5's ``wo``). The export dequantizes the
frozen weights, adds the trained adapters and writes an fp32 model that every backend can serve.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from t2sql.hardware import pick_device
from t2sql.techniques import lora


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=8, ge=1, description="Rank of the adapters.")
    alpha: float = Field(default=16.0, gt=0, description="Scale: the update is (alpha / r) * B @ A.")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q", "v"], min_length=1,
        description="Names of the Linear layers that get adapters, or 'all-linear'.")
    blocksize: int = Field(default=64, description="4-bit quantization block size.")


def bnb_config(quantization: str, blocksize: int = 64):
    """The ``BitsAndBytesConfig`` for ``nf4`` (double quantization) or ``int8``.

    Raises:
        ValueError: an unknown quantization name.
    """
    from transformers import BitsAndBytesConfig

    if quantization == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.float32, bnb_4bit_blocksize=blocksize)
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"train.quantization: expected 'nf4' or 'int8', got {quantization!r}")


def keep_autograd_path(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for inference on AVX512-BF16 CPUs.

    On such CPUs the first no-grad forward of a ``Linear4bit`` (generate, evaluation) converts its
    weight into a packed layout whose matmul has no backward, and later training silently gets no
    gradient. Returns the number of layers changed.
    """
    import bitsandbytes as bnb

    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def quantize(model, quantization: str, device: torch.device | str = "cpu", blocksize: int = 64):
    """Reload a full-precision model with its Linear layers quantized by bitsandbytes.

    Args:
        model: a Hugging Face seq2seq model in full precision.
        quantization: ``nf4`` or ``int8``.
        device: where the quantized weights live.
        blocksize: 4-bit block size.

    Returns:
        The quantized model (a new object), in training mode.
    """
    from transformers import AutoModelForSeq2SeqLM

    with tempfile.TemporaryDirectory(prefix="t2sql-qlora-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        qmodel = AutoModelForSeq2SeqLM.from_pretrained(
            tmp, quantization_config=bnb_config(quantization, blocksize), dtype=torch.float32,
            device_map={"": str(device)})
    keep_autograd_path(qmodel)
    qmodel.train()
    return qmodel


def prepare(model, config: Config, train=None):
    """Quantize the frozen base model and add LoRA adapters in fp32.

    Args:
        model: a Hugging Face seq2seq model in full precision.
        config: adapter settings.
        train: the ``TrainConfig``; ``train.quantization`` picks nf4 or int8 and ``train.device``
            where the weights live (default nf4 on the best device).

    Returns:
        The peft model over the quantized base; only adapter weights are trainable.
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    quantization = getattr(train, "quantization", "nf4")
    device = pick_device(getattr(train, "device", "auto"))
    qmodel = quantize(model, quantization, device, config.blocksize)
    qmodel = prepare_model_for_kbit_training(qmodel, use_gradient_checkpointing=False)
    lcfg = lora.Config(r=config.r, alpha=config.alpha, dropout=config.dropout, target_modules=config.target_modules)
    return get_peft_model(qmodel, lora.lora_config(lcfg))


def _dequantize(layer) -> torch.Tensor:
    """The fp32 weight of a bitsandbytes (or plain) Linear layer."""
    from peft.utils.integrations import dequantize_bnb_weight, get_bnb_param_type

    weight = layer.weight
    if get_bnb_param_type(weight):
        return dequantize_bnb_weight(weight, getattr(layer, "state", None)).float()
    return weight.detach().float()


def dequantized_model(model):
    """An fp32 Hugging Face model equal to the quantized base plus the merged adapters.

    Args:
        model: the peft model returned by :func:`prepare` (not modified).

    Returns:
        A new full-precision model with no quantization and no adapters.

    Raises:
        RuntimeError: a weight of the new model has no counterpart in ``model``.
    """
    import bitsandbytes as bnb
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForSeq2SeqLM

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = inner.config.__class__.from_dict(inner.config.to_dict())
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    plain = AutoModelForSeq2SeqLM.from_config(config, dtype=torch.float32)
    expected = set(plain.state_dict())
    state: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in inner.named_modules():
            if isinstance(module, LoraLayer):
                base = module.get_base_layer()
                weight = _dequantize(base).cpu()
                for adapter in module.active_adapters:
                    if adapter in module.lora_A:
                        weight += module.get_delta_weight(adapter).float().cpu()
                state[f"{name}.weight"] = weight
                if getattr(base, "bias", None) is not None:
                    state[f"{name}.bias"] = base.bias.detach().float().cpu()
            elif isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) and ".base_layer" not in f".{name}":
                state[f"{name}.weight"] = _dequantize(module).cpu()
                if module.bias is not None:
                    state[f"{name}.bias"] = module.bias.detach().float().cpu()
        for name, tensor in list(inner.named_parameters()) + list(inner.named_buffers()):
            if name not in expected or name in state:
                continue
            state[name] = tensor.detach().float().cpu() if tensor.is_floating_point() else tensor.detach().cpu()
        missing, unexpected = plain.load_state_dict(state, strict=False)
        tied = {n for n, _ in plain.named_parameters(remove_duplicate=False)} - {n for n, _ in plain.named_parameters()}
        really_missing = [n for n in missing if n not in tied]
        if really_missing or unexpected:
            raise RuntimeError(f"dequantized weights do not fit the model: missing {really_missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        plain.tie_weights()
    plain.eval()
    return plain


def export(model, config: Config, out_dir: Path, tokenizer) -> None:
    """Write an fp32 model: frozen weights dequantized, adapters merged in.

    Args:
        model: the trained peft model (not modified).
        config: adapter settings.
        out_dir: destination directory.
        tokenizer: saved beside the model.
    """
    plain = dequantized_model(model)
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def summary(model) -> dict:
    """The quantization of the frozen base."""
    import bitsandbytes as bnb

    n4 = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    n8 = sum(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules())
    return {"quantized_layers": n4 + n8, "quantization": "nf4" if n4 else ("int8" if n8 else "none")}
