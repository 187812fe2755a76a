"""AdaLoRA: LoRA in SVD form whose rank budget moves to the layers that matter.

    techniques:
      - name: adalora
        params: {init_r: 12, target_r: 4, target_modules: [q, k, v, o, wi, wo]}

Every optimizer step, :func:`on_optimizer_step` scores each singular triplet by its sensitivity
(``|weight * grad|``, smoothed) and, every ``delta_t`` steps of the budgeting phase, zeroes the
least important ones until the average rank reaches ``target_r``. Without that call AdaLoRA is plain
LoRA. The phases are fractions of the run because the number of steps is known only once training
starts: ``warmup_fraction`` at full rank, then a cubic budget decrease, then ``final_fraction`` with
the final rank pattern fixed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from t2sql.summary import ReportSection, ReportTable
from t2sql.techniques import lora

# Placeholder length of the run until the first optimizer step tells the real one.
_UNKNOWN_TOTAL = 1_000_000


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    init_r: int = Field(default=12, ge=1, description="Rank of every adapter at the start.")
    target_r: int = Field(default=4, ge=1, description="Average rank per adapter at the end.")
    alpha: float = Field(default=16.0, gt=0, description="Scale: the update is (alpha / rank) * B @ diag(E) @ A.")
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q", "v"], min_length=1,
        description="Names of the Linear layers that get adapters, or 'all-linear'.")
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1, description="Share of steps before ranks start to move (tinit).")
    final_fraction: float = Field(default=0.2, ge=0, lt=1, description="Share of steps with the final ranks fixed (tfinal).")
    delta_t: int = Field(default=10, ge=1, description="Steps between two budget allocations (deltaT).")
    beta1: float = Field(default=0.85, gt=0, lt=1, description="Smoothing of the sensitivity.")
    beta2: float = Field(default=0.85, gt=0, lt=1, description="Smoothing of the uncertainty.")
    orth_reg_weight: float = Field(default=0.5, ge=0, description="Weight of the orthogonality penalty on A and B.")

    @model_validator(mode="after")
    def _budget(self) -> "Config":
        if self.target_r > self.init_r:
            raise ValueError(f"target_r ({self.target_r}) must not exceed init_r ({self.init_r})")
        if self.warmup_fraction + self.final_fraction >= 1:
            raise ValueError("warmup_fraction + final_fraction must be below 1 to leave a budgeting phase")
        return self


def prepare(model, config: Config, train=None):
    """Wrap the target layers with AdaLoRA adapters (E starts at zero, so the output is unchanged).

    Args:
        model: a Hugging Face seq2seq model.
        config: AdaLoRA settings.
        train: the ``TrainConfig`` (unused: the schedule is sized at the first optimizer step).

    Returns:
        The peft model; only adapter weights are trainable.
    """
    from peft import AdaLoraConfig, TaskType, get_peft_model

    acfg = AdaLoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM, init_r=config.init_r, target_r=config.target_r, lora_alpha=config.alpha,
        lora_dropout=config.dropout, target_modules=config.target_modules, tinit=0, tfinal=0,
        deltaT=config.delta_t, beta1=config.beta1, beta2=config.beta2, orth_reg_weight=config.orth_reg_weight,
        total_step=_UNKNOWN_TOTAL,
    )
    peft_model = get_peft_model(model, acfg)
    peft_model.t2sql_adalora = config
    return peft_model


def schedule(config: Config, total_steps: int) -> tuple[int, int]:
    """(tinit, tfinal) in steps for a run of ``total_steps``, leaving at least one budgeting step."""
    tinit = int(math.floor(config.warmup_fraction * total_steps))
    tfinal = int(math.floor(config.final_fraction * total_steps))
    while tinit + tfinal >= total_steps - 1 and (tinit or tfinal):
        if tfinal >= tinit and tfinal:
            tfinal -= 1
        else:
            tinit -= 1
    return tinit, tfinal


def _adapter_config(model):
    return model.peft_config[model.base_model.trainable_adapter_name]


def on_optimizer_step(model, step: int, total_steps: int) -> None:
    """Update the importance scores and reallocate ranks; call after ``optimizer.step()``.

    Args:
        model: the peft model from :func:`prepare`.
        step: optimizer steps done so far (1 after the first).
        total_steps: planned steps of the run.

    Raises:
        RuntimeError: the gradients were already cleared (the scores need them).
    """
    acfg = _adapter_config(model)
    if acfg.total_step != total_steps:
        acfg.tinit, acfg.tfinal = schedule(model.t2sql_adalora, total_steps)
        acfg.total_step = total_steps
    if total_steps < 2:  # no room for a budgeting phase: plain LoRA
        return
    final = acfg.total_step - acfg.tfinal
    if step > final and not acfg.rank_pattern:
        # Past the allocation point without an allocation (a run continued after an early stop).
        if not model.base_model.rankallocator.exp_avg_ipt:
            return
        step = final
    if step < final:
        for name, p in model.named_parameters():
            if "lora_" in name and p.requires_grad and p.grad is None:
                raise RuntimeError("AdaLoRA's on_optimizer_step must run after optimizer.step() and before "
                                   f"optimizer.zero_grad(): {name} has no gradient")
    model.base_model.update_and_allocate(step)


def regularization(model) -> torch.Tensor | None:
    """Orthogonality penalty ``orth_reg_weight * mean ||A A^T - I|| and ||B^T B - I||``.

    peft adds it to ``outputs.loss``; a training loop computing its own loss from the logits adds
    this instead.
    """
    weight = _adapter_config(model).orth_reg_weight
    if weight <= 0:
        return None
    adapter = model.base_model.trainable_adapter_name
    terms = []
    for name, p in model.named_parameters():
        if p.requires_grad and (f"lora_A.{adapter}" in name or f"lora_B.{adapter}" in name):
            cov = p @ p.T if "lora_A" in name else p.T @ p
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype)))
    if not terms:
        return None
    return weight * torch.stack(terms).mean()


def rank_pattern(model) -> dict[str, int]:
    """Current rank per adapted module (its unmasked singular values)."""
    acfg = _adapter_config(model)
    adapter = model.base_model.trainable_adapter_name
    suffix = f".lora_E.{adapter}"
    if acfg.rank_pattern:
        return {k.replace(suffix, "").replace(".lora_E", ""): int(sum(bool(b) for b in v))
                for k, v in sorted(acfg.rank_pattern.items())}
    return {n.replace(suffix, ""): acfg.init_r for n, _ in model.base_model.model.named_parameters() if n.endswith(suffix)}


def summary(model) -> dict[str, Any]:
    """The final rank pattern and its total, next to the initial budget."""
    acfg = _adapter_config(model)
    ranks = rank_pattern(model)
    return {"rank_pattern": ranks, "total_rank": sum(ranks.values()), "initial_total_rank": acfg.init_r * len(ranks),
            "target_r": acfg.target_r, "schedule": {"total_step": acfg.total_step, "tinit": acfg.tinit,
                                                    "tfinal": acfg.tfinal, "delta_t": acfg.deltaT}}


def report_sections(facts: dict[str, Any]) -> list[ReportSection]:
    """The final rank of every adapted module, for the run report."""
    ranks = facts.get("rank_pattern") or {}
    if not ranks:
        return []
    text = [f"Total rank {facts.get('total_rank')} of an initial {facts.get('initial_total_rank')} "
            f"(target r {facts.get('target_r')}): the budget went to the modules below."]
    table = ReportTable(columns=["module", "rank"], rows=[[k, v] for k, v in sorted(ranks.items())])
    return [ReportSection(title="AdaLoRA final ranks", source="technique:adalora", text=text, tables=[table])]


def dump_state(model) -> dict[str, Any]:
    """The rank allocator's smoothed scores and schedule, for checkpoints."""
    acfg = _adapter_config(model)
    alloc = model.base_model.rankallocator
    return {"total_step": acfg.total_step, "tinit": acfg.tinit, "tfinal": acfg.tfinal, "rank_pattern": acfg.rank_pattern,
            "exp_avg_ipt": {k: v.cpu() for k, v in alloc.exp_avg_ipt.items()},
            "exp_avg_unc": {k: v.cpu() for k, v in alloc.exp_avg_unc.items()}}


def load_state(model, state: dict[str, Any]) -> None:
    """Restore what :func:`dump_state` saved."""
    acfg = _adapter_config(model)
    acfg.total_step, acfg.tinit, acfg.tfinal = state["total_step"], state["tinit"], state["tfinal"]
    acfg.rank_pattern = state["rank_pattern"]
    alloc = model.base_model.rankallocator
    device = next(model.parameters()).device
    alloc.exp_avg_ipt = {k: v.to(device) for k, v in state["exp_avg_ipt"].items()}
    alloc.exp_avg_unc = {k: v.to(device) for k, v in state["exp_avg_unc"].items()}
    alloc.ipt = {k: torch.zeros_like(v) for k, v in alloc.exp_avg_ipt.items()}


def export(model, config: Config, out_dir: Path, tokenizer) -> None:
    """Merge the adapters (masked triplets contribute nothing) and save a plain Hugging Face model.

    Args:
        model: the trained peft model (not modified).
        config: AdaLoRA settings.
        out_dir: destination directory.
        tokenizer: saved beside the model.
    """
    merged = lora.merged_copy(model)
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
