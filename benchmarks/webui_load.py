"""Load test of the web GUI on loopback: N concurrent clients for a fixed time against a real server.

    .venv/bin/python benchmarks/webui_load.py                       # 20 clients, 30 s, tiny random model
    .venv/bin/python benchmarks/webui_load.py --registry runs       # the registry's champion instead

Starts ``python -m webui`` (waitress) on 127.0.0.1 itself, warms the model with one question,
then every client loops until the deadline over a fixed mix of requests: translate a Spider
question (``/api/translate``; questions repeat, so later ones come from the answer cache), run
gold SQL (``/api/query``), load the Ask page and the Monitoring dashboard. Any non-2xx answer or
connection failure counts as an error. Prints latency percentiles per request kind; the last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIX = [("translate", 0.35), ("query", 0.35), ("ask_page", 0.15), ("monitoring", 0.10), ("databases", 0.05)]
MAX_REQUESTS_PER_CLIENT = 100_000  # a bound on the loop besides the deadline


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spider_pool(n: int, seed: int) -> list[tuple[str, str, str]]:
    """``n`` (database, question, gold SQL) triples of the shipped Spider sample."""
    data = json.loads((ROOT / "data" / "spider_sample" / "train_spider.json").read_text())
    rng = random.Random(seed)
    rng.shuffle(data)
    return [(d["db_id"], d["question"], d["query"]) for d in data[:n]]


def start_server(registry: str, instance: Path, port: int, threads: int, model_threads: int) -> subprocess.Popen:
    env = {**os.environ, "T2SQL_WEBUI_INSTANCE": str(instance), "T2SQL_SECRET_KEY": secrets.token_hex(16),
           "T2SQL_MODEL_THREADS": str(model_threads)}
    log = open(instance / "server.log", "w")
    return subprocess.Popen([sys.executable, "-m", "webui", "--host", "127.0.0.1", "--port", str(port),
                             "--registry", registry, "--threads", str(threads)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def request(conn: http.client.HTTPConnection, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def wait_ready(port: int, timeout_s: float = 120.0) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            status, body = request(conn, "GET", "/api/model")
            conn.close()
            if status == 200:
                return json.loads(body)
            raise RuntimeError(f"/api/model answered {status}: {body[:200]!r}")
        except (ConnectionError, OSError):
            time.sleep(0.3)
    raise RuntimeError(f"the server on port {port} did not start within {timeout_s:.0f} s")


def client_loop(port: int, deadline: float, seed: int, pool: list[tuple[str, str, str]], results: list,
                errors: list) -> None:
    rng = random.Random(seed)
    kinds, weights = zip(*MIX, strict=True)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        if time.perf_counter() >= deadline:
            break
        kind = rng.choices(kinds, weights)[0]
        db, question, gold = rng.choice(pool)
        if kind == "translate":
            call = ("POST", "/api/translate", {"question": question, "database": db})
        elif kind == "query":
            call = ("POST", "/api/query", {"sql": gold, "database": db})
        elif kind == "ask_page":
            call = ("GET", f"/?database={db}", None)
        elif kind == "monitoring":
            call = ("GET", "/monitoring", None)
        else:
            call = ("GET", "/api/databases", None)
        t0 = time.perf_counter()
        try:
            status, body = request(conn, *call)
        except (OSError, http.client.HTTPException) as exc:
            errors.append((kind, f"{type(exc).__name__}: {exc}"))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        ms = (time.perf_counter() - t0) * 1000.0
        results.append((kind, ms))
        if not 200 <= status < 300:
            errors.append((kind, f"HTTP {status}: {body[:200]!r}"))
    conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    ap.add_argument("--registry", default=None, help="registry with a champion (default: a tiny random model)")
    ap.add_argument("--threads", type=int, default=8, help="waitress threads")
    ap.add_argument("--model-threads", type=int, default=1,
                    help="torch threads of the model (the server shares the CPUs with the client threads)")
    ap.add_argument("--questions", type=int, default=200, help="distinct Spider questions in the pool")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="t2sql-webui-load-"))
    instance = work / "instance"
    instance.mkdir()
    if args.registry:
        registry, model_kind = args.registry, "champion of " + args.registry
    else:
        from webui.testing import make_registry

        make_registry(work / "runs")
        registry, model_kind = str(work / "runs"), "tiny random T5 (d_model 32, 1+1 layers)"
    port = free_port()
    server = start_server(registry, instance, port, args.threads, args.model_threads)
    try:
        model = wait_ready(port)["model"]
        pool = spider_pool(args.questions, args.seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        t0 = time.perf_counter()
        request(conn, "POST", "/api/translate", {"question": "warm up", "database": pool[0][0]})  # loads the model
        warm_ms = (time.perf_counter() - t0) * 1000.0
        conn.close()

        results: list[tuple[str, float]] = []
        errors: list[tuple[str, str]] = []
        start = time.perf_counter()
        deadline = start + args.duration
        threads = [threading.Thread(target=client_loop, args=(port, deadline, args.seed + i, pool, results, errors))
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    print(f"webui load: {args.clients} clients x {args.duration:.0f} s on 127.0.0.1, waitress {args.threads} threads, "
          f"model {model} ({model_kind}, {args.model_threads} torch thread(s)); first question (model load) "
          f"{warm_ms:.0f} ms")
    print(f"{'request':<12}{'n':>8}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}{'errors':>8}")
    for kind, _ in MIX:
        lat = [ms for k, ms in results if k == kind]
        errs = sum(1 for k, _ in errors if k == kind)
        print(f"{kind:<12}{len(lat):>8}{percentile(lat, 0.5):>10.1f}{percentile(lat, 0.95):>10.1f}"
              f"{max(lat, default=float('nan')):>10.1f}{errs:>8}")
    lat = [ms for _, ms in results]
    for kind, message in errors[:5]:
        print(f"error ({kind}): {message}")
    summary = {
        "clients": args.clients, "duration_s": round(wall, 2), "requests": len(results) + sum(
            1 for _, m in errors if not m.startswith("HTTP")), "errors": len(errors),
        "rps": round(len(results) / wall, 1), "p50_ms": round(percentile(lat, 0.5), 1),
        "p95_ms": round(percentile(lat, 0.95), 1), "max_ms": round(max(lat, default=float("nan")), 1),
        "translate_p95_ms": round(percentile([m for k, m in results if k == "translate"], 0.95), 1),
        "model": model, "model_kind": model_kind, "waitress_threads": args.threads,
        "model_threads": args.model_threads, "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
