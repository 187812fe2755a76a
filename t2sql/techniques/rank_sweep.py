"""Estimate the LoRA rank a task needs: train briefly at several ranks, keep the smallest good one.

    specs = sweep_ranks([2, 4, 8, 16, 32], {"alpha": 16, "target_modules": ["q", "v"]})
    # ... one short training per spec, each giving val_loss and execution_accuracy ...
    chosen = choose_rank(results, tolerance=0.02)
    rank_sweep_plot(results, "rank_sweep.png", chosen=chosen["rank"])

A rank is good when its validation loss is within ``tolerance`` (relative) of the best one: past
that point more rank buys nothing but parameters.
"""

from __future__ import annotations

import math
import os
from typing import Any


def sweep_ranks(ranks: list[int], params: dict[str, Any] | None = None, technique: str = "lora",
                keep_alpha_ratio: bool = True) -> list[dict[str, Any]]:
    """One technique spec (``{"name", "params"}``) per rank, everything else as in ``params``.

    Args:
        ranks: ranks to try, e.g. ``[2, 4, 8, 16]``.
        params: the LoRA settings to vary (``r`` is replaced).
        technique: ``lora`` or ``qlora``.
        keep_alpha_ratio: scale ``alpha`` with the rank so that ``alpha / r`` stays as in ``params``
            and the size of updates does not change with the rank.

    Returns:
        Specs in rank order, each validated against the technique's ``Config``.

    Raises:
        ValueError: no ranks, a rank below 1, or a repeated rank.
    """
    from t2sql.techniques import get_technique

    if not ranks:
        raise ValueError("ranks: give at least one rank")
    if any(r < 1 for r in ranks) or len(set(ranks)) != len(ranks):
        raise ValueError(f"ranks must be distinct integers >= 1, got {ranks}")
    module = get_technique(technique)
    base = module.Config.model_validate(params or {})
    specs = []
    for r in sorted(ranks):
        update: dict[str, Any] = {"r": r}
        if keep_alpha_ratio:
            update["alpha"] = base.alpha * r / base.r
        cfg = module.Config.model_validate({**base.model_dump(), **update})
        specs.append({"name": technique, "params": cfg.model_dump()})
    return specs


def _valid(result: dict[str, Any]) -> bool:
    loss = result.get("val_loss")
    return loss is not None and not math.isnan(float(loss))


def choose_rank(results: list[dict[str, Any]], tolerance: float = 0.02) -> dict[str, Any]:
    """The smallest rank whose validation loss is within ``tolerance`` of the best.

    The best result is the lowest validation loss, ties broken by higher execution accuracy.

    Args:
        results: one dict per rank: ``rank``, ``val_loss``, and optionally ``execution_accuracy`` and
            ``trainable_params``. Results without a finite ``val_loss`` (failed runs) are ignored.
        tolerance: relative slack, e.g. 0.02 accepts a loss up to 2% above the best.

    Returns:
        The chosen result dict, with ``best_rank`` and ``tolerance`` added.

    Raises:
        ValueError: no usable result, or a negative tolerance.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    usable = [r for r in results if _valid(r)]
    if not usable:
        raise ValueError("no rank sweep result has a validation loss")

    def quality(r: dict[str, Any]) -> tuple[float, float]:
        return float(r["val_loss"]), -float(r.get("execution_accuracy") or 0.0)

    best = min(usable, key=quality)
    limit = float(best["val_loss"]) + tolerance * abs(float(best["val_loss"]))
    within = [r for r in usable if float(r["val_loss"]) <= limit]
    chosen = min(within, key=lambda r: (int(r["rank"]), quality(r)))
    return {**chosen, "best_rank": int(best["rank"]), "tolerance": tolerance}


def rank_sweep_plot(results: list[dict[str, Any]], path: str | os.PathLike[str], chosen: int | None = None) -> None:
    """Plot validation loss (and execution accuracy) against rank to a PNG file.

    Args:
        results: as for :func:`choose_rank`.
        path: the image file to write.
        chosen: a rank to mark.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in results if _valid(r)), key=lambda r: int(r["rank"]))
    ranks = [int(r["rank"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(ranks, [float(r["val_loss"]) for r in rows], "o-", color="tab:blue", label="validation loss")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks, [str(r) for r in ranks])
    ax.set_xlabel("LoRA rank")
    ax.set_ylabel("validation loss", color="tab:blue")
    if any(r.get("execution_accuracy") is not None for r in rows):
        ax2 = ax.twinx()
        ax2.plot(ranks, [float(r.get("execution_accuracy") or 0.0) for r in rows], "s--", color="tab:orange",
                 label="execution accuracy")
        ax2.set_ylabel("execution accuracy", color="tab:orange")
    if chosen is not None:
        ax.axvline(chosen, color="tab:green", linestyle=":", label=f"chosen r={chosen}")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Rank sweep")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
