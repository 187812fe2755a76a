"""Shared fixtures: the shipped Spider sample and tiny model settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "spider_sample"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def ieee_floats():
    """Leave the processor's float mode as IEEE-754 asks after each test.

    Training and loading flush subnormal floats to zero (``t2sql.hardware.flush_denormals``), a
    per-thread processor setting; Hypothesis refuses to generate floats while it is on.
    """
    yield
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="module")
def sample_splits(tmp_path_factory):
    """Train/validation/test splits of five sample Spider databases (prepared once per module)."""
    from t2sql.config import DataConfig, SourceConfig
    from t2sql.data import prepare_data

    out = tmp_path_factory.mktemp("data")
    cfg = DataConfig(sources=[SourceConfig(kind="spider", path=str(SAMPLE), databases=["club_1", "gymnast", "musical",
                                                                                        "wrestler", "climbing"])],
                     val_fraction=0.2, test_fraction=0.2)
    return prepare_data(cfg, out, seed=1)


TINY_MODEL = {"base_model": "t5-small", "vocab_size": 600, "d_model": 32, "d_ff": 64, "d_kv": 16, "num_layers": 1,
              "num_decoder_layers": 1, "num_heads": 2, "dropout_rate": 0.0}


@pytest.fixture
def app(tmp_path):
    """The web GUI over an empty registry in a temporary instance folder (test modules may override)."""
    from webui import create_app
    from webui.testing import app_settings, make_registry

    make_registry(tmp_path / "runs", with_model=False)
    return create_app(app_settings(tmp_path))


@pytest.fixture
def client(app):
    return app.test_client()


def tiny_config(tmp_path: Path, **sections) -> dict:
    """A pipeline config over a few sample databases that trains in seconds."""
    cfg = {
        "name": "tiny",
        "work_dir": str(tmp_path / "work"),
        "data": {"sources": [{"kind": "spider", "path": str(SAMPLE),
                              "databases": ["club_1", "gymnast", "musical", "wrestler", "climbing", "entrepreneur",
                                            "body_builder", "candidate_poll", "race_track"]}],
                 "split_by": "database", "val_fraction": 0.2, "test_fraction": 0.2},
        "model": dict(TINY_MODEL),
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "max_source_length": 128,
                  "max_target_length": 64, "checkpoint_every_steps": 5, "val_max_examples": 32, "num_threads": 1},
        "eval": {"batch_size": 16, "max_new_tokens": 24, "max_examples": 16},
        "registry": {"root": str(tmp_path / "runs")},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def pytest_sessionfinish(session, exitstatus):
    # Prefect's temporary server logs its shutdown at exit, after pytest has closed the captured
    # streams; keep that from printing a logging traceback.
    import logging

    logging.raiseExceptions = False


def _server(kind: str):
    """Start a temporary local database server once per session; skip only where it is not installed.

    With ``CI=true`` a missing server fails the tests instead: CI installs both (see ``.ci/run``).
    """
    from t2sql.databases.servers import ServerUnavailable, TemporaryMariaDB, TemporaryPostgres

    cls = {"postgres": TemporaryPostgres, "mariadb": TemporaryMariaDB}[kind]
    try:
        return cls().start()
    except ServerUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{kind} is required in CI: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server on 127.0.0.1 for the session (``t2sql.databases.servers.TemporaryPostgres``)."""
    srv = _server("postgres")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def mariadb_server():
    """A MariaDB server on 127.0.0.1 for the session (``t2sql.databases.servers.TemporaryMariaDB``)."""
    srv = _server("mariadb")
    yield srv
    srv.stop()
