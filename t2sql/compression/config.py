"""Settings of the compression stage (pruning, quantization, ONNX export).

    compression:
      enabled: true
      sparsities: [0.3, 0.5]          # global magnitude pruning of every encoder/decoder Linear
      structured_keep: [0.5]          # share of feed-forward neurons kept (d_ff shrinks)
      recovery_epochs: 0.5            # short fine-tune of each pruned model (0: none)
      backends: [torch-fp32, torch-int8, onnx-fp32, onnx-int8]
      pruned_backends: [onnx-int8]
      execution_guided_beams: 4       # also evaluate execution-guided decoding over 4 beams

Every variant (a backend serving the source model, or a pruned model served by a backend) is
evaluated on the same test set as the source model and reported side by side.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _check_backends(names: list[str]) -> list[str]:
    from t2sql.inference.backends import canonical_backend

    return [canonical_backend(n) for n in names]


class CompressionConfig(BaseModel):
    """What the compression stage produces and how each variant is evaluated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(default=False, description="Run the compression stage on the winning model.")
    sparsities: list[float] = Field(
        default_factory=lambda: [0.3, 0.5],
        description="Global magnitude pruning: target share of zero weights over all encoder/decoder Linear layers.")
    structured_keep: list[float] = Field(
        default_factory=lambda: [0.5],
        description="Structured pruning: share of feed-forward (wi/wo) neurons kept; the matrices really shrink.")
    structured_mode: Literal["uniform", "per_layer"] = Field(
        default="uniform",
        description="uniform: every layer keeps the same number of neurons (a plain Hugging Face model, exportable "
                    "anywhere); per_layer: neurons ranked across layers, so layers keep different numbers.")
    recovery_epochs: float = Field(default=0.0, ge=0, description="Fine-tune each pruned model this long; 0: none.")
    recovery_max_minutes: float | None = Field(default=10.0, gt=0, description="Wall-clock cap of each recovery run.")
    backends: list[str] = Field(
        default_factory=lambda: ["torch-fp32", "torch-int8", "onnx-fp32", "onnx-int8"],
        description="Backends the source model is served and evaluated with (see t2sql.inference.backends).")
    pruned_backends: list[str] = Field(
        default_factory=lambda: ["torch-fp32", "onnx-int8"],
        description="Backends every pruned model is served and evaluated with.")
    int8_isa: Literal["auto", "avx512_vnni", "avx512", "avx2", "arm64"] = Field(
        default="auto", description="Instruction set ONNX INT8 is quantized for; auto reads the CPU's flags.")
    per_channel: bool = Field(default=True, description="ONNX INT8: one weight scale per output channel.")
    execution_guided_beams: int = Field(
        default=0, ge=0,
        description="When > 1, also evaluate execution-guided decoding (first runnable of this many beams) on the "
                    "first of `backends`.")
    max_examples: int | None = Field(default=None, ge=1, description="Evaluate each variant on at most this many "
                                                                    "test examples (default: the eval section's).")
    num_threads: int | None = Field(default=None, ge=1, description="Inference threads (default: physical cores).")

    @field_validator("sparsities")
    @classmethod
    def _sparsity_range(cls, v: list[float]) -> list[float]:
        for s in v:
            if not 0.0 < s < 1.0:
                raise ValueError(f"sparsity {s} must be between 0 and 1 (exclusive)")
        return sorted(set(v))

    @field_validator("structured_keep")
    @classmethod
    def _keep_range(cls, v: list[float]) -> list[float]:
        for k in v:
            if not 0.0 < k < 1.0:
                raise ValueError(f"structured_keep {k} must be between 0 and 1 (exclusive)")
        return sorted(set(v), reverse=True)

    @field_validator("backends", "pruned_backends")
    @classmethod
    def _known_backends(cls, v: list[str]) -> list[str]:
        return _check_backends(v)
