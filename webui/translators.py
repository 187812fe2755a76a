"""The model that answers: the registry's champion, reloaded when a new one is promoted.

Every request stats the registry index; when its modification time, size or inode change the
champion is looked up again. Translators are loaded lazily and cached per model directory (the
most recent ``max_models``). One generate call runs at a time per model; questions that arrive
while it runs are translated together in the next batch (a translator with a batch
``translate(pairs)`` method), so concurrent users share the model instead of queueing one by one.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from t2sql.prompt import load_prompt_options
from t2sql.registry import Registry, RegistryError


class SupportsTranslateOne(Protocol):
    def translate_one(self, question: str, context: str) -> tuple[str, float]: ...


class ModelUnavailable(RuntimeError):
    """No model can answer: the registry has no champion, or the reference does not resolve."""


@dataclass(frozen=True)
class ModelChoice:
    """The model answering now: a label (run id) and its directory."""

    label: str
    model_dir: Path
    with_types: bool = True
    sample_values: int = 0
    question_values: bool = False  # the model reads the values each question names (prompt.question_values)


def _context_settings(model_dir: Path) -> tuple[bool, int]:
    """How the model's training contexts were written (``data.with_types``, ``data.sample_values``).

    Read from the run's ``config.yaml`` beside ``model/``; defaults when it is missing.
    """
    cfg = model_dir.parent / "config.yaml"
    if not cfg.is_file():
        return True, 0
    try:
        data = (yaml.safe_load(cfg.read_text()) or {}).get("data") or {}
        return bool(data.get("with_types", True)), int(data.get("sample_values", 0) or 0)
    except (yaml.YAMLError, AttributeError, TypeError, ValueError):
        return True, 0


class _Pending:
    """One question waiting for its batch."""

    __slots__ = ("question", "context", "done", "result", "error")

    def __init__(self, question: str, context: str):
        self.question, self.context = question, context
        self.done = threading.Event()
        self.result: tuple[str, float] | None = None
        self.error: BaseException | None = None


class _Batcher:
    """A worker thread that feeds a translator's ``translate(pairs)`` with every question waiting.

    Args:
        translator: has ``translate(list of (question, context)) -> list of SQL``.
        max_batch: questions per generate call at most.
    """

    def __init__(self, translator: Any, max_batch: int = 16):
        self.translator = translator
        self.max_batch = max_batch
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._closed = False
        self._submit_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="t2sql-batcher", daemon=True)
        self._thread.start()

    def submit(self, question: str, context: str) -> tuple[str, float]:
        """(SQL, model milliseconds of its batch); the translator's exception is raised here."""
        item = _Pending(question, context)
        with self._submit_lock:
            closed = self._closed
            if not closed:
                self._queue.put(item)
        if closed:  # the model was evicted while this request held it: translate alone
            t0 = time.perf_counter()
            sql = self.translator.translate([(question, context)])[0]
            return sql, (time.perf_counter() - t0) * 1000.0
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result

    def stop(self) -> None:
        """Finish the questions already queued, then end the thread."""
        with self._submit_lock:
            self._closed = True
            self._queue.put(None)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            t0 = time.perf_counter()
            try:
                sqls = self.translator.translate([(p.question, p.context) for p in batch])
                ms = (time.perf_counter() - t0) * 1000.0
                for p, sql in zip(batch, sqls, strict=True):
                    p.result = (sql, ms)
            except BaseException as exc:  # handed to every waiting request
                for p in batch:
                    p.error = exc
            finally:
                for p in batch:
                    p.done.set()


