"""What the machine can do: device, CPU instruction sets, mixed-precision type, thread count.

Every choice that depends on the hardware (the INT8 kernel family ONNX Runtime is quantized for,
bf16 autocast, fp16 on a GPU, intra-op threads) is read here, from the CPU's own flags in
``/proc/cpuinfo``, so one place decides and the rest of the code asks.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

#: Instruction-set families ONNX Runtime dynamic INT8 can be tuned for, best first.
ISAS = ("avx512_vnni", "avx512", "avx2", "arm64")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of the first processor in ``/proc/cpuinfo`` (empty when unreadable).

    Returns:
        Lower-case flag names, e.g. ``{"avx2", "avx512f", "avx512_vnni", "amx_bf16", ...}``; on ARM the
        ``Features`` line (``asimd``, ``asimddp``, ...).
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.lower().split())
    return frozenset()


def pick_device(preference: str = "auto") -> torch.device:
    """``cuda`` when asked for or available under ``auto``, else ``cpu``."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def physical_cores() -> int:
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # pragma: no cover - psutil missing or unreadable
        n = None
    return max(1, n or os.cpu_count() or 1)


def flush_denormals() -> None:
    """Treat subnormal floats as zero on this CPU thread (and the worker threads it starts later).

    As training goes on, activations and gradients underflow into the subnormal range, which x86
    cores compute on 10-100x more slowly: a 600-step-trained model's training step took 2.8 s
    instead of 1.3 s here, with the same batch (``benchmarks/step_time.py``). The setting is per
    OS thread and inherited by threads created afterwards, so it is made before models are built
    or loaded (by :func:`set_threads`, :func:`t2sql.model_dir.load` and ``finetune``), not on import.
    Values below 1.2e-38 do not matter to training or decoding.
    """
    torch.set_flush_denormal(True)


def set_threads(num_threads: int | None) -> int:
    """Set PyTorch's intra-op threads and return the number used; subnormal floats flushed to zero.

    Default: ``OMP_NUM_THREADS`` when set (a scale-out worker's share of the machine), else the
    physical cores.
    """
    flush_denormals()
    env = os.environ.get("OMP_NUM_THREADS", "")
    n = num_threads or (int(env) if env.isdigit() and int(env) > 0 else physical_cores())
    torch.set_num_threads(n)
    return n


def is_arm64() -> bool:
    return platform.machine().lower() in ("aarch64", "arm64")


def int8_isa(flags: frozenset[str] | None = None) -> str:
    """The instruction-set family to quantize for: one of :data:`ISAS`.

    ``avx512_vnni`` needs ``avx512_vnni`` (or the VEX ``avx_vnni``) with ``avx512f``; ``avx512`` needs
    ``avx512f`` and ``avx512bw``; otherwise ``avx2``. ARM64 machines get ``arm64``.

    Args:
        flags: CPU flags (default: this machine's).
    """
    if flags is None:
        if is_arm64():
            return "arm64"
        flags = cpu_flags()
    if "avx512f" in flags and ("avx512_vnni" in flags or "avx_vnni" in flags):
        return "avx512_vnni"
    if "avx512f" in flags and "avx512bw" in flags:
        return "avx512"
    if "asimd" in flags and "avx2" not in flags:
        return "arm64"
    return "avx2"


def cpu_supports_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (``avx512_bf16`` or ``amx_bf16``)."""
    flags = cpu_flags() if flags is None else flags
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_dtype(device: torch.device | str) -> torch.dtype:
    """The mixed-precision type for inference on ``device``.

    Returns:
        ``torch.float16`` on a GPU, ``torch.bfloat16`` on a CPU with native bf16, else ``torch.float32``
        (no autocast).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def describe() -> dict[str, object]:
    """A summary of the machine for benchmark and report headers."""
    return {
        "machine": platform.machine(),
        "physical_cores": physical_cores(),
        "int8_isa": int8_isa(),
        "bf16": cpu_supports_bf16(),
        "cuda": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
    }
