"""The champion gate: accuracy gain on the same test set, latency within tolerance, reasons in text."""

from t2sql.registry import gate


def metrics(acc, lat, fp="abc"):
    return {"execution_accuracy": acc, "latency_ms_p50": lat, "test_fingerprint": fp}


def test_no_champion_promotes():
    ok, reason = gate(metrics(0.3, 50), None, min_accuracy_gain=0.0, max_latency_ratio=1.5)
    assert ok and "no champion" in reason


def test_gain_must_exceed_margin():
    ok, reason = gate(metrics(0.52, 50), metrics(0.50, 50), min_accuracy_gain=0.0, max_latency_ratio=1.5)
    assert ok and "+0.020" in reason
    ok, reason = gate(metrics(0.52, 50), metrics(0.50, 50), min_accuracy_gain=0.05, max_latency_ratio=1.5)
    assert not ok and "does not exceed the required 0.050" in reason
    ok, _ = gate(metrics(0.50, 50), metrics(0.50, 50), min_accuracy_gain=0.0, max_latency_ratio=1.5)
    assert not ok


def test_latency_regression_blocks():
    ok, reason = gate(metrics(0.9, 160), metrics(0.5, 100), min_accuracy_gain=0.0, max_latency_ratio=1.5)
    assert not ok and "1.60x" in reason and "beyond" in reason
    ok, reason = gate(metrics(0.9, 140), metrics(0.5, 100), min_accuracy_gain=0.0, max_latency_ratio=1.5)
    assert ok and "within" in reason


def test_different_test_sets_are_not_compared():
    ok, reason = gate(metrics(0.9, 10, "aaa"), metrics(0.1, 10, "bbb"), min_accuracy_gain=0.0, max_latency_ratio=1.5)
    assert not ok and "same test set" in reason
    ok, reason = gate({"latency_ms_p50": 10}, metrics(0.1, 10), min_accuracy_gain=0.0, max_latency_ratio=1.5)
    assert not ok and "no execution accuracy" in reason
