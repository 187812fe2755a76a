"""ONNX export (through optimum) and ONNX Runtime dynamic INT8 quantization.

    from t2sql.compression.onnx_export import ensure_onnx
    int8_dir = ensure_onnx("runs/abc/model", "int8")     # exports fp32 first when needed

A seq2seq model becomes three graphs (optimum's ``text2text-generation-with-past`` task):
``encoder_model.onnx``, ``decoder_model.onnx`` (first step, computes the cross-attention keys and
values) and ``decoder_with_past_model.onnx`` (every later step, reads the key/value cache). The
merged decoder optimum also writes is deleted: serving loads the two decoders.

Artefacts live in a cache next to the model, ``<model_dir>/../onnx/<model_dir name>/{fp32,int8-<isa>}``,
each with a ``t2sql_onnx.json`` manifest stamped with the source files' sizes and modification
times, so a retrained model is exported again instead of served stale.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ONNX_FILES = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")
MANIFEST = "t2sql_onnx.json"
TASK = "text2text-generation-with-past"
INT8_VERSION = 2  # bumped when the quantization recipe changes, so cached INT8 graphs are rebuilt
_SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "spiece.model", "added_tokens.json")


def source_stamp(model_dir: str | os.PathLike[str]) -> dict[str, list[int]]:
    """Size and modification time of every file directly in ``model_dir`` (cheap staleness check)."""
    out = {}
    for p in sorted(Path(model_dir).iterdir()):
        if p.is_file():
            st = p.stat()
            out[p.name] = [st.st_size, st.st_mtime_ns]
    return out


def default_onnx_root(model_dir: str | os.PathLike[str]) -> Path:
    """``<model_dir>/../onnx/<model_dir name>``: where ONNX artefacts of a model are cached."""
    model_dir = Path(model_dir).resolve()
    return model_dir.parent / "onnx" / model_dir.name


def onnx_size_bytes(onnx_dir: str | os.PathLike[str]) -> int:
    """Bytes of the three ONNX graphs served (encoder, decoder, decoder with past)."""
    return sum((Path(onnx_dir) / f).stat().st_size for f in ONNX_FILES)


def _read_manifest(d: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not all((d / f).is_file() for f in ONNX_FILES):
        return None
    return manifest


def _publish(tmp: Path, out_dir: Path, manifest: dict[str, Any]) -> Path:
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def _tmp_dir(out_dir: Path) -> Path:
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def export_onnx(model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, opset: int | None = None
                ) -> Path:
    """Export a seq2seq model directory to fp32 ONNX (encoder, decoder, decoder with past).

    Any directory :func:`t2sql.model_dir.load` reads works, including structured-pruned
    models with per-layer widths: the export starts from the loaded model, not from the files.

    Args:
        model_dir: the model directory.
        out_dir: destination; replaced atomically when the export succeeds.
        opset: ONNX opset (default: optimum's choice for the architecture).

    Returns:
        ``out_dir``.

    Raises:
        RuntimeError: the export did not produce the three graphs.
    """
    import torch
    from optimum.exporters.onnx import onnx_export_from_model

    from t2sql import model_dir as saved

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    stamp = source_stamp(model_dir)
    model, tokenizer = saved.load(model_dir, "cpu")
    model = model.float().eval()
    tmp = _tmp_dir(out_dir)
    try:
        with torch.no_grad():
            onnx_export_from_model(model, tmp, task=TASK, opset=opset, do_validation=False)
        merged = tmp / "decoder_model_merged.onnx"
        if merged.exists():
            merged.unlink()
        missing = [f for f in ONNX_FILES if not (tmp / f).is_file()]
        if missing:
            raise RuntimeError(f"ONNX export of {model_dir} produced no {', '.join(missing)}")
        tokenizer.save_pretrained(tmp)
        return _publish(tmp, out_dir, {"kind": "fp32", "source": str(model_dir.resolve()), "stamp": stamp,
                                       "files": list(ONNX_FILES)})
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def activation_matmuls(onnx_path: str | os.PathLike[str]) -> list[str]:
    """Names of MatMul nodes whose inputs are both computed (attention scores and their product with values).

    Dynamic quantization would quantize such inputs afresh at every call, and in the decoder with past
    that means the whole cross-attention key/value cache at every generated token: at batch 16 it
    made INT8 decoding slower than fp32 (102 ms vs 66 ms per step). Only products with a weight
    matrix are worth quantizing.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    constants = {init.name for init in graph.initializer}
    for node in graph.node:  # nodes are topologically sorted; e.g. the tied output head is Transpose(embedding)
        if node.op_type == "Constant" or (node.op_type in ("Transpose", "Cast", "Identity", "Reshape")
                                          and node.input and all(i in constants for i in node.input)):
            constants.update(node.output)
    return [n.name for n in graph.node if n.op_type == "MatMul" and not any(i in constants for i in n.input)]


def quantization_config(isa: str = "auto", per_channel: bool = True, nodes_to_exclude: list[str] | None = None):
    """optimum's dynamic INT8 configuration for an instruction set.

    Args:
        isa: ``avx512_vnni``, ``avx512``, ``avx2``, ``arm64`` or ``auto`` (read from the CPU flags).
        per_channel: one weight scale per output channel (more accurate) instead of one per matrix.
        nodes_to_exclude: nodes left in fp32.

    Raises:
        ValueError: unknown instruction set.
    """
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from t2sql.hardware import ISAS, int8_isa

    isa = int8_isa() if isa == "auto" else isa
    if isa not in ISAS:
        raise ValueError(f"unknown int8 instruction set {isa!r}; valid: auto, {', '.join(ISAS)}")
    return getattr(AutoQuantizationConfig, isa)(is_static=False, per_channel=per_channel,
                                                nodes_to_exclude=nodes_to_exclude)


def quantize_onnx(fp32_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, isa: str = "auto",
                  per_channel: bool = True) -> Path:
    """Dynamic INT8 quantization (weights int8 offline, activations per batch) of every exported graph.

    Every product with a weight matrix (and the embedding look-up) is quantized; products of two
    computed tensors (attention) stay fp32, see :func:`activation_matmuls`.

    Args:
        fp32_dir: a directory written by :func:`export_onnx`.
        out_dir: destination; replaced atomically when quantization succeeds.
        isa: instruction set the kernels are chosen for (``auto``: this CPU's).
        per_channel: per-output-channel weight scales.

    Returns:
        ``out_dir``.

    Raises:
        FileNotFoundError: ``fp32_dir`` lacks one of the graphs.
    """
    from optimum.onnxruntime import ORTQuantizer

    from t2sql.hardware import int8_isa

    fp32_dir, out_dir = Path(fp32_dir), Path(out_dir)
    for f in ONNX_FILES:
        if not (fp32_dir / f).is_file():
            raise FileNotFoundError(f"{fp32_dir / f}: export the model to ONNX first (export_onnx)")
    isa = int8_isa() if isa == "auto" else isa
    fp32_manifest = _read_manifest(fp32_dir) or {}
    tmp = _tmp_dir(out_dir)
    try:
        for f in ONNX_FILES:
            qconfig = quantization_config(isa, per_channel, activation_matmuls(fp32_dir / f))
            ORTQuantizer.from_pretrained(fp32_dir, file_name=f).quantize(qconfig, save_dir=tmp, file_suffix=None)
        for f in _SIDE_FILES:
            if (fp32_dir / f).is_file():
                shutil.copy2(fp32_dir / f, tmp / f)
        manifest = {"kind": "int8", "isa": isa, "per_channel": per_channel, "version": INT8_VERSION,
                    "source": fp32_manifest.get("source"),
                    "stamp": fp32_manifest.get("stamp"), "files": list(ONNX_FILES)}
        return _publish(tmp, out_dir, manifest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextmanager
def _locked(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def int8_dir_name(isa: str, per_channel: bool) -> str:
    return f"int8-{isa}" + ("" if per_channel else "-per-tensor")


def ensure_onnx(model_dir: str | os.PathLike[str], precision: str = "fp32", *,
                onnx_dir: str | os.PathLike[str] | None = None, isa: str = "auto", per_channel: bool = True) -> Path:
    """The ONNX artefacts of a model, exported (and quantized) on first use and reused after.

    Args:
        model_dir: the source model directory.
        precision: ``fp32`` or ``int8``.
        onnx_dir: cache root (default :func:`default_onnx_root`).
        isa: INT8 instruction set (``auto``: this CPU's).
        per_channel: INT8 per-channel weight scales.

    Returns:
        The directory holding the three graphs.

    Raises:
        ValueError: unknown precision.
    """
    from t2sql.hardware import int8_isa

    if precision not in ("fp32", "int8"):
        raise ValueError(f"ONNX precision must be fp32 or int8, got {precision!r}")
    model_dir = Path(model_dir)
    root = Path(onnx_dir) if onnx_dir is not None else default_onnx_root(model_dir)
    stamp = source_stamp(model_dir)
    with _locked(root):
        fp32 = root / "fp32"
        manifest = _read_manifest(fp32)
        if manifest is None or manifest.get("stamp") != stamp:
            log.info("exporting %s to ONNX in %s", model_dir, fp32)
            export_onnx(model_dir, fp32)
        if precision == "fp32":
            return fp32
        isa = int8_isa() if isa == "auto" else isa
        q = root / int8_dir_name(isa, per_channel)
        manifest = _read_manifest(q)
        if manifest is None or manifest.get("stamp") != stamp or manifest.get("version") != INT8_VERSION:
            log.info("quantizing %s to INT8 (%s) in %s", fp32, isa, q)
            quantize_onnx(fp32, q, isa=isa, per_channel=per_channel)
        return q
