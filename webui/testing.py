"""Helpers for the GUI's tests, load benchmark and screenshots: a tiny registered model and a
deterministic translator that can be injected through ``TRANSLATOR_FACTORY``.

    from webui.testing import make_registry, LookupTranslator
    make_registry("/tmp/reg")                                   # two runs of a tiny random T5, one champion
    app = create_app({"REGISTRY_ROOT": "/tmp/reg", "TRANSLATOR_FACTORY": LookupTranslator.factory()})

The tiny model is untrained, so its SQL is garbage; it exercises the real loading and generation
path. :class:`LookupTranslator` answers known Spider sample questions with their gold SQL.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import tempfile
import time
import zlib
from pathlib import Path

import yaml

from t2sql.registry import Registry
from webui import PROJECT_ROOT
from webui.store import normalise_question

SPIDER_SAMPLE = PROJECT_ROOT / "data" / "spider_sample"
_FIRST_TABLE = re.compile(r"CREATE TABLE\s+(\"[^\"]+\"|\S+)", re.IGNORECASE)
_TABLE_REF = re.compile(r"\b(?:FROM|JOIN)\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def spider_examples() -> tuple[tuple[str, str, str], ...]:
    """(db_id, question, gold SQL) of the Spider sample."""
    data = json.loads((SPIDER_SAMPLE / "train_spider.json").read_text())
    return tuple((d["db_id"], d["question"], d["query"]) for d in data)


class LookupTranslator:
    """Gold SQL for questions of the Spider sample; for other questions a naive guess on the first
    table: ``SELECT count(*) FROM t`` for "how many", else ``SELECT <last word> FROM t`` (which
    usually fails, as a weak model's SQL does).

    Has the :meth:`t2sql.inference.Translator.translate_one` signature.

    Args:
        name: shown as the translator's name.
        delay_s: simulated model time; each question takes between 0.5x and 1.5x of it (fixed per question).
    """

    def __init__(self, name: str = "lookup", delay_s: float = 0.0):
        self.name = name
        self.delay_s = delay_s
        self.calls = 0
        self._gold: dict[str, list[str]] = {}
        for _, q, sql in spider_examples():
            self._gold.setdefault(normalise_question(q), []).append(sql)

    @classmethod
    def factory(cls, **kwargs):
        """A ``TRANSLATOR_FACTORY``: one translator per model directory, named after its run."""
        return lambda model_dir: cls(name=Path(model_dir).parent.name, **kwargs)

    def translate_one(self, question: str, context: str) -> tuple[str, float]:
        t0 = time.perf_counter()
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s * (0.5 + zlib.crc32(question.encode()) % 100 / 100))
        tables = {t.strip('"').lower() for t in _FIRST_TABLE.findall(context)}
        sql = None
        for candidate in self._gold.get(normalise_question(question), []):
            used = {t.lower() for t in _TABLE_REF.findall(candidate)}
            if used and used <= tables:  # the same question may exist for several databases
                sql = candidate
                break
        if sql is None:
            m = _FIRST_TABLE.search(context)
            table = m.group(1) if m else "sqlite_master"
            words = re.findall(r"[A-Za-z_]+", question)
            if "how many" in question.lower() or not words:
                sql = f"SELECT count(*) FROM {table}"
            else:
                sql = f"SELECT {words[-1].lower()} FROM {table}"
        return sql, (time.perf_counter() - t0) * 1000.0


@functools.lru_cache(maxsize=1)
def tiny_model_dir() -> Path:
    """A tiny random T5 with a tokenizer trained on the Spider sample, saved once per process."""
    from t2sql.config import ModelConfig
    from t2sql.modeling import build_t5, train_tokenizer

    texts = [q for _, q, _ in spider_examples()[:400]] + [s for _, _, s in spider_examples()[:400]]
    out = Path(tempfile.mkdtemp(prefix="t2sql-tiny-model-"))
    tok = train_tokenizer(texts, vocab_size=400)
    cfg = ModelConfig(vocab_size=400, d_model=32, d_ff=64, d_kv=16, num_layers=1, num_decoder_layers=1, num_heads=2)
    model = build_t5(cfg, tok)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


_REPORT = """<!doctype html><html><head><meta charset="utf-8"><title>Evaluation report {run}</title>
<style>body{{font-family:sans-serif;margin:16px}} td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}</style></head>
<body><h1>Evaluation report: {run}</h1><table><tr><th>metric</th><th>value</th></tr>{rows}</table>
<p><img src="plots/accuracy.svg" alt="accuracy by difficulty"></p></body></html>
"""
_SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="320" height="120">
<rect width="320" height="120" fill="#fff"/><rect x="20" y="{y}" width="60" height="{h}" fill="#2457a6"/>
<text x="20" y="115" font-size="11">execution accuracy</text></svg>
"""


