"""Task caching: a run is reused only when its inputs, its task and the library are unchanged."""

from __future__ import annotations

from types import SimpleNamespace

from prefect import task

import tasks.common as common


@task
def _task_fn(x):
    return x


def test_cache_key_follows_inputs_and_library_source(monkeypatch):
    ctx = SimpleNamespace(task=_task_fn)
    first = common.CACHE.compute_key(ctx, {"x": 1}, {})
    assert first and first == common.CACHE.compute_key(ctx, {"x": 1}, {})
    assert common.CACHE.compute_key(ctx, {"x": 2}, {}) != first
    # A changed prompt format or training loop (any t2sql source) must not reuse an old model.
    monkeypatch.setattr(common, "library_fingerprint", lambda: "0123456789abcdef")
    assert common.CACHE.compute_key(ctx, {"x": 1}, {}) != first


def test_library_fingerprint_is_a_stable_digest():
    fp = common.library_fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    common.library_fingerprint.cache_clear()
    assert common.library_fingerprint() == fp
