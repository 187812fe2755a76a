"""BitNet b1.58: quantization-aware training with ternary weights and 8-bit activations.

    techniques:
      - name: bitnet
        params: {warmup_fraction: 0.2}

A :class:`BitLinear` replaces T5's attention (``q``, ``k``, ``v``, ``o``) and feed-forward (``wi``,
``wi_0``, ``wi_1``, ``wo``) Linear layers. Its forward (Ma et al., 2024, "The Era of 1-bit LLMs"):

- the input is RMS-normalised (a learnt gain per feature), then quantized to 8 bits per token with
  absmax scaling: ``x~ = round(x * 127 / max|x|).clamp(-128, 127) * max|x| / 127``;
- the weight is quantized with absmean scaling: ``W~ = RoundClip(W / s, -1, 1) * s`` with
  ``s = mean|W|``, so every weight is -s, 0 or +s;
- gradients pass both quantizers unchanged (straight-through estimator) to the full-precision
  latent weights, which the optimizer updates.

Starting from trained weights, switching quantization on at once destroys what the model knew, so
it ramps in: ``lambda = min(step / warmup, 1)`` blends the full-precision and quantized inputs and
weights; ``lambda = 1`` is the pure BitNet forward. The export stores each ternary weight in 2 bits
(4 per byte) with its scale and norm gain; :func:`load` rebuilds layers whose forward is exactly the
training-time forward at ``lambda = 1``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from t2sql import model_dir
from t2sql.summary import ReportSection, ReportTable

NAME = "bitnet"
WEIGHTS_FILE = "bitnet.safetensors"
FORMAT_VERSION = 1


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: list[str] = Field(
        default_factory=lambda: ["q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"], min_length=1,
        description="Names of the Linear layers replaced by BitLinear (T5 attention and feed-forward).")
    warmup_steps: int | None = Field(
        default=None, ge=0,
        description="Steps over which quantization ramps in; 0: quantized from the first step (right for a model "
                    "trained from scratch); None: warmup_fraction of the run.")
    warmup_fraction: float = Field(default=0.2, ge=0, le=1, description="Ramp length as a share of the run.")
    eps: float = Field(default=1e-5, gt=0, description="Floor of the weight scale, activation range and RMS.")


# --------------------------------------------------------------------------------------------
# Quantizers, shared by training and serving so both compute the same numbers
# --------------------------------------------------------------------------------------------
def rms_norm(x: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / rms(x) * gain`` over the last dimension."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * gain


def quantize_activations(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-token 8-bit absmax fake quantization: at most 256 levels per token, returned dequantized."""
    scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=eps)
    return (x * scale).round().clamp(-128, 127) / scale


