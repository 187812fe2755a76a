"""The answering model: lazy loading, one load per model directory, reload on promotion, the real tiny model."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from t2sql.registry import Registry
from webui import create_app
from webui.testing import LookupTranslator, app_settings, make_registry
from webui.translators import ModelUnavailable, TranslatorPool


class CountingFactory:
    def __init__(self, delay_s: float = 0.0):
        self.loads: list[str] = []
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def __call__(self, model_dir):
        time.sleep(self.delay_s)  # a slow load: concurrent requests must wait for it, not repeat it
        with self._lock:
            self.loads.append(Path(model_dir).parent.name)
        return LookupTranslator(name=Path(model_dir).parent.name)


def test_models_load_lazily_once_and_follow_the_champion(tmp_path):
    reg = make_registry(tmp_path / "runs", with_model=False)
    factory = CountingFactory()
    pool = TranslatorPool(reg.root, factory=factory, check_every_s=0)
    assert pool.current().label == "run-a" and factory.loads == []  # nothing loaded until asked
    ctx = "CREATE TABLE list (x TEXT)"
    assert pool.translate("How many students are there?", ctx)[2] == "run-a"
    pool.translate("Another question?", ctx)
    assert factory.loads == ["run-a"]
    reg.promote("run-b", reason="test", by="test")
    sql, ms, label = pool.translate("How many students are there?", ctx)
    assert label == "run-b" and factory.loads == ["run-a", "run-b"]
    reg.promote("run-a", reason="back", by="test")
    assert pool.translate("q", ctx)[2] == "run-a" and factory.loads == ["run-a", "run-b"]  # still cached


def test_the_registry_is_looked_at_again_after_the_interval_or_an_invalidation(tmp_path):
    reg = make_registry(tmp_path / "runs", with_model=False)
    pool = TranslatorPool(reg.root, factory=CountingFactory(), check_every_s=60)
    assert pool.translate("q", "CREATE TABLE t (x)")[2] == "run-a"
    reg.promote("run-b", reason="elsewhere", by="test")
    assert pool.translate("q", "CREATE TABLE t (x)")[2] == "run-a"  # not looked at again within the interval
    pool.invalidate()
    assert pool.translate("q", "CREATE TABLE t (x)")[2] == "run-b"


def test_concurrent_first_requests_load_the_model_once(tmp_path):
    reg = make_registry(tmp_path / "runs", with_model=False)
    factory = CountingFactory(delay_s=0.2)
    pool = TranslatorPool(reg.root, factory=factory)
    labels, errors = [], []

    def ask():
        try:
            labels.append(pool.translate("How many students are there?", "CREATE TABLE list (x TEXT)")[2])
        except Exception as exc:  # collected, so the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and labels == ["run-a"] * 12 and factory.loads == ["run-a"]


class BatchTranslator:
    """Has a batch ``translate``: records the size of each generate call."""

    def __init__(self, fail: bool = False):
        self.batches: list[int] = []
        self.fail = fail

    def translate(self, pairs):
        time.sleep(0.15)  # one "generate call"; questions arriving meanwhile wait for the next one
        self.batches.append(len(pairs))
        if self.fail:
            raise RuntimeError("generation failed")
        return [f"SELECT '{q}' FROM {c.split()[2]}" for q, c in pairs]


def test_concurrent_questions_are_translated_in_batches(tmp_path):
    reg = make_registry(tmp_path / "runs", with_model=False)
    model = BatchTranslator()
    pool = TranslatorPool(reg.root, factory=lambda d: model)
    answers: dict[int, str] = {}

    def ask(i):
        answers[i] = pool.translate(f"question {i}", f"CREATE TABLE t{i} (x TEXT)")[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == {i: f"SELECT 'question {i}' FROM t{i}" for i in range(12)}  # each gets its own SQL
    assert sum(model.batches) == 12 and max(model.batches) > 1 and len(model.batches) < 12


def test_a_failing_batch_fails_every_question_in_it(tmp_path):
    reg = make_registry(tmp_path / "runs", with_model=False)
    pool = TranslatorPool(reg.root, factory=lambda d: BatchTranslator(fail=True))
    with pytest.raises(RuntimeError, match="generation failed"):
        pool.translate("q", "CREATE TABLE t (x)")


def test_cache_keeps_at_most_max_models(tmp_path):
    runs = {f"run-{c}": {"execution_accuracy": 0.1} for c in "abc"}
    reg = make_registry(tmp_path / "runs", runs=runs, with_model=False)
    pool = TranslatorPool(reg.root, factory=CountingFactory(), max_models=2, check_every_s=0)
    for run in ("run-a", "run-b", "run-c"):
        reg.promote(run, reason="t", by="t")
        pool.translate("q", "CREATE TABLE t (x)")
    assert [Path(p).parent.name for p in pool.loaded()] == ["run-b", "run-c"]


def test_no_champion_and_bad_references(tmp_path):
    reg = make_registry(tmp_path / "runs", with_model=False, champion=None)
    with pytest.raises(ModelUnavailable, match="no champion"):
        TranslatorPool(reg.root, factory=CountingFactory()).current()
    with pytest.raises(ModelUnavailable, match="neither a registered run"):
        TranslatorPool(reg.root, model_ref="run:nope", factory=CountingFactory()).current()
    direct = TranslatorPool(reg.root, model_ref="run:run-b", factory=CountingFactory())
    assert direct.current().label == "run-b"


def test_a_failing_model_load_is_reported(tmp_path):
    reg = make_registry(tmp_path / "runs", with_model=False)

    def broken(model_dir):
        raise OSError("weights missing")

    with pytest.raises(ModelUnavailable, match="failed to load: OSError: weights missing"):
        TranslatorPool(reg.root, factory=broken).translate("q", "CREATE TABLE t (x)")


def test_the_real_tiny_model_answers_through_the_app(tmp_path):
    """The default factory: t2sql.inference.Translator over a tiny T5 saved in the registry."""
    import torch

    make_registry(tmp_path / "runs")
    threads = torch.get_num_threads()
    app = create_app(app_settings(tmp_path, TRANSLATOR_FACTORY=None, TRANSLATOR_MAX_NEW_TOKENS=16,
                                  TRANSLATOR_THREADS=1))
    try:
        _ask_the_real_model(app, tmp_path)
    finally:
        torch.set_num_threads(threads)  # the Translator set one thread for the whole process


def _ask_the_real_model(app, tmp_path):
    client = app.test_client()
    r = client.post("/api/translate", json={"question": "How many students are there?", "database": "student_1"})
    assert r.status_code == 200
    assert r.json["model"] == "run-a" and isinstance(r.json["sql"], str) and r.json["cached"] is False
    from t2sql.inference.translator import Translator

    pool = app.extensions["t2sql.answers"].translators
    assert [type(t) for t in pool._models.values()] == [Translator]
    # The page shows the model's SQL in the editor; re-running edited SQL gives rows whatever the model wrote.
    loc = client.post("/ask", data={"question": "How many teachers are there?", "database": "student_1"}).headers[
        "Location"]
    page = client.get(loc, query_string={"sql": "SELECT count(*) FROM teachers"}).get_data(as_text=True)
    assert "<td class=\"num\">12</td>" in page
    Registry(tmp_path / "runs").promote("run-b", reason="newer", by="test")
    r = client.post("/api/translate", json={"question": "How many students are there?", "database": "student_1"})
    assert r.json["model"] == "run-b"


def test_a_model_trained_with_question_values_reads_them_from_the_asked_database(tmp_path):
    from t2sql.prompt import PROMPT_FILE, PromptOptions

    reg = make_registry(tmp_path / "runs", with_model=False)
    opts = PromptOptions(format="linked", placeholders=True, link_marks=True, question_values=True)
    (reg.root / "run-a" / "model" / PROMPT_FILE).write_text(opts.model_dump_json())
    contexts: list[str] = []

    class Recording(LookupTranslator):
        def translate_one(self, question, context):
            contexts.append(context)
            return super().translate_one(question, context)

    app = create_app(app_settings(tmp_path, TRANSLATOR_FACTORY=Recording.factory()))
    client = app.test_client()
    question = "Which classroom is the student Stormy Kristensen in?"
    r = client.post("/api/translate", json={"question": question, "database": "student_1"})
    assert r.status_code == 200 and r.json["model"] == "run-a"
    assert "LastName TEXT /* 'KRISTENSEN' */" in contexts[-1]
    assert "FirstName TEXT /* 'STORMY' */" in contexts[-1]
    # run-b was trained without them: it reads the schema alone
    Registry(tmp_path / "runs").promote("run-b", reason="test", by="test")
    client.post("/api/translate", json={"question": question, "database": "student_1"})
    assert "/*" not in contexts[-1]
