"""Settings of the compression stage (pruning, quantization, ONNX export)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class CompressionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
