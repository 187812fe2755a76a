"""Crash recovery: a training killed with SIGKILL resumes from its last checkpoint when the flow is
run again, ``t2sql run`` stops within seconds on SIGTERM with a checkpoint written, and a corrupted
checkpoint is skipped with a message saying why."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import TINY_MODEL, tiny_config

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def newest_checkpoint_step(work: Path) -> int:
    """Step of the newest complete checkpoint (its checksum file written) under work/finetune/*/train."""
    steps = [int(p.name.split("-")[1].split(".")[0])
             for p in work.glob("finetune/*/train/checkpoints/step-*.pt.sha256")]
    return max(steps, default=0)


def test_sigkilled_training_resumes_from_its_checkpoint(tmp_path):
    from deployments.up import start_server, wait_healthy

    cfg = tiny_config(tmp_path, techniques=[{"name": "full"}])
    cfg["train"].update(epochs=4, checkpoint_every_steps=5, eval_every_steps=5, early_stopping_patience=0)
    cfg["eval"]["max_examples"] = 8
    config = tmp_path / "crash.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_LOCAL_STORAGE_PATH": str(work / "prefect-results"), "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true"}
    server = start_server("127.0.0.1", port, env, tmp_path / "server.log")
    try:
        wait_healthy(env["PREFECT_API_URL"], 240, server, tmp_path / "server.log")
        cmd = [sys.executable, "-m", "flows.pipeline", str(config)]
        with open(tmp_path / "first.log", "wb") as log:
            first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 240
            while newest_checkpoint_step(work) == 0:
                assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint appeared"
                time.sleep(0.05)
            seen = newest_checkpoint_step(work)
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL
        run = next(work.glob("finetune/full-*"))
        assert not (run / "train" / "train_result.json").exists(), "the first run finished before it was killed"

        second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    finally:
        server.terminate()
        server.wait(timeout=30)

    summary = json.loads((run / "finetune.json").read_text())
    result = json.loads((run / "train" / "train_result.json").read_text())
    # Resumed from the newest checkpoint seen before the kill (or a later one): at most one
    # checkpoint interval of steps was lost.
    assert result["resumed_from_step"] >= seen > 0
    assert result["resumed_from_step"] % 5 == 0
    assert summary["resumed_from_step"] == result["resumed_from_step"]
    # The step counter went on from there to the planned end, and the validation history of the
    # killed run was carried over: one row every 5 steps, none repeated, none missing.
    n_train = sum(1 for _ in open(next(work.glob("data/*/train.jsonl"))))
    total = 4 * -(-n_train // 16)
    assert result["global_step"] == total > result["resumed_from_step"]
    assert result["epochs_done"] == 4.0
    assert [row["step"] for row in result["history"]] == list(range(5, total + 1, 5))
    run_dir = Path(second.stdout.strip().splitlines()[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_examples"] == 8
    assert 0.0 <= metrics["execution_accuracy"] <= 1.0 and metrics["latency_ms_p50"] > 0


def test_sigterm_stops_t2sql_run_within_seconds_with_a_checkpoint(tmp_path):
    from deployments.up import start_server, wait_healthy

    cfg = tiny_config(tmp_path, techniques=[{"name": "full"}])
    cfg["train"].update(epochs=200, checkpoint_every_steps=1000, eval_every_steps=1000, early_stopping_patience=0)
    config = tmp_path / "term.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    server = start_server("127.0.0.1", port, env, tmp_path / "server.log")
    try:
        wait_healthy(env["PREFECT_API_URL"], 240, server, tmp_path / "server.log")
        with open(tmp_path / "run.log", "wb") as log:
            run = subprocess.Popen([sys.executable, "-m", "cli", "run", "--config", str(config)], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 240
            while not list(work.glob("finetune/*/train")):  # training has started
                assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "training did not start"
                time.sleep(0.1)
            time.sleep(3)
            assert newest_checkpoint_step(work) == 0  # no checkpoint interval reached: only the stop writes one
            t0 = time.monotonic()
            os.kill(run.pid, signal.SIGTERM)
            try:
                run.wait(timeout=30)
            finally:
                if run.poll() is None:
                    run.kill()
            stopped_in = time.monotonic() - t0
    finally:
        server.terminate()
        server.wait(timeout=30)
    out = (tmp_path / "run.log").read_text()
    assert run.returncode == 143, out[-3000:]
    assert stopped_in < 15, f"took {stopped_in:.1f} s to stop"
    assert "stopped on SIGTERM" in out
    assert newest_checkpoint_step(work) > 0  # written on the way out: a rerun resumes there
    assert not list(work.glob("finetune/*/train/train_result.json"))


def test_corrupted_checkpoint_is_skipped_with_a_message(tmp_path, caplog):
    from t2sql import pipeline
    from t2sql.config import ModelConfig, TrainConfig, load_config
    from t2sql.modeling import build_t5, train_tokenizer
    from t2sql.io import read_jsonl
    from t2sql.training import train_model

    cfg = load_config(raw=tiny_config(tmp_path))
    data = pipeline.prepare(cfg)
    texts = [r[k] for r in read_jsonl(data["train"]) for k in ("question", "context", "answer")]
    tok = train_tokenizer(texts, TINY_MODEL["vocab_size"])
    model_cfg = ModelConfig(**TINY_MODEL)
    train_cfg = TrainConfig(epochs=1, batch_size=16, max_source_length=128, max_target_length=64,
                            checkpoint_every_steps=2, early_stopping_patience=0, val_max_examples=16, num_threads=1)
    out = tmp_path / "train"

    with pytest.raises(InterruptedError):
        train_model(build_t5(model_cfg, tok), tok, data["train"], data["validation"], train_cfg, out,
                    progress=False, stop_after_steps=6)
    ckpts = sorted((out / "checkpoints").glob("step-*.pt"))
    assert [p.name for p in ckpts] == ["step-00000004.pt", "step-00000006.pt"]
    raw = bytearray(ckpts[-1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte, as a torn or bit-rotted write leaves it
    ckpts[-1].write_bytes(bytes(raw))

    with caplog.at_level(logging.WARNING, logger="t2sql.training"):
        result = train_model(build_t5(model_cfg, tok), tok, data["train"], data["validation"], train_cfg, out,
                             progress=False)
    assert result.resumed_from_step == 4
    assert result.global_step == 15
    messages = [r.getMessage() for r in caplog.records]
    assert any("skipping corrupted checkpoint" in m and "step-00000006.pt" in m and "checksum mismatch" in m
               for m in messages), messages
