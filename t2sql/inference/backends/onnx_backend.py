"""ONNX Runtime backends: fp32 and dynamic INT8 graphs exported by optimum.

Greedy decoding runs its own loop over the three graphs: the encoder and the first decoder step
(which also returns the cross-attention keys/values) once, in groups of similar input length (see
:func:`encoder_chunks`), then the decoder-with-past per token. The loop uses IO binding: the key/value cache stays in ONNX Runtime's own buffers (``OrtValue``) from
one step to the next, and the cross-attention cache and encoder mask are bound once per batch
instead of being converted and passed again at every step. Once a quarter of the rows have
finished, they leave the batch, so short queries stop costing decoder steps. Beam search goes through optimum's
``ORTModelForSeq2SeqLM`` on the same sessions, so it follows Hugging Face ``generate`` exactly.

Sessions run with every graph optimisation on, ``intra_op_num_threads`` = the translator's
threads (physical cores by default), one inter-op thread, and pool threads that block rather than
spin when idle (see :func:`session_options`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from t2sql.compression.onnx_export import ONNX_FILES, ensure_onnx, onnx_size_bytes
from t2sql.inference.backends import BackendOptions, GenerationSettings, encoder_chunks

log = logging.getLogger(__name__)


def session_options(num_threads: int, spinning: bool = False):
    """ONNX Runtime session options for generation on ``num_threads`` cores.

    Args:
        num_threads: intra-op threads.
        spinning: let idle pool threads spin. Spinning shaves a little latency on an idle machine, but
            when other processes share the cores a spinning thread holds a core its partner waits for:
            on this 2-core machine under load, 2 spinning threads were 2.7x slower than 2 blocking ones.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = num_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    return so