def ternarize(weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmean ternary quantization: (values in {-1, 0, 1}, scale ``mean|W|``) with W ~ values * scale."""
    scale = weight.abs().mean().clamp(min=eps)
    ternary = (weight / scale).round().clamp(-1, 1) + 0.0  # + 0.0 turns -0.0 into 0.0
    return ternary, scale


def straight_through(x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Exactly ``quantized`` in the forward pass; the gradient flows to ``x`` unchanged."""
    return quantized.detach() + (x - x.detach())


def pack_ternary(ternary: torch.Tensor) -> torch.Tensor:
    """Pack values in {-1, 0, 1} into uint8, four 2-bit codes per byte (first value in the low bits)."""
    codes = (ternary.reshape(-1).round().to(torch.int16) + 1).to(torch.uint8)
    pad = (-codes.numel()) % 4
    if pad:
        codes = torch.cat([codes, torch.ones(pad, dtype=torch.uint8, device=codes.device)])
    codes = codes.view(-1, 4)
    return codes[:, 0] | (codes[:, 1] << 2) | (codes[:, 2] << 4) | (codes[:, 3] << 6)


def unpack_ternary(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_ternary`: float32 values in {-1, 0, 1} of the given shape."""
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=packed.device)
    codes = (packed.view(-1, 1) >> shifts) & 3
    n = math.prod(shape)
    return (codes.reshape(-1)[:n].to(torch.float32) - 1.0).reshape(shape)


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------
class BitLinear(nn.Module):
    """A Linear layer trained with ternary weights and 8-bit activations (see the module docstring).

    Args:
        in_features, out_features: shape of the layer.
        bias: whether the layer has a bias.
        eps: floor of scales and RMS.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, eps: float = 1e-5):
        super().__init__()
        self.in_features, self.out_features, self.eps = in_features, out_features, eps
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.norm_weight = nn.Parameter(torch.ones(in_features))
        self.ramp = 1.0  # lambda: 0 = full precision, 1 = fully quantized
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    @classmethod
    def from_linear(cls, linear: nn.Linear, eps: float) -> "BitLinear":
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, eps)
        layer.to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def quantized_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(ternary values, scale) of the current latent weight."""
        return ternarize(self.weight.detach(), self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = rms_norm(x, self.norm_weight, self.eps)
        # The quantizers run outside autograd: the straight-through estimator routes gradients.
        x_q = straight_through(normed, quantize_activations(normed.detach(), self.eps))
        ternary, scale = ternarize(self.weight.detach(), self.eps)
        w_q = straight_through(self.weight, ternary * scale)
        lam = self.ramp
        if lam < 1.0:
            x_q = (1.0 - lam) * x + lam * x_q
            w_q = (1.0 - lam) * self.weight + lam * w_q
        return F.linear(x_q, w_q, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, ramp={self.ramp}"


class PackedBitLinear(nn.Module):
    """The served form of a :class:`BitLinear`: 2-bit packed ternary weight, its scale and norm gain.

    ``weight`` (the dequantized ternary matrix) is rebuilt from ``packed`` by :meth:`unpack` and is
    not saved.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, eps: float = 1e-5):
        super().__init__()
        self.in_features, self.out_features, self.eps = in_features, out_features, eps
        self.register_buffer("packed", torch.zeros((in_features * out_features + 3) // 4, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("weight", torch.zeros(out_features, in_features), persistent=False)
        self.norm_weight = nn.Parameter(torch.ones(in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def unpack(self) -> None:
        """Rebuild ``weight`` from the packed values and the scale."""
        ternary = unpack_ternary(self.packed, (self.out_features, self.in_features)).to(self.scale.device)
        self.weight = (ternary * self.scale).to(self.norm_weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = rms_norm(x, self.norm_weight, self.eps)
        return F.linear(quantize_activations(normed, self.eps), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, bits=2"


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def bit_layers(model: nn.Module) -> dict[str, BitLinear]:
    """The model's BitLinear layers by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, BitLinear)}


def set_ramp(model: nn.Module, value: float) -> None:
    """Set lambda on every BitLinear (clipped to [0, 1])."""
    value = min(max(float(value), 0.0), 1.0)
    for layer in bit_layers(model).values():
        layer.ramp = value


# --------------------------------------------------------------------------------------------
# Technique interface
# --------------------------------------------------------------------------------------------
def prepare(model, config: Config, train=None):
    """Replace the target Linear layers by BitLinear layers holding the same latent weights.

    Args:
        model: a Hugging Face seq2seq model.
        config: BitNet settings.
        train: the ``TrainConfig`` (unused).

    Returns:
        The same model object, every parameter trainable, lambda at 0 when a ramp is configured.

    Raises:
        ValueError: no Linear layer matches ``targets``.
    """
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and n.rpartition(".")[2] in set(config.targets)]
    if not names:
        raise ValueError(f"bitnet targets {config.targets} match no Linear layer of {type(model).__name__}")
    for name in names:
        _replace(model, name, BitLinear.from_linear(model.get_submodule(name), config.eps))
    for p in model.parameters():
        p.requires_grad_(True)
    model.t2sql_bitnet = config
    ramps = config.warmup_steps != 0 and (config.warmup_steps is not None or config.warmup_fraction > 0)
    set_ramp(model, 0.0 if ramps else 1.0)
    return model


def ramp_value(config: Config, step: int, total_steps: int) -> float:
    """lambda after ``step`` optimizer steps; the ramp always ends by the last step of the run."""
    warmup = config.warmup_steps if config.warmup_steps is not None else math.ceil(config.warmup_fraction * total_steps)
    warmup = min(warmup, max(total_steps, 1))
    return 1.0 if warmup <= 0 else min(step / warmup, 1.0)


def on_optimizer_step(model, step: int, total_steps: int) -> None:
    """Advance the quantization ramp."""
    set_ramp(model, ramp_value(model.t2sql_bitnet, step, total_steps))


def checkpoint_ready(model) -> bool:
    """True once quantization is fully on, i.e. the model computes what its export will."""
    return all(layer.ramp >= 1.0 for layer in bit_layers(model).values())


def dump_state(model) -> dict[str, Any]:
    layers = bit_layers(model)
    return {"ramp": min((m.ramp for m in layers.values()), default=1.0)}


def load_state(model, state: dict[str, Any]) -> None:
    set_ramp(model, state["ramp"])


def summary(model) -> dict[str, Any]:
    """Layers converted, lambda, and the share of weights quantized to zero."""
    layers = bit_layers(model)
    zeros = total = 0
    for layer in layers.values():
        ternary, _ = layer.quantized_weight()
        zeros += int((ternary == 0).sum())
        total += ternary.numel()
    return {"bitlinear_layers": len(layers), "ramp": min((m.ramp for m in layers.values()), default=1.0),
            "zero_weight_fraction": round(zeros / max(total, 1), 4), "weight_bits": 2}


def report_sections(facts: dict[str, Any]) -> list[ReportSection]:
    """How the ternary weights came out, for the run report."""
    if not facts.get("bitlinear_layers"):
        return []
    table = ReportTable(columns=["BitLinear layers", "quantization ramp", "weights at zero", "bits per weight"],
                        rows=[[facts["bitlinear_layers"], facts.get("ramp"), facts.get("zero_weight_fraction"),
                               facts.get("weight_bits")]], fractions=["weights at zero"])
    return [ReportSection(title="BitNet b1.58 weights", source="technique:bitnet", tables=[table])]


def export(model, config: Config, out_dir: Path, tokenizer) -> None:
    """Write the packed model: config, ``bitnet.safetensors``, tokenizer and the technique marker.

    BitLinear weights are stored as 2-bit codes with their scale and norm gain; every other tensor
    as it is. Tied tensors (T5's shared embedding and output head) are stored once.

    Args:
        model: the trained model from :func:`prepare` (not modified).
        config: BitNet settings.
        out_dir: destination directory.
        tokenizer: saved beside the model.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = bit_layers(model)
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, layer in layers.items():
            ternary, scale = layer.quantized_weight()
            tensors[f"{name}.packed"] = pack_ternary(ternary).cpu()
            tensors[f"{name}.scale"] = scale.float().cpu()
            tensors[f"{name}.norm_weight"] = layer.norm_weight.detach().cpu()
            if layer.bias is not None:
                tensors[f"{name}.bias"] = layer.bias.detach().cpu()
        persistent = set(model.state_dict())
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            owner = name.rpartition(".")[0]
            if owner in layers or name not in persistent:
                continue
            tensors[name] = t.detach().cpu().contiguous()
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    model.config.save_pretrained(out_dir)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    model_dir.write_format(out_dir, NAME, format_version=FORMAT_VERSION, weights=WEIGHTS_FILE, eps=config.eps,
                           layers={n: {"in_features": m.in_features, "out_features": m.out_features,
                                       "bias": m.bias is not None} for n, m in layers.items()})


def load(path: str | Path):
    """Rebuild a model exported by :func:`export`.

    Args:
        path: the export directory.

    Returns:
        (model in eval mode, tokenizer); its logits equal those of the trained model at lambda = 1.

    Raises:
        ValueError: the marker is from another format version, or the weights do not fit the model.
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    path = Path(path)
    marker = model_dir.read_format(path) or {}
    if marker.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path / model_dir.FORMAT_FILE}: format_version {marker.get('format_version')!r} is not "
                         f"{FORMAT_VERSION}")
    config = AutoConfig.from_pretrained(path)
    model = AutoModelForSeq2SeqLM.from_config(config)
    eps = float(marker["eps"])
    for name, shape in marker["layers"].items():
        _replace(model, name, PackedBitLinear(shape["in_features"], shape["out_features"], shape["bias"], eps))
    tensors = load_file(str(path / marker.get("weights", WEIGHTS_FILE)))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    really_missing = [n for n in missing if n not in tied]
    if really_missing or unexpected:
        raise ValueError(f"{path / WEIGHTS_FILE}: weights do not fit the model: missing {really_missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.tie_weights()
    for module in model.modules():
        if isinstance(module, PackedBitLinear):
            module.unpack()
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)