class TranslatorPool:
    """Thread-safe access to the current model.

    Args:
        registry_root: registry directory.
        model_ref: ``champion``, ``run:<id>``, a run id or a model directory.
        factory: ``factory(model_dir) -> translator``; default builds a :class:`t2sql.inference.Translator`.
        threads: intra-op threads for the default factory.
        max_new_tokens: generation cap for the default factory.
        max_models: translators kept loaded at once.
    """

    def __init__(self, registry_root: str | os.PathLike[str], model_ref: str = "champion", *,
                 factory: Callable[[Path], SupportsTranslateOne] | None = None, threads: int | None = None,
                 max_new_tokens: int = 128, max_models: int = 2, check_every_s: float = 1.0):
        self.registry = Registry(registry_root)
        self.check_every_s = check_every_s
        self.model_ref = model_ref
        self.factory = factory or self._default_factory
        self.threads = threads
        self.max_new_tokens = max_new_tokens
        self.max_models = max(1, max_models)
        self._lock = threading.Lock()
        self._signature: Any = object()
        self._checked: tuple[float, Any] | None = None
        self._choice: ModelChoice | None = None
        self._error: str | None = None
        self._models: OrderedDict[str, SupportsTranslateOne] = OrderedDict()
        self._load_locks: dict[str, threading.Lock] = {}
        self._run_locks: dict[str, threading.Lock] = {}
        self._batchers: dict[str, _Batcher] = {}
        self.max_batch = 16

    def _default_factory(self, model_dir: Path) -> SupportsTranslateOne:
        from t2sql.inference.translator import Translator

        return Translator(model_dir, num_threads=self.threads, max_new_tokens=self.max_new_tokens)

    def invalidate(self) -> None:
        """Look at the registry again on the next question (a promotion made in this process)."""
        with self._lock:
            self._checked = None

    def _index_signature(self) -> Any:
        """(champion version, number of versions) of the registry, looked up at most every ``check_every_s``."""
        now = time.monotonic()
        with self._lock:
            if self._checked is not None and now - self._checked[0] < self.check_every_s:
                return self._checked[1]
        try:
            sig = self.registry.signature()
        except Exception as exc:  # noqa: BLE001 - an unreachable tracking server: answer from the model in hand
            sig = ("unreadable", str(exc)[:200])
        with self._lock:
            self._checked = (now, sig)
        return sig

    def _resolve(self) -> ModelChoice:
        try:
            model_dir = self.registry.resolve(self.model_ref)
        except RegistryError as exc:
            raise ModelUnavailable(str(exc)) from None
        ref = self.model_ref[4:] if self.model_ref.startswith("run:") else self.model_ref
        if self.model_ref in ("champion", "run:champion"):
            label = self.registry.champion() or model_dir.parent.name
        elif not Path(ref).is_dir():
            label = ref  # a registered run id
        elif model_dir.name == "model":
            label = model_dir.parent.name
        else:
            label = model_dir.name
        with_types, samples = _context_settings(model_dir)
        try:
            values = load_prompt_options(model_dir).reads_database
        except (OSError, ValueError):
            values = False
        return ModelChoice(label, model_dir.resolve(), with_types, samples, values)

    def current(self) -> ModelChoice:
        """The model that answers now, re-read when the registry index changed.

        Raises:
            ModelUnavailable: no champion, or the reference does not resolve.
        """
        sig = self._index_signature()
        with self._lock:
            if sig == self._signature:
                if self._choice is None:
                    raise ModelUnavailable(self._error or "no model")
                return self._choice
        try:
            choice, error = self._resolve(), None
        except ModelUnavailable as exc:
            choice, error = None, str(exc)
        with self._lock:
            self._signature, self._choice, self._error = sig, choice, error
        if choice is None:
            raise ModelUnavailable(error)
        return choice

    def _translator(self, choice: ModelChoice) -> SupportsTranslateOne:
        key = str(choice.model_dir)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:  # one load per model directory, other requests wait for it
            with self._lock:
                if key in self._models:
                    return self._models[key]
            try:
                translator = self.factory(choice.model_dir)
            except Exception as exc:
                raise ModelUnavailable(f"model {choice.label} ({choice.model_dir}) failed to load: "
                                       f"{type(exc).__name__}: {exc}") from exc
            with self._lock:
                self._models[key] = translator
                self._run_locks.setdefault(key, threading.Lock())
                if callable(getattr(translator, "translate", None)):
                    self._batchers[key] = _Batcher(translator, self.max_batch)
                while len(self._models) > self.max_models:
                    old, _ = self._models.popitem(last=False)
                    self._load_locks.pop(old, None)
                    batcher = self._batchers.pop(old, None)
                    if batcher is not None:
                        batcher.stop()
        return translator

    def translate(self, question: str, context: str, choice: ModelChoice | None = None) -> tuple[str, float, str]:
        """SQL for one question with the current model.

        Args:
            question: the user's question.
            context: CREATE TABLE statements of the database.
            choice: the model to use (default: :meth:`current`).

        Returns:
            (sql, model latency in ms, model label).

        Raises:
            ModelUnavailable: no model can be loaded.
        """
        choice = choice or self.current()
        translator = self._translator(choice)
        key = str(choice.model_dir)
        with self._lock:
            batcher = self._batchers.get(key)
            run_lock = self._run_locks.setdefault(key, threading.Lock())
        if batcher is not None:
            sql, ms = batcher.submit(question, context)
        else:
            with run_lock:
                sql, ms = translator.translate_one(question, context)
        return sql, float(ms), choice.label

    def loaded(self) -> list[str]:
        """Model directories currently loaded, oldest first."""
        with self._lock:
            return list(self._models)