def make_registry(root: str | Path, runs: dict[str, dict] | None = None, champion: str | None = "run-a",
                  with_model: bool = True) -> Registry:
    """A registry with runs of the tiny model, each with metrics, config, an HTML report and a plot.

    Args:
        root: registry directory (created).
        runs: run id -> metrics; default two runs, ``run-a`` and ``run-b``.
        champion: run promoted to champion (None: no champion).
        with_model: copy the tiny model into each run; False leaves ``model/`` empty, for an
            injected ``TRANSLATOR_FACTORY`` that never reads it (and no torch import).

    Returns:
        The registry.
    """
    runs = runs or {
        "run-a": {"execution_accuracy": 0.41, "exact_match": 0.33, "bleu": 52.0, "parse_rate": 0.97,
                  "execution_success_rate": 0.9, "latency_ms_p50": 41.0, "latency_ms_p95": 77.0, "n_examples": 120},
        "run-b": {"execution_accuracy": 0.47, "exact_match": 0.38, "bleu": 55.5, "parse_rate": 0.98,
                  "execution_success_rate": 0.93, "latency_ms_p50": 39.0, "latency_ms_p95": 70.0, "n_examples": 120},
    }
    reg = Registry(root)
    src = tiny_model_dir() if with_model else None
    for run_id, metrics in runs.items():
        run_dir = reg.new_run_dir(run_id)
        if src is None:  # a model directory without weights, for a factory that never reads it
            (run_dir / "model").mkdir(exist_ok=True)
            (run_dir / "model" / "config.json").write_text("{}")
        elif not (run_dir / "model").exists():
            shutil.copytree(src, run_dir / "model")
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (run_dir / "config.yaml").write_text(yaml.safe_dump(
            {"name": run_id, "data": {"sources": [{"kind": "spider", "path": str(SPIDER_SAMPLE)}],
                                      "with_types": True, "sample_values": 0}}))
        rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in metrics.items())
        (run_dir / "report.html").write_text(_REPORT.format(run=run_id, rows=rows))
        (run_dir / "report.md").write_text(f"# Evaluation report: {run_id}\n")
        (run_dir / "plots").mkdir(exist_ok=True)
        acc = float(metrics.get("execution_accuracy", 0.0))
        (run_dir / "plots" / "accuracy.svg").write_text(_SVG.format(y=100 - int(90 * acc), h=int(90 * acc)))
        reg.register(run_id, metrics=metrics, info={"technique": "full"})
    if champion:
        reg.promote(champion, reason="first model", by="test")
    return reg


@functools.lru_cache(maxsize=1)
def _test_password_hash() -> str:
    from werkzeug.security import generate_password_hash

    return generate_password_hash("s3cret", method="pbkdf2:sha256:1000")  # cheap on purpose: tests only


def app_settings(tmp: str | Path, **overrides) -> dict:
    """``create_app`` settings for tests: everything under ``tmp``, a lookup translator, an admin
    password ``s3cret``, no Prefect server, a 1 s query limit; ``overrides`` win."""
    tmp = Path(tmp)
    settings = {
        "INSTANCE_PATH": str(tmp / "instance"),
        "SECRET_KEY": "test-secret",
        "REGISTRY_ROOT": str(tmp / "runs"),
        "TRANSLATOR_FACTORY": LookupTranslator.factory(),
        "REGISTRY_CHECK_S": 0.0,  # a promotion made by a test through another Registry is seen at once
        "ADMIN_PASSWORD": _test_password_hash(),
        "PREFECT_API_URL": None,
        "QUERY_TIMEOUT_S": 1.0,
        "WTF_CSRF_ENABLED": False,
    }
    settings.update(overrides)
    return settings
