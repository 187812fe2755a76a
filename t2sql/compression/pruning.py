"""Pruning: global magnitude (unstructured) and feed-forward neurons (structured).

Unstructured pruning zeroes the smallest weights across every encoder/decoder Linear layer at once
(``torch.nn.utils.prune.global_unstructured``), so layers that matter less lose more. The matrices
keep their shapes: the model is no faster or smaller on disk, only sparser.

Structured pruning removes whole feed-forward neurons: row ``j`` of ``wi`` (``wi_0``/``wi_1`` in
gated variants) and column ``j`` of ``wo`` go together, so every FFN matrix really shrinks and its
compute with it. A neuron's importance is the product of the L2 norms of its input and output
weights. ``uniform`` keeps the same number in every layer (the model is a plain Hugging Face T5 with
a smaller ``d_ff``); ``per_layer`` ranks neurons across layers and writes the per-layer widths to
``t2sql_technique.json`` (``{"technique": "pruned_ffn", "d_ff": {...}}``), which :func:`load` reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from t2sql import model_dir

NAME = "pruned_ffn"
FORMAT_VERSION = 1
_FFN_IN = ("wi", "wi_0", "wi_1")


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every Linear inside the encoder and decoder blocks (attention and feed-forward).

    The shared embedding and the output head (tied to it in T5) are left out: they are one matrix
    that every token goes through twice.
    """
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and (".block." in f".{name}" or name.startswith("block."))}


def linear_sparsity(model: nn.Module) -> tuple[int, int]:
    """(zero weights, all weights) over :func:`prunable_linears`."""
    zeros = total = 0
    for m in prunable_linears(model).values():
        w = m.weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros, total


def global_magnitude_prune(model: nn.Module, sparsity: float, *, keep_masks: bool = False) -> float:
    """Zero the ``sparsity`` share of smallest-magnitude weights across all prunable Linear layers.

    Args:
        model: a seq2seq model, pruned in place.
        sparsity: target share of zeros, in (0, 1).
        keep_masks: leave the pruning re-parametrisation in place (``weight = weight_orig * mask``) so
            that a recovery fine-tune keeps pruned weights at zero; call :func:`remove_masks` after.

    Returns:
        The achieved share of zeros over the prunable weights.

    Raises:
        ValueError: sparsity outside (0, 1) or no prunable layer.
    """
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be in (0, 1), got {sparsity}")
    layers = prunable_linears(model)
    if not layers:
        raise ValueError("model has no Linear layers inside encoder/decoder blocks to prune")
    prune.global_unstructured([(m, "weight") for m in layers.values()], pruning_method=prune.L1Unstructured,
                              amount=float(sparsity))
    if not keep_masks:
        remove_masks(model)
    zeros, total = linear_sparsity(model)
    return zeros / total


def remove_masks(model: nn.Module) -> None:
    """Make pruning permanent: fold every ``weight_orig * weight_mask`` into a plain ``weight``."""
    for m in model.modules():
        if prune.is_pruned(m) and hasattr(m, "weight_mask"):
            prune.remove(m, "weight")


# --------------------------------------------------------------------------------------------
# Structured: feed-forward neurons
# --------------------------------------------------------------------------------------------
def ffn_modules(model: nn.Module) -> dict[str, nn.Module]:
    """T5 feed-forward modules (``DenseReluDense``) by name: each has ``wo`` and ``wi`` or ``wi_0``/``wi_1``."""
    return {name: m for name, m in model.named_modules()
            if isinstance(getattr(m, "wo", None), nn.Linear) and any(isinstance(getattr(m, a, None), nn.Linear)
                                                                    for a in _FFN_IN)}


def _inputs(ffn: nn.Module) -> list[str]:
    return [a for a in _FFN_IN if isinstance(getattr(ffn, a, None), nn.Linear)]


def neuron_importance(ffn: nn.Module) -> torch.Tensor:
    """Importance of each hidden neuron of a feed-forward module: product of its weight norms. Shape (d_ff,)."""
    with torch.no_grad():
        score = ffn.wo.weight.float().norm(dim=0)
        for a in _inputs(ffn):
            score = score * getattr(ffn, a).weight.float().norm(dim=1)
    return score