class OnnxBackend:
    """Encoder, decoder and decoder-with-past sessions of one exported model.

    Args:
        onnx_dir: directory with the three graphs, config and tokenizer.
        tokenizer: the model's tokenizer.
        options: threads and device.
        info: facts for reports.
    """

    def __init__(self, onnx_dir: Path, tokenizer, options: BackendOptions, info: dict[str, Any]):
        import onnxruntime as ort
        from transformers import AutoConfig

        self.onnx_dir = Path(onnx_dir)
        self.config = AutoConfig.from_pretrained(self.onnx_dir)
        self.device = torch.device(options.device)
        use_cuda = self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        if self.device.type == "cuda" and not use_cuda:
            log.warning("onnxruntime has no CUDA provider here; running ONNX on the CPU")
            self.device = torch.device("cpu")
        self.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        self._ort_device = "cuda" if use_cuda else "cpu"
        so = session_options(options.num_threads, options.spinning)
        self.encoder, self.decoder, self.decoder_with_past = (
            ort.InferenceSession(str(self.onnx_dir / f), sess_options=so, providers=self.providers) for f in ONNX_FILES)
        self._dec_outputs = [o.name for o in self.decoder.get_outputs()]
        self._past_inputs = {i.name for i in self.decoder_with_past.get_inputs()}
        self._past_outputs = [o.name for o in self.decoder_with_past.get_outputs()]
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id
        start = getattr(self.config, "decoder_start_token_id", None)
        self.decoder_start_token_id = self.pad_token_id if start is None else start
        self._hf_model = None
        self.info = {**info, "engine": "onnxruntime", "device": str(self.device), "threads": options.num_threads,
                     "providers": self.providers}

    # -- greedy: own loop with IO binding -----------------------------------------------------
    def _encode(self, input_ids: np.ndarray, attention_mask: np.ndarray):
        """Encoder output for the batch: an ``OrtValue`` (one group) or an array (groups of similar length)."""
        lengths = attention_mask.sum(axis=1).tolist()
        groups = encoder_chunks(lengths)
        if len(groups) == 1:
            io = self.encoder.io_binding()
            io.bind_cpu_input("input_ids", input_ids)
            io.bind_cpu_input("attention_mask", attention_mask)
            io.bind_output("last_hidden_state", self._ort_device)
            self.encoder.run_with_iobinding(io)
            return io.get_outputs()[0]
        hidden = None
        for rows in groups:
            width = max(lengths[i] for i in rows)
            part = self.encoder.run(["last_hidden_state"], {
                "input_ids": np.ascontiguousarray(input_ids[rows, :width]),
                "attention_mask": np.ascontiguousarray(attention_mask[rows, :width])})[0]
            if hidden is None:
                hidden = np.zeros((input_ids.shape[0], input_ids.shape[1], part.shape[-1]), dtype=part.dtype)
            hidden[rows, :width] = part
        return hidden

    def _first_step(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, Any]:
        """Encoder, then the first decoder step, which also returns the cross-attention keys/values.

        A batch of mixed lengths runs both per group of similar length (the cross-attention
        projections cost as much per position as an encoder layer); the groups' keys/values are laid
        into one zero-padded batch, which the encoder attention mask hides.

        Returns:
            Decoder outputs by name: ``OrtValue`` for one group, arrays for several.
        """
        lengths = attention_mask.sum(axis=1).tolist()
        groups = encoder_chunks(lengths)
        start = np.full((input_ids.shape[0], 1), self.decoder_start_token_id, dtype=np.int64)
        if len(groups) == 1:
            hidden = self._encode(input_ids, attention_mask)
            io = self.decoder.io_binding()
            io.bind_cpu_input("input_ids", start)
            io.bind_cpu_input("encoder_attention_mask", attention_mask)
            io.bind_ortvalue_input("encoder_hidden_states", hidden)
            for name in self._dec_outputs:
                io.bind_output(name, self._ort_device)
            self.decoder.run_with_iobinding(io)
            return dict(zip(self._dec_outputs, io.get_outputs()))
        batch, width = input_ids.shape
        outputs: dict[str, Any] = {}
        for rows in groups:
            w = max(lengths[i] for i in rows)
            ids = np.ascontiguousarray(input_ids[rows, :w])
            mask = np.ascontiguousarray(attention_mask[rows, :w])
            hidden = self.encoder.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0]
            values = self.decoder.run(self._dec_outputs, {"input_ids": start[rows], "encoder_attention_mask": mask,
                                                          "encoder_hidden_states": hidden})
            for name, value in zip(self._dec_outputs, values):
                cross = ".encoder." in name
                if name not in outputs:
                    shape = list(value.shape)
                    shape[0] = batch
                    if cross:
                        shape[2] = width  # (batch, heads, encoder positions, head dim)
                    outputs[name] = np.zeros(shape, dtype=value.dtype)
                if cross:
                    outputs[name][rows, :, :w] = value
                else:
                    outputs[name][rows] = value
        return outputs

    @staticmethod
    def _bind(io, name: str, value) -> None:
        if isinstance(value, np.ndarray):
            io.bind_cpu_input(name, value)
        else:
            io.bind_ortvalue_input(name, value)

    def _greedy(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_new: int, min_new: int,
                constraint=None) -> np.ndarray:
        batch = input_ids.shape[0]
        outputs = self._first_step(input_ids, attention_mask)
        cross = {n.replace("present", "past_key_values"): v for n, v in outputs.items()
                 if ".encoder." in n and n.replace("present", "past_key_values") in self._past_inputs}
        self_cache = {n.replace("present", "past_key_values"): v for n, v in outputs.items() if ".decoder." in n}
        logits = outputs["logits"]
        logits = (logits if isinstance(logits, np.ndarray) else logits.numpy())[:, -1, :]

        past_io = self.decoder_with_past.io_binding()
        mask = attention_mask
        tokens = np.full((batch, max_new), self.pad_token_id, dtype=np.int64)
        rows = np.arange(batch)  # batch row of each sequence still decoded
        done = np.zeros(batch, dtype=bool)
        rebind = True  # cross-attention keys/values and mask: bound once, again after finished rows leave
        length = 0
        for step in range(max_new):
            if step < min_new:
                logits[:, self.eos_token_id] = -np.inf
            if constraint is not None:
                constraint.mask_numpy(logits, tokens[rows, :step].tolist(), rows)
            nxt = logits.argmax(-1)
            nxt[done] = self.pad_token_id
            tokens[rows, step] = nxt
            length = step + 1
            done |= nxt == self.eos_token_id
            if done.all() or step == max_new - 1:
                break
            if done.sum() * 4 >= len(rows):
                # A quarter of the rows have finished: stop computing them (one copy of the caches).
                keep = ~done
                rows, nxt, done, mask = rows[keep], nxt[keep], done[keep], np.ascontiguousarray(mask[keep])
                cross = {n: self._numpy(v)[keep] for n, v in cross.items()}
                self_cache = {n: self._numpy(v)[keep] for n, v in self_cache.items()}
                past_io.clear_binding_inputs()
                rebind = True
            if rebind:
                past_io.bind_cpu_input("encoder_attention_mask", mask)
                for name, value in cross.items():
                    self._bind(past_io, name, value)
                rebind = False
            step_ids = nxt.reshape(-1, 1).astype(np.int64)
            past_io.bind_cpu_input("input_ids", step_ids)
            for name, value in self_cache.items():
                self._bind(past_io, name, value)
            # Outputs grow by one position per step: let ONNX Runtime allocate them afresh.
            past_io.clear_binding_outputs()
            for name in self._past_outputs:
                past_io.bind_output(name, self._ort_device)
            self.decoder_with_past.run_with_iobinding(past_io)
            step_out = dict(zip(self._past_outputs, past_io.get_outputs()))
            logits = step_out.pop("logits").numpy()[:, -1, :]
            self_cache = {n.replace("present", "past_key_values"): v for n, v in step_out.items()}
        return tokens[:, :length]

    @staticmethod
    def _numpy(value) -> np.ndarray:
        return value if isinstance(value, np.ndarray) else value.numpy()

    # -- beam search: Hugging Face generate over the same sessions ----------------------------
    def _hf(self):
        if self._hf_model is None:
            from optimum.onnxruntime import ORTModelForSeq2SeqLM
            from transformers import GenerationConfig

            config = self.config
            config.use_cache = True
            config.is_encoder_decoder = True
            try:
                gen = GenerationConfig.from_pretrained(self.onnx_dir)
            except OSError:
                gen = GenerationConfig.from_model_config(config)
            gen.use_cache = True
            self._hf_model = ORTModelForSeq2SeqLM(
                config=config, encoder_session=self.encoder, decoder_session=self.decoder,
                decoder_with_past_session=self.decoder_with_past, generation_config=gen,
                use_io_binding=self._ort_device == "cuda", model_save_dir=self.onnx_dir)
        return self._hf_model

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 settings: GenerationSettings) -> torch.Tensor:
        """New tokens for a padded batch: (batch * num_return_sequences, new_len)."""
        if settings.num_beams == 1 and settings.num_return_sequences == 1:
            ids = np.ascontiguousarray(input_ids.numpy(), dtype=np.int64)
            mask = np.ascontiguousarray(attention_mask.numpy(), dtype=np.int64)
            return torch.from_numpy(self._greedy(ids, mask, settings.max_new_tokens, settings.min_new_tokens,
                                                 settings.constraint))
        from transformers.modeling_outputs import BaseModelOutput

        extra = {}
        if settings.constraint is not None:
            from transformers import LogitsProcessorList

            extra["logits_processor"] = LogitsProcessorList([settings.constraint.logits_processor(settings.num_beams)])
        hidden = self._encode(np.ascontiguousarray(input_ids.numpy(), dtype=np.int64),
                              np.ascontiguousarray(attention_mask.numpy(), dtype=np.int64))
        hidden = torch.from_numpy(hidden if isinstance(hidden, np.ndarray) else hidden.numpy())
        with torch.inference_mode():
            out = self._hf().generate(
                input_ids=input_ids, attention_mask=attention_mask,
                encoder_outputs=BaseModelOutput(last_hidden_state=hidden), max_new_tokens=settings.max_new_tokens,
                min_new_tokens=settings.min_new_tokens or None, num_beams=settings.num_beams,
                num_return_sequences=settings.num_return_sequences, do_sample=False, use_cache=True,
                early_stopping=settings.num_beams > 1, **extra)
        return out[:, 1:].cpu()

    def size_bytes(self) -> int:
        return onnx_size_bytes(self.onnx_dir)


def load(model_dir: str | os.PathLike[str], *, precision: str, options: BackendOptions):
    """Load (exporting and quantizing on first use) the ONNX graphs of a model directory.

    Args:
        model_dir: the source model directory.
        precision: ``fp32`` or ``int8``.
        options: threads, device, cache root, INT8 instruction set.

    Returns:
        (OnnxBackend, tokenizer).

    Raises:
        ValueError: unknown precision.
    """
    from transformers import AutoTokenizer

    onnx_dir = ensure_onnx(model_dir, precision, onnx_dir=options.onnx_dir, isa=options.int8_isa,
                           per_channel=options.per_channel)
    tokenizer = AutoTokenizer.from_pretrained(onnx_dir)
    info: dict[str, Any] = {"precision": precision, "onnx_dir": str(onnx_dir)}
    if precision == "int8":
        import json

        manifest = json.loads((Path(onnx_dir) / "t2sql_onnx.json").read_text())
        info.update(isa=manifest.get("isa"), per_channel=manifest.get("per_channel"))
    return OnnxBackend(Path(onnx_dir), tokenizer, options, info), tokenizer
