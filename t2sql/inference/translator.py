"""Turn questions into SQL with a trained model, in length-bucketed batches.

    from t2sql.inference import Translator
    tr = Translator.load("champion")
    tr.translate([("How many singers are there?", "CREATE TABLE singer (singer_id number, name text)")])
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from t2sql.modeling import load_model, pick_device, set_threads
from t2sql.prompt import build_source, postprocess


class Translator:
    """A seq2seq model that writes SQL for (question, context) pairs.

    Args:
        model_dir: directory holding the model and its tokenizer.
        backend: inference backend name.
        num_threads: intra-op threads (default: the machine's physical cores).
        num_beams: 1 for greedy decoding, more for beam search.
        max_new_tokens: generation cap.
        batch_size: questions per generate call; inputs are sorted by length first.
    """

    def __init__(self, model_dir: str | os.PathLike[str], backend: str = "torch", *, num_threads: int | None = None,
                 num_beams: int = 1, max_new_tokens: int = 128, batch_size: int = 16, max_source_length: int = 512,
                 device: str = "auto"):
        self.model_dir = Path(model_dir)
        self.backend = backend
        self.num_beams = num_beams
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.max_source_length = max_source_length
        self.threads = set_threads(num_threads)
        self.device = pick_device(device)
        self.model, self.tokenizer = load_model(self.model_dir, self.device)

    @classmethod
    def load(cls, ref: str, registry_root: str | os.PathLike[str] = "runs", **kwargs) -> "Translator":
        """Load a registered run (``champion``, ``run:<id>``, a run id) or a model directory."""
        from t2sql.registry import Registry

        return cls(Registry(registry_root).resolve(ref), **kwargs)

    @torch.inference_mode()
    def _generate(self, sources: list[str], num_return_sequences: int = 1) -> list[str]:
        enc = self.tokenizer(sources, return_tensors="pt", padding=True, truncation=True,
                             max_length=self.max_source_length).to(self.device)
        out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, num_beams=max(self.num_beams,
                                  num_return_sequences), num_return_sequences=num_return_sequences,
                                  do_sample=False, use_cache=True)
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)

    def translate(self, pairs: Sequence[tuple[str, str]], num_candidates: int = 1) -> list[str] | list[list[str]]:
        """SQL for each (question, context) pair, in input order.

        With ``num_candidates`` > 1, a list of that many beam candidates per pair, best first.
        """
        sources = [build_source(q, c) for q, c in pairs]
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        results: list = [None] * len(sources)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            texts = self._generate([sources[i] for i in idx], num_candidates)
            for j, i in enumerate(idx):
                if num_candidates == 1:
                    results[i] = postprocess(texts[j])
                else:
                    results[i] = [postprocess(t) for t in texts[j * num_candidates:(j + 1) * num_candidates]]
        return results

    def translate_one(self, question: str, context: str) -> tuple[str, float]:
        """(SQL, latency in milliseconds) for one question."""
        t0 = time.perf_counter()
        sql = self.translate([(question, context)])[0]
        return sql, (time.perf_counter() - t0) * 1000.0