def _shrink_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    weight = linear.weight.detach().index_select(dim, index.to(linear.weight.device)).clone()
    out_f, in_f = weight.shape
    new = nn.Linear(in_f, out_f, bias=linear.bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            bias = linear.bias.detach()
            new.bias.copy_(bias.index_select(0, index.to(bias.device)) if dim == 0 else bias)
    new.weight.requires_grad_(linear.weight.requires_grad)
    return new


def shrink_ffn(ffn: nn.Module, keep_index: torch.Tensor) -> None:
    """Keep only the neurons in ``keep_index`` (sorted) of one feed-forward module, in place."""
    keep_index = torch.sort(keep_index).values
    for a in _inputs(ffn):
        setattr(ffn, a, _shrink_linear(getattr(ffn, a), keep_index, 0))
    ffn.wo = _shrink_linear(ffn.wo, keep_index, 1)


def ffn_widths(model: nn.Module) -> dict[str, int]:
    """Hidden width of every feed-forward module."""
    return {name: m.wo.in_features for name, m in ffn_modules(model).items()}


def prune_ffn(model: nn.Module, keep: float, mode: str = "uniform", min_keep: int = 8) -> dict[str, int]:
    """Remove the least important feed-forward neurons, in place.

    Args:
        model: a T5-like seq2seq model.
        keep: share of neurons kept, in (0, 1).
        mode: ``uniform`` (each layer keeps ``round(keep * d_ff)`` of its own best neurons; ``config.d_ff``
            is updated so the model saves and loads as a plain Hugging Face model) or ``per_layer``
            (neurons ranked across all layers after dividing each layer's scores by their mean).
        min_keep: no layer keeps fewer neurons than this.

    Returns:
        The new width of every feed-forward module.

    Raises:
        ValueError: ``keep`` outside (0, 1), an unknown mode, or a model without feed-forward modules.
    """
    if not 0.0 < keep < 1.0:
        raise ValueError(f"keep must be in (0, 1), got {keep}")
    ffns = ffn_modules(model)
    if not ffns:
        raise ValueError("model has no T5 feed-forward modules (wi/wo) to prune")
    scores = {name: neuron_importance(m) for name, m in ffns.items()}
    if mode == "uniform":
        widths = {name: s.numel() for name, s in scores.items()}
        if len(set(widths.values())) != 1:
            raise ValueError(f"uniform pruning needs equal feed-forward widths, got {sorted(set(widths.values()))}")
        d_ff = next(iter(widths.values()))
        k = max(min(min_keep, d_ff), round(keep * d_ff))
        keep_counts = dict.fromkeys(scores, k)
    elif mode == "per_layer":
        normalised = {name: s / s.mean().clamp_min(1e-12) for name, s in scores.items()}
        pooled = torch.cat(list(normalised.values()))
        total_keep = round(keep * pooled.numel())
        threshold = torch.topk(pooled, total_keep).values.min()
        keep_counts = {name: int(max(min(min_keep, s.numel()), int((s >= threshold).sum()))) for name, s in
                       normalised.items()}
    else:
        raise ValueError(f"unknown structured pruning mode {mode!r}; valid: uniform, per_layer")
    for name, m in ffns.items():
        shrink_ffn(m, torch.topk(scores[name], keep_counts[name]).indices)
    widths = ffn_widths(model)
    if mode == "uniform" and hasattr(model, "config"):
        model.config.d_ff = next(iter(widths.values()))
    return widths


def _prune_magnitude(model: nn.Module, amount: float, *, mode: str, keep_masks: bool) -> None:
    global_magnitude_prune(model, amount, keep_masks=keep_masks)


def _prune_ffn(model: nn.Module, amount: float, *, mode: str, keep_masks: bool) -> None:
    prune_ffn(model, amount, mode)


#: Pruning methods, found by name: ``fn(model, amount, *, mode, keep_masks)`` prunes in place.
#: ``magnitude``: global unstructured, ``amount`` = target sparsity; ``ffn``: structured feed-forward
#: neurons, ``amount`` = share kept. Adding a method is a function and a line here.
METHODS = {"magnitude": _prune_magnitude, "ffn": _prune_ffn}


def save_pruned(model: nn.Module, tokenizer, out_dir: str | os.PathLike[str], info: dict[str, Any] | None = None) -> Path:
    """Save a pruned model so that :func:`t2sql.model_dir.load` reads it back.

    A model whose feed-forward widths all equal ``config.d_ff`` is a plain Hugging Face directory.
    Otherwise the per-layer widths go to ``t2sql_technique.json`` next to the weights.

    Args:
        model: the pruned model.
        tokenizer: saved beside it.
        out_dir: destination directory.
        info: facts written to ``pruning.json`` (method, target, achieved sparsity, ...).

    Returns:
        ``out_dir`` as a Path.
    """
    out = model_dir.save(model, tokenizer, out_dir)
    widths = ffn_widths(model)
    if widths and set(widths.values()) != {getattr(model.config, "d_ff", None)}:
        model_dir.write_format(out, NAME, format_version=FORMAT_VERSION, d_ff=widths)
    else:
        model_dir.clear_format(out)
    if info is not None:
        (out / "pruning.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    return out


def load(path: str | os.PathLike[str]):
    """Rebuild a model saved by :func:`save_pruned` with per-layer feed-forward widths.

    Args:
        path: the model directory (holds ``t2sql_technique.json`` naming ``pruned_ffn``).

    Returns:
        (model in eval mode, tokenizer).

    Raises:
        ValueError: the marker has another format version, names a module the model lacks, or the
            weights do not fit the rebuilt shapes.
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    path = Path(path)
    marker = model_dir.read_format(path) or {}
    if marker.get("technique") != NAME or marker.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path / model_dir.FORMAT_FILE}: not a {NAME} v{FORMAT_VERSION} marker: {marker}")
    config = AutoConfig.from_pretrained(path)
    model = AutoModelForSeq2SeqLM.from_config(config)
    ffns = ffn_modules(model)
    for name, width in marker["d_ff"].items():
        if name not in ffns:
            raise ValueError(f"{path / model_dir.FORMAT_FILE}: model has no feed-forward module {name!r}")
        shrink_ffn(ffns[name], torch.arange(int(width)))
    state = load_file(str(path / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    missing = [n for n in missing if n not in tied]
    if missing or unexpected:
        raise ValueError(f"{path / 'model.safetensors'}: weights do not fit: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.tie_weights()
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)
