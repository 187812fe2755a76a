"""Turn questions into SQL with a trained model, on any backend, in length-bucketed batches.

    from t2sql.inference import Translator
    tr = Translator.load("champion", backend="onnx-int8")
    tr.translate([("How many singers are there?", "CREATE TABLE singer (singer_id number, name text)")])

Backends (see :mod:`t2sql.inference.backends`): ``torch-fp32`` (alias ``torch``), ``torch-amp``,
``torch-bf16``, ``torch-int8``, ``onnx-fp32`` (alias ``onnx``), ``onnx-int8``, ``bitnet``. Every one
goes through the same tokenisation, batching, decoding settings and post-processing, so their
outputs and timings compare like for like.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from t2sql.inference.backends import (BackendOptions, GenerationSettings, canonical_backend, encoder_chunks,
                                      load_backend)
from t2sql.hardware import pick_device, set_threads
from t2sql.prompt import PromptOptions, build_sources, load_prompt_options, postprocess, question_context

log = logging.getLogger(__name__)

#: Beams searched by execution-guided decoding when the translator itself is greedy.
GUIDED_DEFAULT_BEAMS = 4

Pair = tuple[str, str] | tuple[str, str, str | None]


class Translator:
    """A seq2seq model that writes SQL for (question, context) pairs.

    Args:
        model_dir: directory holding the model and its tokenizer.
        backend: inference backend name (see the module docstring); a wrong name is refused with the
            list of valid ones.
        num_threads: intra-op threads (default: the machine's physical cores).
        num_beams: 1 for greedy decoding, more for beam search.
        max_new_tokens: generation cap.
        min_new_tokens: generate at least this many tokens (benchmarks pin the length with
            ``min_new_tokens == max_new_tokens``).
        batch_size: most questions per generate call; inputs are sorted by token length first so each
            batch pads little.
        padding_slack: a batch whose padded size would exceed its real tokens by more than this share
            is split into groups of similar length (every decoding step reads each row's padded
            cross-attention cache, so a 432-token input in a batch of 140-token ones costs the whole
            batch); None keeps batches whole.
        max_source_length: inputs are truncated to this many tokens.
        device: ``auto`` (a GPU when present), ``cpu`` or ``cuda``.
        execution_guided: answer with the first beam candidate that runs on the question's database
            (or on an empty database built from the schema); searches ``num_beams`` beams, or
            :data:`GUIDED_DEFAULT_BEAMS` when ``num_beams`` is 1.
        guided_timeout_s: time limit of each candidate's execution.
        db_resolver: ``(question, context) -> db_path | None``, for pairs given without a database
            path: execution-guided decoding runs candidates there, and a prompt with
            ``question_values`` reads the values the question names from it.
        onnx_dir: cache root of ONNX artefacts (default: next to the model, ``<model_dir>/../onnx/``).
        int8_isa: instruction set ONNX INT8 is quantized for (``auto``: read from the CPU flags).
        per_channel: ONNX INT8 per-channel weight scales.
        spinning: let ONNX Runtime's idle threads spin (lower latency on an otherwise idle machine).
            PyTorch's OpenMP threads follow ``OMP_WAIT_POLICY``, read once when torch is loaded.
        constrained: constrained decoding (:mod:`t2sql.inference.constrained`): each step keeps only
            tokens that leave the output a valid query prefix over the question's own schema, and
            ends only on a query that parses; greedy and beam search, every backend.

    Raises:
        ValueError: unknown backend or a model the backend cannot serve.
    """

    def __init__(self, model_dir: str | os.PathLike[str], backend: str = "torch", *, num_threads: int | None = None,
                 num_beams: int = 1, max_new_tokens: int = 128, min_new_tokens: int = 0, batch_size: int = 16,
                 max_source_length: int = 512, device: str = "auto", execution_guided: bool = False,
                 guided_timeout_s: float = 2.0, db_resolver: Callable[[str, str], str | None] | None = None,
                 onnx_dir: str | os.PathLike[str] | None = None, int8_isa: str = "auto", per_channel: bool = True,
                 spinning: bool = False, padding_slack: float | None = 0.5, constrained: bool = False):
        self.backend = canonical_backend(backend)
        if num_beams < 1 or max_new_tokens < 1 or batch_size < 1:
            raise ValueError(f"num_beams ({num_beams}), max_new_tokens ({max_new_tokens}) and batch_size "
                             f"({batch_size}) must be at least 1")
        self.model_dir: Path | None = Path(model_dir)
        self.prompt = load_prompt_options(self.model_dir)  # the input/output format it was trained with
        self.num_beams = num_beams
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min(min_new_tokens, max_new_tokens)
        self.batch_size = batch_size
        self.padding_slack = padding_slack
        self.max_source_length = max_source_length
        self.execution_guided = execution_guided
        self.guided_timeout_s = guided_timeout_s
        self.db_resolver = db_resolver
        self.constrained = constrained
        self.threads = set_threads(num_threads)
        self.device = pick_device(device)
        options = BackendOptions(device=self.device, num_threads=self.threads, onnx_dir=onnx_dir, int8_isa=int8_isa,
                                 per_channel=per_channel, spinning=spinning)
        self.engine, self.tokenizer = load_backend(self.backend, self.model_dir, options)
        self.device = self.engine.device
        self.last_guided_stats: dict[str, int] | None = None
        self.guided_totals: dict[str, int] = {}
        #: Constrained decoding, summed over calls: rows x steps checked, candidates checked, fallbacks.
        self.constraint_totals: dict[str, int] = {}

    @classmethod
    def from_model(cls, model, tokenizer, prompt: PromptOptions | None = None, *, batch_size: int = 32,
                   max_new_tokens: int = 128, max_source_length: int = 512, num_beams: int = 1,
                   constrained: bool = False) -> "Translator":
        """A translator over a model in memory, decoding exactly as a served one does.

        Validation during training and iterative refinement's scoring use it: the same inputs,
        batching, generation and post-processing as the served model, without saving it first.
        The model is decoded where it is, under ``no_grad`` (training goes on with the same modules);
        the caller puts it in eval mode.

        Args:
            model: a seq2seq model (possibly wrapped by a technique).
            tokenizer: its tokenizer.
            prompt: the prompt format it is trained with (None: the plain format).
            batch_size, max_new_tokens, max_source_length, num_beams, constrained: decoding settings.
        """
        from t2sql.inference.backends.torch_backend import TorchBackend

        self = cls.__new__(cls)
        self.backend = "torch-fp32"
        self.model_dir = None
        self.prompt = prompt
        self.num_beams, self.max_new_tokens, self.min_new_tokens = num_beams, max_new_tokens, 0
        self.batch_size, self.padding_slack, self.max_source_length = batch_size, 0.5, max_source_length
        self.execution_guided, self.guided_timeout_s, self.db_resolver = False, 2.0, None
        self.constrained = constrained
        self.threads = torch.get_num_threads()
        self.device = next(model.parameters()).device
        self.engine = TorchBackend(model, tokenizer, self.device, None, 0,
                                   {"engine": "torch", "precision": "fp32", "device": str(self.device),
                                    "threads": self.threads}, in_training=True)
        self.tokenizer = tokenizer
        self.last_guided_stats, self.guided_totals, self.constraint_totals = None, {}, {}
        return self

    @classmethod
    def load(cls, ref: str, registry_root: str | os.PathLike[str] = "runs", **kwargs) -> "Translator":
        """Load a registered run (``champion``, ``run:<id>``, a run id) or a model directory.

        Args:
            ref: the run reference or directory.
            registry_root: the registry directory.
            **kwargs: passed to :class:`Translator` (``backend=``, ``num_beams=``, ...).

        Raises:
            t2sql.registry.RegistryError: nothing matches ``ref``.
        """
        from t2sql.registry import Registry

        return cls(Registry(registry_root).resolve(ref), **kwargs)

    @property
    def info(self) -> dict[str, Any]:
        """Backend, precision, device, threads and decoding settings, for reports."""
        return {**self.engine.info, "backend": self.backend, "num_beams": self.num_beams,
                "batch_size": self.batch_size, "execution_guided": self.execution_guided,
                "constrained": self.constrained}

    def size_bytes(self) -> int:
        """Bytes of the weights as this backend serves them (files, or the quantized state in memory)."""
        return self.engine.size_bytes()

    # -- token level --------------------------------------------------------------------------
    def encode(self, sources: Sequence[str]) -> list[list[int]]:
        """Token ids of each model input, truncated to ``max_source_length``."""
        return self.tokenizer(list(sources), truncation=True, max_length=self.max_source_length)["input_ids"]

    def _pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def generate_ids(self, sources: Sequence[str], num_return_sequences: int = 1,
                     num_beams: int | None = None, schemas: Sequence[Any] | None = None) -> list[list[list[int]]]:
        """Generated token ids for each source, in input order, up to and including end-of-sequence.

        Sources are sorted by token length and generated ``batch_size`` at a time.

        Args:
            sources: model inputs.
            num_return_sequences: sequences returned per source.
            num_beams: beams (default: the translator's).
            schemas: with constrained decoding, what each source's output may name
                (:class:`t2sql.inference.constrained.RowSchema`); default: read from the sources.

        Returns:
            For each source, ``num_return_sequences`` id lists, best first.
        """
        beams = max(num_beams or self.num_beams, num_return_sequences)
        settings = GenerationSettings(num_beams=beams, num_return_sequences=num_return_sequences,
                                      max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens)
        encoded = self.encode(sources)
        if self.constrained and schemas is None:
            from t2sql.inference.constrained import RowSchema

            schemas = [RowSchema.from_source(s, self.prompt) for s in sources]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[list[list[int]]] = [[] for _ in encoded]
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            for group in self._split(batch, [len(encoded[i]) for i in batch]):
                ids, mask = self._pad([encoded[i] for i in group])
                step = settings
                if self.constrained:
                    from t2sql.inference.constrained import SQLConstraint

                    step = dataclasses.replace(settings, constraint=SQLConstraint(
                        self.tokenizer, [schemas[i] for i in group], eos_token_id=self.engine.eos_token_id))
                out = [self._trim(row) for row in self.engine.generate(ids, mask, step).tolist()]
                if step.constraint is not None:
                    for key, value in step.constraint.stats.items():
                        self.constraint_totals[key] = self.constraint_totals.get(key, 0) + value
                for j, i in enumerate(group):
                    results[i] = out[j * num_return_sequences:(j + 1) * num_return_sequences]
        return results

    def _split(self, batch: list[int], lengths: list[int]) -> list[list[int]]:
        """A length-sorted batch, split where padding would exceed ``padding_slack`` of the real tokens."""
        if self.padding_slack is None or len(batch) == 1:
            return [batch]
        return [[batch[k] for k in group] for group in encoder_chunks(lengths, self.padding_slack)]

    def _trim(self, ids: list[int]) -> list[int]:
        """Drop the padding after the end-of-sequence token (batches pad to their longest output)."""
        eos = self.tokenizer.eos_token_id
        return ids[:ids.index(eos) + 1] if eos in ids else ids

    # -- SQL level ----------------------------------------------------------------------------
    def _decode(self, ids: list[int], question: str = "", context: str = "") -> str:
        return postprocess(self.tokenizer.decode(ids, skip_special_tokens=True), question, context, self.prompt)

    def translate(self, pairs: Sequence[Pair], num_candidates: int = 1,
                  db_paths: Sequence[str | None] | None = None) -> list[str] | list[list[str]]:
        """SQL for each (question, context) pair, in input order.

        Args:
            pairs: ``(question, context)`` or ``(question, context, db_path)`` tuples.
            num_candidates: with more than 1, a list of that many beam candidates per pair, best
                first (with execution-guided decoding, the picked one first).
            db_paths: the SQLite file of each pair (overrides a path in the tuple), for
                execution-guided decoding and a prompt with ``question_values``.

        Returns:
            One SQL string per pair, or one list of candidates per pair.

        Raises:
            ValueError: ``db_paths`` has a different length than ``pairs``.
        """
        if db_paths is not None and len(db_paths) != len(pairs):
            raise ValueError(f"db_paths has {len(db_paths)} entries for {len(pairs)} pairs")
        if self.prompt is not None and self.prompt.reads_database:
            pairs = [self._with_values(k, pair, db_paths) for k, pair in enumerate(pairs)]
        sources = self.sources(pairs)
        schemas = self._schemas(pairs, sources)
        if not self.execution_guided:
            beams = max(self.num_beams, num_candidates)
            ids = self._generate(sources, num_candidates, beams, schemas)
            texts = [[self._decode(c, p[0], p[1]) for c in cands] for p, cands in zip(pairs, ids)]
            return [t[0] for t in texts] if num_candidates == 1 else texts
        return self._translate_guided(pairs, sources, num_candidates, db_paths, schemas)

    def _generate(self, sources: list[str], num_return_sequences: int, num_beams: int,
                  schemas: list[Any] | None) -> list[list[list[int]]]:
        """:meth:`generate_ids`, given the schemas only when decoding is constrained."""
        if schemas is None:
            return self.generate_ids(sources, num_return_sequences, num_beams)
        return self.generate_ids(sources, num_return_sequences, num_beams, schemas)

    def _schemas(self, pairs: Sequence[Pair], sources: list[str]) -> list[Any] | None:
        """With constrained decoding, what each pair's output may name (from its question, context and input)."""
        if not self.constrained:
            return None
        from t2sql.inference.constrained import RowSchema

        return [RowSchema.for_pair(p[0], p[1], s, self.prompt) for p, s in zip(pairs, sources)]

    def _db_path(self, k: int, pair: Pair, db_paths: Sequence[str | None] | None) -> str | None:
        if db_paths is not None:
            return db_paths[k]
        if len(pair) > 2 and pair[2]:
            return pair[2]
        return self.db_resolver(pair[0], pair[1]) if self.db_resolver is not None else None

    def _with_values(self, k: int, pair: Pair, db_paths: Sequence[str | None] | None) -> Pair:
        """The pair with the values of its database that the question names written into its context."""
        db_path = self._db_path(k, pair, db_paths)
        return (pair[0], question_context(pair[0], pair[1], db_path, self.prompt), db_path)

    def sources(self, pairs: Sequence[Pair]) -> list[str]:
        """The model inputs of (question, context, ...) pairs, in the format the model was trained on."""
        return build_sources([(p[0], p[1]) for p in pairs], self.prompt)

    def _translate_guided(self, pairs: Sequence[Pair], sources: list[str], num_candidates: int,
                          db_paths: Sequence[str | None] | None,
                          schemas: list[Any] | None = None) -> list[str] | list[list[str]]:
        from t2sql.inference.execution_guided import ExecutionChecker, GuidedStats, pick_runnable

        beams = max(self.num_beams if self.num_beams > 1 else GUIDED_DEFAULT_BEAMS, num_candidates)
        ids = self._generate(sources, beams, beams, schemas)
        checker, stats = ExecutionChecker(self.guided_timeout_s), GuidedStats()
        results: list = []
        try:
            for k, (pair, cands) in enumerate(zip(pairs, ids)):
                question, context = pair[0], pair[1]
                db_path = self._db_path(k, pair, db_paths)
                texts = [self._decode(c, question, context) for c in cands]
                best = pick_runnable(texts, db_path, context, checker, stats)
                ordered = [texts[best]] + texts[:best] + texts[best + 1:]
                results.append(ordered[0] if num_candidates == 1 else ordered[:num_candidates])
        finally:
            checker.close()
        self.last_guided_stats = stats.as_dict()
        for key, value in self.last_guided_stats.items():
            self.guided_totals[key] = self.guided_totals.get(key, 0) + value
        return results

    def translate_one(self, question: str, context: str, db_path: str | None = None) -> tuple[str, float]:
        """(SQL, latency in milliseconds) for one question."""
        t0 = time.perf_counter()
        sql = self.translate([(question, context, db_path)])[0]
        return sql, (time.perf_counter() - t0) * 1000.0
